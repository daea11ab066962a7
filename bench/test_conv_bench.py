"""pytest-benchmark suite: conv2d per algorithm (and auto) on CNN layer shapes, with
PyTorch's CPU conv2d (2 threads) timed in the same session when it is installed.

    python -m pytest bench/test_conv_bench.py --benchmark-columns=min,median,ops \
        --benchmark-group-by=param:layer

Each benchmark records GFLOP/s in ``extra_info``; ``python bench/report.py`` prints the
ratio table from one process.
"""
import numpy as np
import pytest

import fastconv as fc
from cases import ALGORITHMS, LAYERS, flops, make

LAYER_NAMES = list(LAYERS)


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


def _record(benchmark, layer):
    benchmark.extra_info["gflops"] = flops(layer) / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layer", LAYER_NAMES)
def test_fastconv(benchmark, layer, algorithm):
    if algorithm == "fft" and LAYERS[layer][5] <= 3 and LAYERS[layer][1] >= 64:
        pytest.skip("FFT on a 3x3, 64+ channel layer takes seconds and never wins")
    x, w, b, kw = make(layer)
    if algorithm != "auto" and algorithm not in fc.choose_algorithm(
            x.shape, w.shape, precision="medium", **kw).estimates:
        pytest.skip(f"{algorithm} cannot run this layer (see dispatch.REGISTRY's supports)")
    fc.conv2d(x, w, b, algorithm=algorithm, **kw)          # compile and warm up
    y = benchmark(fc.conv2d, x, w, b, algorithm=algorithm, **kw)
    assert y.shape[:2] == (x.shape[0], w.shape[0])
    _record(benchmark, layer)


@pytest.mark.parametrize("layer", LAYER_NAMES)
def test_torch(benchmark, torch, layer):
    x, w, b, kw = make(layer)
    tx, tw, tb = map(torch.from_numpy, (x, w, b))
    with torch.no_grad():
        torch.nn.functional.conv2d(tx, tw, tb, **kw)
        y = benchmark(torch.nn.functional.conv2d, tx, tw, tb, **kw)
    np.testing.assert_allclose(y.numpy(), fc.conv2d(x, w, b, **kw), rtol=2e-3, atol=2e-3)
    _record(benchmark, layer)
