"""pytest-benchmark suite: fastconv.signal against scipy.signal on the issue's cases.

    python -m pytest bench/bench_signal.py --benchmark-group-by=param:case \
        --benchmark-columns=min,median,rounds

Cases: a 1024x1024 image, mode 'same', k = 3, 5, 7, 15, 31, 63 (fastconv.signal.convolve2d
against scipy.signal.convolve2d, fftconvolve and oaconvolve); a 10**6-sample signal with a
101-tap filter (fastconv.signal.convolve against scipy.signal.convolve(method='direct'),
fftconvolve and oaconvolve); float64 and float32. Each fastconv result is checked against
SciPy's before it is timed. ``python bench/signal_report.py`` prints the ratio table from
one process.
"""
import numpy as np
import pytest
import scipy.signal as ss

from fastconv import signal as fs
from signal_report import IMAGE_KERNELS, SCIPY_DIRECT_LIMIT, image_case, signal_case

CASES = [f"image-k{k}" for k in IMAGE_KERNELS] + ["1d-101taps"]
DTYPES = ["float64", "float32"]


def make(case, dtype):
    if case.startswith("image"):
        return image_case(int(case.split("-k")[1]), dtype)
    return signal_case(dtype)


def _flops(benchmark, x, h):
    benchmark.extra_info["gflops"] = 2.0 * x.size * h.size / benchmark.stats.stats.min / 1e9


def _pedantic(benchmark, fn, rounds=5):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_fastconv(benchmark, case, dtype):
    x, h = make(case, dtype)
    func = fs.convolve2d if x.ndim == 2 else fs.convolve
    ref = ss.fftconvolve(x, h, "same")
    np.testing.assert_allclose(func(x, h, "same"), ref, rtol=1e-3,
                               atol=1e-3 * np.abs(ref).max())
    benchmark.extra_info["method"] = fs.choose_conv_method(x, h, "same")
    _pedantic(benchmark, lambda: func(x, h, "same"), rounds=9)
    _flops(benchmark, x, h)


@pytest.mark.parametrize("impl", ["fftconvolve", "oaconvolve", "direct"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_scipy(benchmark, case, dtype, impl):
    x, h = make(case, dtype)
    if impl == "direct":
        if x.size * h.size > SCIPY_DIRECT_LIMIT:
            pytest.skip("scipy's direct method takes tens of seconds here")
        fn = (lambda: ss.convolve2d(x, h, "same")) if x.ndim == 2 else \
            (lambda: ss.convolve(x, h, "same", method="direct"))
        _pedantic(benchmark, fn, rounds=1 if x.size * h.size > 5e7 else 3)
    else:
        _pedantic(benchmark, lambda: getattr(ss, impl)(x, h, "same"))
    _flops(benchmark, x, h)
