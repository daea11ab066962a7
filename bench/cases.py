"""The layer shapes the benchmarks time (one registry for bench files and reports)."""
import numpy as np

from fastconv import dispatch
from fastconv._spec import out_size

# name: (N, C_in, H, W, C_out, k, stride, pad)
LAYERS = {
    "mnist.conv1": (64, 1, 28, 28, 10, 5, 1, 0),
    "mnist.conv2": (64, 10, 12, 12, 20, 5, 1, 0),
    "resnet": (8, 64, 56, 56, 64, 3, 1, 1),
    "vgg": (4, 128, 56, 56, 128, 3, 1, 1),
    "stem": (8, 3, 224, 224, 64, 7, 2, 3),
}
ALGORITHMS = tuple(dispatch.REGISTRY) + ("auto",)   # every registered algorithm


def make(name, dtype=np.float32, seed=0):
    N, C, H, W, O, k, s, p = LAYERS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, k, k)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, dict(stride=s, padding=p)


def flops(name):
    N, C, H, W, O, k, s, p = LAYERS[name]
    oh, ow = out_size((H + 2 * p, W + 2 * p), (k, k), (s, s), (1, 1))
    return 2 * N * O * oh * ow * C * k * k
