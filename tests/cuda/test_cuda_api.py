"""The GPU backend against the CPU: every algorithm and parameter class, forward and both
gradients, the nn ops, device-array in/out and the no-GPU error.

Without a GPU this module runs under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
set by tests/cuda/cudasim.py before numba.cuda is imported) on small shapes; with a GPU (and no simulator
variable set) the same tests run for real, plus a few at full tile sizes.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
# cudasim sets up numba.cuda first; hardware_launch_rules is an autouse fixture
from cudasim import SIM, cuda, hardware_launch_rules, rt  # noqa: E402,F401
from fastconv import dispatch  # noqa: E402
from fastconv.cuda import nn_ops  # noqa: E402

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:.*Grid size.*")]   # tiny launches, by design
ALGOS = tuple(n for n, a in dispatch.REGISTRY.items() if "cuda" in a.devices)
#: the registry's documented GPU error (float16: rounded to half precision)
TOL = {np.dtype(np.float16): 2e-2,
       **{np.dtype(dt): max(a.rtol["cuda"][dt] for a in dispatch.REGISTRY.values()
                             if "cuda" in a.devices)
          for dt in ("float32", "float64")}}


def close(got, want, dtype=None):
    got = got.copy_to_host() if rt.is_device(got) else np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    dtype = np.dtype(dtype or got.dtype)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} > {TOL[dtype]:g} * {scale:.3g}"


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- forward: every algorithm x every parameter class (conv2d) ---------------------------
CASES_2D = {
    "plain-f32": dict(x=(2, 3, 6, 5), w=(4, 3, 3, 3), dtype=np.float32, kw={}),
    "stride-pad-bias-f64": dict(x=(2, 3, 7, 6), w=(5, 3, 3, 2), bias=True, dtype=np.float64,
                                kw=dict(stride=(2, 1), padding=1)),
    "perside-reflect-dilation": dict(x=(1, 2, 7, 7), w=(3, 2, 2, 3), dtype=np.float32,
                                     kw=dict(padding=((1, 0), (2, 1)), padding_mode="reflect",
                                             dilation=(2, 1))),
    "same-stride-circular": dict(x=(2, 2, 7, 6), w=(3, 2, 3, 3), bias=True, dtype=np.float64,
                                 kw=dict(padding="same", stride=2, padding_mode="circular")),
    "same-replicate-groups": dict(x=(1, 4, 6, 6), w=(6, 2, 3, 3), bias=True, dtype=np.float32,
                                  kw=dict(padding="same", padding_mode="replicate", groups=2)),
    "valid-depthwise": dict(x=(2, 3, 5, 6), w=(3, 1, 2, 2), dtype=np.float64,
                            kw=dict(padding="valid", groups=3)),
}


@pytest.mark.parametrize("case", sorted(CASES_2D))
@pytest.mark.parametrize("algo", ALGOS)
def test_conv2d_forward(algo, case, rng):
    c = CASES_2D[case]
    x, w = rand(rng, c["x"], c["dtype"]), rand(rng, c["w"], c["dtype"])
    b = rand(rng, c["w"][:1], c["dtype"]) if c.get("bias") else None
    want = fc.conv2d(x, w, b, **c["kw"])
    got = fc.conv2d(x, w, b, device="cuda", algorithm=algo, **c["kw"])
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype
    close(got, want)


# --- gradients ---------------------------------------------------------------------------
GRAD_CASES = {
    "plain-f32": dict(x=(2, 3, 5, 5), w=(4, 3, 3, 2), kw={}, dtype=np.float32),
    "stride-pad-groups": dict(x=(2, 4, 6, 5), w=(4, 2, 3, 3), kw=dict(stride=2, padding=1, groups=2)),
    "dilation-reflect-perside": dict(x=(1, 2, 6, 7), w=(2, 2, 2, 3),
                                     kw=dict(dilation=(2, 1), padding=((1, 2), (0, 1)),
                                             padding_mode="reflect")),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
@pytest.mark.parametrize("algo", ALGOS)
def test_conv2d_gradients_device_arrays(algo, case, rng):
    c = GRAD_CASES[case]
    x, w = rand(rng, c["x"], c.get("dtype", np.float64)), rand(rng, c["w"], c.get("dtype", np.float64))
    y = fc.conv2d(x, w, **c["kw"])
    gy = rand(rng, y.shape, x.dtype)
    gx = fc.grad.conv2d_input(x.shape, cuda.to_device(w), cuda.to_device(gy), algorithm=algo, **c["kw"])
    gw = fc.grad.conv2d_weight(cuda.to_device(x), w.shape, cuda.to_device(gy), algorithm=algo, **c["kw"])
    assert rt.is_device(gx) and rt.is_device(gw)
    close(gx, fc.grad.conv2d_input(x.shape, w, gy, **c["kw"]))
    close(gw, fc.grad.conv2d_weight(x, w.shape, gy, **c["kw"]))


@pytest.mark.parametrize("algo", ALGOS)
def test_conv1d_conv3d_forward_and_gradients(algo, rng):
    x1, w1 = rand(rng, (2, 3, 9), np.float32), rand(rng, (4, 3, 3), np.float32)
    kw1 = dict(stride=2, padding=((2, 1),), dilation=2, padding_mode="circular")
    close(fc.conv1d(x1, w1, device="cuda", algorithm=algo, **kw1), fc.conv1d(x1, w1, **kw1))
    x3, w3 = rand(rng, (1, 2, 4, 4, 3)), rand(rng, (2, 1, 2, 2, 2))
    kw3 = dict(padding=(1, 0, 1), groups=2, stride=(1, 2, 1))
    close(fc.conv3d(x3, w3, device="cuda", algorithm=algo, **kw3), fc.conv3d(x3, w3, **kw3))
    gy = rand(rng, fc.conv3d(x3, w3, **kw3).shape)
    close(fc.grad.conv3d_input(x3.shape, cuda.to_device(w3), cuda.to_device(gy), algorithm=algo, **kw3),
          fc.grad.conv3d_input(x3.shape, w3, gy, **kw3))
    close(fc.grad.conv3d_weight(cuda.to_device(x3), w3.shape, cuda.to_device(gy), algorithm=algo, **kw3),
          fc.grad.conv3d_weight(x3, w3.shape, gy, **kw3))


@pytest.mark.parametrize("algo", ALGOS)
def test_conv_transpose2d(algo, rng):
    x, w, b = rand(rng, (2, 4, 3, 4)), rand(rng, (4, 3, 3, 2)), rand(rng, (6,))
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    want = fc.conv_transpose2d(x, w, b, **kw)
    close(fc.conv_transpose2d(cuda.to_device(x), cuda.to_device(w), b, algorithm=algo, **kw), want)
    close(fc.conv_transpose2d(x, w, b, algorithm=algo, device="cuda", **kw), want)


@pytest.mark.parametrize("algo", ["direct", "im2col"])
def test_conv_transpose2d_bias_widens_the_dtype_as_on_the_cpu(algo, rng):
    x, w = rand(rng, (1, 2, 3, 3), np.float32), rand(rng, (2, 3, 2, 2), np.float32)
    b = rand(rng, (3,))
    want = fc.conv_transpose2d(x, w, b)
    assert want.dtype == np.float64
    for xa, wa in ((x, w), (cuda.to_device(x), cuda.to_device(w))):
        got = fc.conv_transpose2d(xa, wa, b, algorithm=algo, device="cuda")
        got = got if isinstance(got, np.ndarray) else got.copy_to_host()
        assert got.dtype == np.float64
        close(got, want)


# --- devices, dtypes, layouts --------------------------------------------------------------
def test_device_array_in_device_array_out(rng):
    x, w, b = rand(rng, (2, 3, 6, 6), np.float32), rand(rng, (4, 3, 3, 3), np.float32), rand(rng, (4,), np.float32)
    want = fc.conv2d(x, w, b, padding=1)
    got = fc.conv2d(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), padding=1)
    assert rt.is_device(got) and got.dtype == np.float32 and got.shape == want.shape
    close(got, want)
    out = cuda.device_array(want.shape, np.float32)
    assert fc.conv2d(cuda.to_device(x), w, b, padding=1, out=out) is out
    close(out, want)
    # unbatched and mixed host/device arguments
    close(fc.conv2d(cuda.to_device(x[0]), w, padding=1), want[0] - b[:, None, None])


def test_non_contiguous_device_input(rng):
    x, w = rand(rng, (2, 3, 8, 9)), rand(rng, (2, 3, 2, 2))
    xd = cuda.to_device(x)[:, :, ::2, 1:]
    close(fc.conv2d(xd, w, padding=1, algorithm="direct"), fc.conv2d(x[:, :, ::2, 1:], w, padding=1))


def test_dtypes_and_empty_batch(rng):
    x, w = rand(rng, (1, 2, 5, 5), np.float16), rand(rng, (3, 2, 3, 3), np.float16)
    got = fc.conv2d(x, w, device="cuda")
    assert got.dtype == np.float16
    close(got, fc.conv2d(x, w), np.float16)
    xi = rng.integers(-3, 3, (1, 2, 5, 5))
    got = fc.conv2d(cuda.to_device(xi), w.astype(np.float64), algorithm="im2col")
    assert got.dtype == np.float64
    close(got, fc.conv2d(xi, w.astype(np.float64)))
    empty = fc.conv2d(np.zeros((0, 2, 5, 5), np.float32), w.astype(np.float32), device="cuda")
    assert isinstance(empty, np.ndarray) and empty.shape == (0, 3, 3, 3)


def test_auto_and_choose_algorithm(rng):
    c = fc.choose_algorithm((64, 64, 56, 56), (64, 64, 3, 3), padding=1, device="cuda")
    assert c.algorithm in c.estimates and sorted(c.estimates) == sorted(ALGOS)
    assert "GPU" in c.reason
    x, w = rand(rng, (1, 2, 6, 6), np.float32), rand(rng, (3, 2, 3, 3), np.float32)
    close(fc.conv2d(x, w, device="cuda"), fc.conv2d(x, w))


def test_validation_errors_match_cpu(rng):
    x, w = rand(rng, (1, 4, 5, 5), np.float32), rand(rng, (3, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="input channels per group"):
        fc.conv2d(cuda.to_device(x), cuda.to_device(w))
    with pytest.raises(ValueError, match="out has shape"):
        fc.conv2d(cuda.to_device(x), w[:, :1].repeat(4, 1), out=cuda.device_array((1, 3, 2, 2), np.float32))


def test_no_gpu_raises_runtime_error(monkeypatch, rng):
    monkeypatch.setattr(rt, "simulator", lambda: False)
    monkeypatch.setattr(rt, "_available", False)
    with pytest.raises(RuntimeError, match="usable CUDA GPU"):
        fc.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), device="cuda")


@pytest.mark.skipif(not SIM, reason="a GPU is present")
def test_no_gpu_subprocess_error_and_lazy_import():
    code = ("import sys, numpy as np, fastconv as fc\n"
            "fc.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))\n"
            "assert 'numba.cuda' not in sys.modules, 'import fastconv imported numba.cuda'\n"
            "try:\n"
            "    fc.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), device='cuda')\n"
            "except RuntimeError as e:\n"
            "    print('RuntimeError:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "RuntimeError:" in r.stdout and "cuda" in r.stdout.lower()


# --- nn ops ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:overflow encountered")   # the simulator's uint64 hash
def test_relu_dropout(rng):
    x = rand(rng, (3, 5), np.float32)
    y = nn_ops.relu_forward(x)
    close(y, np.maximum(x, 0))
    gy = rand(rng, x.shape, np.float32)
    close(nn_ops.relu_backward(gy, y), np.where(x > 0, gy, 0))
    yd, mask = nn_ops.dropout_forward(np.ones(4000, np.float32), 0.25, seed=7)
    m = mask.copy_to_host()
    assert set(np.unique(m)) <= {0.0, np.float32(1 / 0.75)} and 0.2 < (m == 0).mean() < 0.3
    close(nn_ops.dropout_backward(np.ones(4000, np.float32), mask), m)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1)])
def test_pooling(k, s, p, rng):
    torch = pytest.importorskip("torch")
    x = rand(rng, (2, 3, 7, 6))
    y, idx = nn_ops.maxpool2d_forward(x, k, s, p)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, k, s, p)
    close(y, ty.detach().numpy())
    gy = rand(rng, ty.shape)
    ty.backward(torch.tensor(gy))
    close(nn_ops.maxpool2d_backward(gy, idx, x.shape, k, s, p), tx.grad.numpy())
    tx.grad = None
    ta = torch.nn.functional.avg_pool2d(tx, k, s, p)
    close(nn_ops.avgpool2d_forward(x, k, s, p), ta.detach().numpy())
    ta.backward(torch.tensor(gy))
    close(nn_ops.avgpool2d_backward(gy, x.shape, k, s, p), tx.grad.numpy())


def test_linear_and_bias_grad(rng):
    B, fin, fout = (19, 13, 10) if SIM else (300, 500, 130)
    x, w, b = rand(rng, (B, fin), np.float32), rand(rng, (fout, fin), np.float32), rand(rng, (fout,), np.float32)
    close(nn_ops.linear_forward(x, w, b), x @ w.T + b)
    gy = rand(rng, (B, fout), np.float32)
    gx, gw, gb = nn_ops.linear_backward(gy, x, w)
    close(gx, gy @ w)
    close(gw, gy.T @ x)
    close(gb, gy.sum(0))
    g4 = rand(rng, (3, 5, 4, 2))
    close(nn_ops.bias_grad(g4), g4.sum(axis=(0, 2, 3)))


def test_log_softmax_nll(rng):
    x = rand(rng, (9, 10), np.float64) * 3
    t = rng.integers(0, 10, 9)
    lp = nn_ops.log_softmax_forward(x)
    want = x - x.max(1, keepdims=True)
    want = want - np.log(np.exp(want).sum(1, keepdims=True))
    close(lp, want)
    loss = nn_ops.nll_loss_forward(lp, t).copy_to_host()[0]
    assert abs(loss - (-want[np.arange(9), t].mean())) < 1e-9
    g = nn_ops.nll_loss_backward(x.shape, t, np.float64)
    gw = np.zeros_like(x)
    gw[np.arange(9), t] = -1 / 9
    close(g, gw)
    close(nn_ops.log_softmax_backward(g, lp), gw - np.exp(want) * gw.sum(1, keepdims=True))
    assert nn_ops.count_correct(x, x.argmax(1)).copy_to_host()[0] == 9


def test_optimisers(rng):
    p0, g = rand(rng, (20,), np.float32), rand(rng, (20,), np.float32)
    p, buf = cuda.to_device(p0.copy()), nn_ops.zeros((20,))
    nn_ops.sgd_step(p, g, buf, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True, first=True)
    nn_ops.sgd_step(p, g, buf, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    q, b = p0.astype(np.float64), None
    for _ in range(2):
        d = g + 0.01 * q
        b = d if b is None else 0.9 * b + d
        q = q - 0.1 * (d + 0.9 * b)
    close(p, q.astype(np.float32))
    p, m, v = cuda.to_device(p0.copy()), nn_ops.zeros((20,)), nn_ops.zeros((20,))
    nn_ops.adam_step(p, g, m, v, step=1, lr=0.01)
    close(p, p0 - 0.01 * g / (np.abs(g) + 1e-8))


# --- empty batches (N == 0) ------------------------------------------------------------------
def test_empty_batch_every_entry_point(rng):
    w = rand(rng, (3, 2, 3, 3), np.float32)
    x0, gy0 = np.zeros((0, 2, 5, 5), np.float32), np.zeros((0, 3, 3, 3), np.float32)
    c = fc.choose_algorithm(x0.shape, w.shape, device="cuda")      # no ZeroDivisionError
    assert c.algorithm in ALGOS
    for algo in ("auto",) + ALGOS:
        y = fc.conv2d(cuda.to_device(x0), cuda.to_device(w), algorithm=algo)
        assert rt.is_device(y) and y.shape == (0, 3, 3, 3)
        gw = fc.grad.conv2d_weight(cuda.to_device(x0), w.shape, cuda.to_device(gy0),
                                   algorithm=algo)
        assert rt.is_device(gw) and gw.dtype == np.float32
        np.testing.assert_array_equal(gw.copy_to_host(), fc.grad.conv2d_weight(x0, w.shape, gy0))
        gx = fc.grad.conv2d_input(x0.shape, cuda.to_device(w), cuda.to_device(gy0), algorithm=algo)
        assert rt.is_device(gx) and gx.shape == x0.shape
        yt = fc.conv_transpose2d(cuda.to_device(gy0), cuda.to_device(w), np.ones(2, np.float32),
                                 algorithm=algo)
        assert rt.is_device(yt) and yt.shape == (0, 2, 5, 5)
    gwh = fc.grad.conv2d_weight(x0, w.shape, cuda.to_device(gy0), padding=1, stride=2)
    assert gwh.shape == w.shape and not np.abs(gwh.copy_to_host()).any()


def test_empty_batch_nn_ops_launch_nothing(rng):
    w, b = rand(rng, (3, 4), np.float32), rand(rng, (3,), np.float32)
    y = nn_ops.linear_forward(np.zeros((0, 4), np.float32), w, b)
    assert y.shape == (0, 3)
    gx, gw, gb = nn_ops.linear_backward(np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32), w)
    assert gx.shape == (0, 4)
    np.testing.assert_array_equal(gw.copy_to_host(), np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(gb.copy_to_host(), np.zeros(3, np.float32))
    assert nn_ops.bias_grad(np.zeros((2, 0, 3), np.float32)).shape == (0,)
    e = np.zeros((0, 2, 4, 4), np.float32)
    assert nn_ops.relu_forward(e).shape == e.shape
    assert nn_ops.maxpool2d_forward(e, 2)[0].shape == (0, 2, 2, 2)
    assert nn_ops.avgpool2d_forward(e, 2).shape == (0, 2, 2, 2)
    assert nn_ops.log_softmax_forward(np.zeros((0, 5))).shape == (0, 5)
    assert np.isnan(nn_ops.nll_loss_forward(np.zeros((0, 5)), np.zeros(0, np.int64)).copy_to_host()[0])


# --- auto never runs an FFT over NaN / inf ---------------------------------------------------
@pytest.fixture
def auto_prefers_fft(monkeypatch):
    """Make the GPU cost table pick fft (it never does on shapes small enough for the
    simulator) and forget earlier choices."""
    from fastconv import dispatch
    real = dispatch.estimate

    def estimate(spec, op="forward", device="cpu"):
        if device == "cuda":
            return {"fft": 1.0, "direct": 2.0, "im2col": 3.0}
        return real(spec, op, device)

    monkeypatch.setattr(dispatch, "estimate", estimate)
    monkeypatch.setattr(dispatch, "_chosen", {})
    assert fc.choose_algorithm((1, 1, 6, 6), (1, 1, 3, 3), device="cuda").algorithm == "fft"


def same_nan_pattern(got, want):
    got = got.copy_to_host() if rt.is_device(got) else got
    want = want.copy_to_host() if rt.is_device(want) else want
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    assert ok.any() and not ok.all()
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered")   # NaN arithmetic, simulated
def test_auto_avoids_fft_on_nonfinite_input(auto_prefers_fft, rng):
    x, w = rand(rng, (1, 1, 6, 6), np.float32), rand(rng, (1, 1, 3, 3), np.float32)
    close(fc.conv2d(x, w, device="cuda"), fc.conv2d(x, w))            # finite: fft is fine
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 5, 5] = np.inf
    xd, wd = cuda.to_device(x), cuda.to_device(w)
    assert np.isnan(fc.conv2d(xd, wd, algorithm="fft").copy_to_host()).all()   # what auto avoids
    same_nan_pattern(fc.conv2d(xd, wd), fc.conv2d(xd, wd, algorithm="direct"))
    same_nan_pattern(fc.conv2d(x, w, device="cuda"), fc.conv2d(x, w, algorithm="direct"))
    # NaN in the weight only: one output channel of two is NaN, not the whole output
    x2, w2 = rand(rng, (1, 1, 6, 6), np.float32), rand(rng, (2, 1, 3, 3), np.float32)
    w2[1, 0, 1, 1] = np.nan
    same_nan_pattern(fc.conv2d(cuda.to_device(x2), cuda.to_device(w2)),
                     fc.conv2d(x2, w2, algorithm="direct"))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_auto_gradients_avoid_fft_on_nonfinite(auto_prefers_fft, rng):
    x, w = rand(rng, (1, 1, 6, 6), np.float32), rand(rng, (1, 1, 3, 3), np.float32)
    gy = rand(rng, (1, 1, 4, 4), np.float32)
    gy_nan = gy.copy()
    gy_nan[0, 0, 0, 0] = np.nan
    want = fc.grad.conv2d_input(x.shape, w, gy_nan, algorithm="direct")
    same_nan_pattern(fc.grad.conv2d_input(x.shape, cuda.to_device(w), cuda.to_device(gy_nan)), want)
    x_nan = x.copy()
    x_nan[0, 0, 0, 0] = np.nan
    want = fc.grad.conv2d_weight(x_nan, w.shape, gy, algorithm="direct")
    same_nan_pattern(fc.grad.conv2d_weight(cuda.to_device(x_nan), w.shape, cuda.to_device(gy)), want)


# --- non-contiguous device views -------------------------------------------------------------
def test_nn_ops_non_contiguous_views(rng):
    base = cuda.to_device(rand(rng, (4, 6), np.float32))
    view = base[:, ::2]                                  # (4, 3), not contiguous
    host = base.copy_to_host()[:, ::2]
    close(nn_ops.relu_forward(view), np.maximum(host, 0))
    close(nn_ops.relu_backward(view, view), np.where(host > 0, host, 0))
    w = rand(rng, (5, 3), np.float32)
    close(nn_ops.linear_forward(view, w), host @ w.T)
    close(nn_ops.bias_grad(view), host.sum(0))
    # arguments updated in place must be contiguous GPU arrays: a copy would lose the update
    g = rand(rng, (4, 3), np.float32)
    with pytest.raises(ValueError, match="param is updated in place and must be C-contiguous"):
        nn_ops.sgd_step(view, g, nn_ops.zeros((4, 3)), lr=0.1)
    with pytest.raises(ValueError, match="buf is updated in place"):
        nn_ops.sgd_step(cuda.to_device(g), g, view, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="m is updated in place"):
        nn_ops.adam_step(cuda.to_device(g), g, view, nn_ops.zeros((4, 3)), step=1)
    with pytest.raises(ValueError, match="y is updated in place"):
        nn_ops.axpy(view, 1.0, g)
    with pytest.raises(TypeError, match="must be a GPU array"):
        nn_ops.sgd_step(g.copy(), g, nn_ops.zeros((4, 3)), lr=0.1)
    # a non-contiguous gradient is fine (read only)
    p = cuda.to_device(np.ones((4, 3), np.float32))
    nn_ops.sgd_step(p, view, nn_ops.zeros((4, 3)), lr=0.5)
    close(p, 1 - 0.5 * host)


# --- foreign GPU arrays: converted once, clear error for tensors that require grad ------------
class _CAI:
    """Stands in for a foreign GPU array (CuPy, a PyTorch CUDA tensor) in the simulator."""

    def __init__(self, a, requires_grad=False):
        self.a, self.requires_grad = a, requires_grad
        self.shape = a.shape
        self.dtype = f"torch.{a.dtype}"

    @property
    def __cuda_array_interface__(self):
        if self.requires_grad:     # PyTorch's exact behaviour
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires "
                               "grad. If gradients aren't required, use var.detach() to get "
                               "Variable that doesn't require grad.")
        return {"shape": self.a.shape, "typestr": self.a.dtype.str, "data": (0, False),
                "strides": None, "version": 2}


def test_tensor_requiring_grad_is_a_clear_type_error(rng):
    x, w = rand(rng, (1, 2, 5, 5), np.float32), rand(rng, (3, 2, 3, 3), np.float32)
    gy = rand(rng, (1, 3, 3, 3), np.float32)
    assert rt.is_device(_CAI(x, True))
    with pytest.raises(TypeError, match=r"conv2d: input is a GPU tensor .*input\.detach\(\)"):
        fc.conv2d(_CAI(x, True), cuda.to_device(w))
    with pytest.raises(TypeError, match=r"weight is a GPU tensor .*weight\.detach\(\)"):
        fc.grad.conv2d_input(x.shape, _CAI(w, True), cuda.to_device(gy))
    with pytest.raises(TypeError, match=r"grad_output\.detach\(\)"):
        fc.grad.conv2d_weight(cuda.to_device(x), w.shape, _CAI(gy, True))
    with pytest.raises(TypeError, match=r"bias\.detach\(\)"):
        fc.conv_transpose2d(cuda.to_device(gy), cuda.to_device(w), _CAI(x[0, :, 0, 0], True))
    with pytest.raises(TypeError, match=r"relu_forward|x\.detach\(\)"):
        nn_ops.relu_forward(_CAI(x, True))


def test_foreign_arrays_are_converted_once_per_call(monkeypatch, rng):
    calls = []

    def as_cuda_array(obj, sync=True):
        calls.append(id(obj))
        return cuda.to_device(obj.a)

    monkeypatch.setattr(cuda, "as_cuda_array", as_cuda_array, raising=False)
    x = rand(rng, (1, 1, 3, 3), np.float32)
    t = _CAI(x)
    y = fc.conv2d(t, t, padding=1)              # the same tensor as input and weight
    assert calls == [id(t)]
    close(y, fc.conv2d(x, x, padding=1))
    calls.clear()
    w, gy = _CAI(rand(rng, (2, 1, 2, 2), np.float32)), _CAI(rand(rng, (1, 2, 2, 2), np.float32))
    fc.grad.conv2d_input(x.shape, w, gy)
    fc.grad.conv2d_weight(t, w.a.shape, gy)
    fc.conv_transpose2d(gy, w)
    assert sorted(calls) == sorted([id(w), id(gy), id(t), id(gy), id(gy), id(w)])


# --- real GPU only: full tiles, PyTorch tensors zero-copy ----------------------------------
@pytest.mark.skipif(SIM, reason="full-size tiles are too slow in the simulator")
@pytest.mark.parametrize("algo", ALGOS)
def test_full_tiles_against_torch(algo, rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    x = torch.randn(6, 24, 21, 19, device="cuda", requires_grad=True)
    w = torch.randn(80, 12, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(80, device="cuda")
    kw = dict(stride=1, padding=1, groups=2)
    with torch.backends.cudnn.flags(allow_tf32=False):
        y = torch.nn.functional.conv2d(x, w, b, **kw)
        gy = torch.randn_like(y)
        y.backward(gy)
    got = fc.conv2d(x.detach(), w.detach(), b, algorithm=algo, **kw)
    assert rt.is_device(got)
    close(got, y.detach().cpu().numpy())
    gx = fc.grad.conv2d_input(tuple(x.shape), w.detach(), gy, algorithm=algo, **kw)
    gw = fc.grad.conv2d_weight(x.detach(), tuple(w.shape), gy, algorithm=algo, **kw)
    close(gx, x.grad.cpu().numpy())
    close(gw, w.grad.cpu().numpy())
