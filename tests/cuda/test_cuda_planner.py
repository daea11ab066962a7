"""The GPU plans through the same planner as the CPU: every op and algorithm of the
registry, on device arrays (numba's CUDA simulator without a GPU)."""
import numpy as np
import pytest

import fastconv as fc
# cudasim sets up numba.cuda first; hardware_launch_rules is an autouse fixture
from cudasim import cuda, hardware_launch_rules  # noqa: E402,F401
from fastconv import dispatch  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore:.*Grid size.*")]
CUDA_ALGORITHMS = tuple(n for n, a in dispatch.REGISTRY.items() if "cuda" in a.devices)


@pytest.mark.parametrize("op", dispatch.OPS)
@pytest.mark.parametrize("algorithm", CUDA_ALGORITHMS + ("auto",))
def test_gpu_ops_go_through_the_planner(plans, op, algorithm, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    kw = dict(padding=1)
    xd, wd = cuda.to_device(x), cuda.to_device(w)
    if op == "forward":
        got = fc.conv2d(xd, wd, algorithm=algorithm, **kw)
        want = fc.conv2d(x, w, algorithm="direct", **kw)
    else:
        gy = np.ones((2, 4, 6, 6), np.float32)
        if op == "input_grad":
            got = fc.grad.conv2d_input(x.shape, wd, cuda.to_device(gy), algorithm=algorithm, **kw)
            want = fc.grad.conv2d_input(x.shape, w, gy, algorithm="direct", **kw)
        else:
            got = fc.grad.conv2d_weight(xd, w.shape, cuda.to_device(gy), algorithm=algorithm, **kw)
            want = fc.grad.conv2d_weight(x, w.shape, gy, algorithm="direct", **kw)
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-3, atol=1e-3)
    gpu = [c for c in plans if c[1] == "cuda"]
    assert gpu, "the GPU path did not plan through dispatch.plan"
    got_op, device, asked, ran, _ = gpu[-1]
    assert (got_op, asked) == (op, algorithm)
    want_algo = (fc.choose_algorithm(x.shape, w.shape, device="cuda", op=op, **kw).algorithm
                 if algorithm == "auto" else algorithm)
    assert ran == want_algo
