"""Reliability of max pooling (issue 13): windows that hold no input element (all padding,
possible with dilation) give -inf forward and send their gradient nowhere; every other
gradient goes to its window's maximum; indices outside the input are refused.

Oracle: a float64 loop over the windows (PyTorch's rule: the first maximum in window
order wins, a NaN wins over numbers) and PyTorch when installed, on problems where every
window holds an input element (PyTorch's own backward writes out of bounds otherwise)."""
import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from fastconv import nn
from fastconv.nn import functional as F

try:
    import torch
except ImportError:        # the optional oracle
    torch = None

PROPERTY = settings(max_examples=80, deadline=None, database=None, print_blob=True)


# --- the reference ----------------------------------------------------------------------
def reference_max_pool(x, go, k, s, p, d, out_size):
    """(y, idx, gx) in float64 by a loop over windows; idx -1 and y -inf for a window with
    no input element, which adds nothing to gx."""
    N, C, H, W = x.shape
    OH, OW = out_size
    y = np.full((N, C, OH, OW), -np.inf)
    idx = np.full((N, C, OH, OW), -1, dtype=np.int64)
    gx = np.zeros((N, C, H, W))
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, bi = -np.inf, -1
                    for kh in range(k[0]):
                        h = oh * s[0] - p[0] + kh * d[0]
                        for kw in range(k[1]):
                            w = ow * s[1] - p[1] + kw * d[1]
                            if not (0 <= h < H and 0 <= w < W):
                                continue
                            v = float(x[n, c, h, w])
                            if bi < 0 or v > best or np.isnan(v):
                                best, bi = v, h * W + w
                    y[n, c, oh, ow], idx[n, c, oh, ow] = best, bi
                    if bi >= 0:
                        gx[n, c, bi // W, bi % W] += go[n, c, oh, ow]
    return y, idx, gx


@st.composite
def pool_problems(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    ceil_mode = draw(st.booleans())
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    axis = draw(st.sampled_from([None, None, 0, 1]))
    if axis is not None:
        # the one way to an all-padding window: taps -1 and size on an axis of one output
        k, p, d = (list(v) for v in (k, p, d))
        k[axis], p[axis], d[axis] = 2, 1, shape[2 + axis] + 1
        k, p, d = tuple(k), tuple(p), tuple(d)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if draw(st.booleans()):
        x = rng.integers(-3, 4, shape).astype(dtype)          # ties
    else:
        x = rng.standard_normal(shape).astype(dtype)
    for _ in range(draw(st.integers(0, 2))):
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    return x, k, s, p, d, ceil_mode


def geometry(x, k, s, p, d, ceil_mode):
    try:
        return F._pool_args("test", x.shape, k, s, p, d, ceil_mode)[-1]
    except ValueError:
        assume(False)


# --- properties -------------------------------------------------------------------------
@PROPERTY
@given(pool_problems())
def test_max_pool_matches_the_window_loop(problem):
    x, k, s, p, d, ceil_mode = problem
    out_size = geometry(x, k, s, p, d, ceil_mode)
    go = np.random.default_rng(0).standard_normal(x.shape[:2] + out_size).astype(x.dtype)
    y_ref, idx_ref, gx_ref = reference_max_pool(x, go, k, s, p, d, out_size)
    event("all-padding windows" if (idx_ref < 0).any() else "every window holds an element")

    layer = nn.MaxPool2d(k, s, p, d, return_indices=True, ceil_mode=ceil_mode)
    y, idx = layer(x)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref.astype(x.dtype))          # -inf and NaN included
    gx = layer.backward(go)
    assert gx.dtype == x.dtype and gx.shape == x.shape
    tol = 1e-6 if x.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(gx, gx_ref, rtol=tol, atol=tol)
    # the functional path gives the same
    y2, idx2 = F.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(idx2, idx_ref)
    np.testing.assert_array_equal(F.max_pool2d_backward(go, idx2, x.shape), gx)
    # unbatched (C, H, W)
    np.testing.assert_array_equal(F.max_pool2d_backward(go[0], idx2[0], x.shape[1:]), gx[0])


@pytest.mark.skipif(torch is None, reason="PyTorch not installed (optional oracle)")
@PROPERTY
@given(pool_problems())
def test_max_pool_matches_torch_where_every_window_holds_an_element(problem):
    x, k, s, p, d, ceil_mode = problem
    out_size = geometry(x, k, s, p, d, ceil_mode)
    go = np.random.default_rng(1).standard_normal(x.shape[:2] + out_size).astype(x.dtype)
    _, idx_ref, _ = reference_max_pool(x, go, k, s, p, d, out_size)
    assume((idx_ref >= 0).all())       # otherwise PyTorch's result is not valid
    t = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(t, k, s, p, d, ceil_mode, return_indices=True)
    assert tuple(yt.shape[-2:]) == out_size
    assume(bool(((it >= 0) & (it < x.shape[2] * x.shape[3])).all()))
    yt.backward(torch.tensor(go))
    layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil_mode)
    y = layer(x)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    tol = 1e-6 if x.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(layer.backward(go), t.grad.numpy(), rtol=tol, atol=tol)


# --- the reported case, and bad indices -------------------------------------------------
def test_all_padding_window_sends_its_gradient_nowhere():
    x = np.arange(14, dtype=np.float32).reshape(1, 2, 1, 7)
    layer = nn.MaxPool2d((2, 4), stride=2, padding=1, dilation=2, return_indices=True)
    y, idx = layer(x)
    assert np.isneginf(y).all() and (idx == -1).all()          # as PyTorch: -inf
    gx = layer.backward(np.ones_like(y))
    assert gx.shape == x.shape and not gx.any()                 # was: the last element got 2


@pytest.mark.parametrize("shape, k, s, p, d, ceil_mode", [
    ((1, 1, 4, 2), (3, 2), (1, 1), (1, 1), (1, 3), False),     # width: taps -1 and 2
    ((2, 3, 2, 5), (2, 2), (2, 1), (1, 1), (3, 1), True),      # height: taps -1 and 2
    ((1, 1, 2, 2), (2, 2), (1, 1), (1, 1), (3, 3), False),     # both
])
def test_all_padding_windows_against_the_loop(shape, k, s, p, d, ceil_mode):
    # (a window holds no element only where one axis has k = 2, p = 1 and a single
    # output; then every window of the plane is empty)
    x = np.random.default_rng(3).standard_normal(shape)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
    go = np.arange(1.0, 1.0 + y.size).reshape(y.shape)
    y_ref, idx_ref, gx_ref = reference_max_pool(x, go, k, s, p, d, y.shape[2:])
    assert (idx_ref == -1).all()
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(F.max_pool2d_backward(go, idx, x.shape), gx_ref)


@pytest.mark.parametrize("bad", [-2, 4, 10 ** 9, -(10 ** 9)])
def test_out_of_range_indices_are_refused(bad):
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    idx = idx.copy()
    idx[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="indices"):
        F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    # -1 is the marker of an all-padding window: accepted, contributes nothing
    idx[0, 0, 0, 0] = -1
    assert not F.max_pool2d_backward(np.ones_like(y), idx, x.shape).any()


def test_large_problem_takes_the_parallel_kernel():
    # above PARALLEL_MIN the backward runs the parallel driver: same rule there
    from fastconv.cpu import pool
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 64, 70)).astype(np.float32)
    k, s, p, d = (3, 3), (2, 2), (1, 1), (3, 3)
    out_size = F._pool_args("t", x.shape, k, s, p, d, True)[-1]
    assert x.size >= pool.PARALLEL_MIN // 8
    go = rng.standard_normal(x.shape[:2] + out_size).astype(np.float32)
    y, idx = F.max_pool2d(x, k, s, p, d, True, return_indices=True)
    idx = idx.copy()
    idx[:, :, 0, 0] = -1              # as if those windows were all padding
    gx, n_bad = pool.maxpool2d_bwd(go.reshape(-1, *out_size), idx.reshape(-1, *out_size),
                                   x.shape[2:])
    assert n_bad == 0
    want = np.zeros((32, 64 * 70))
    for q, (g, i) in enumerate(zip(go.reshape(32, -1), idx.reshape(32, -1))):
        np.add.at(want[q], i[i >= 0], g[i >= 0].astype(np.float64))
    np.testing.assert_allclose(gx.reshape(32, -1), want, rtol=1e-5, atol=1e-5)


# --- MaxPool2d(2): the one-byte argmax kernels (cpu/pool.maxpool2x2_*) ------------------
@st.composite
def two_by_two_problems(draw):
    """MaxPool2d(2)-shaped problems: odd and even sizes, ties, NaN, +-inf, both dtypes,
    floor and ceil mode (ceil on an odd size is not the 2x2 kernel's case: the general
    kernel must take it)."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)),
             draw(st.integers(2, 13)), draw(st.integers(2, 13)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = (rng.integers(-2, 3, shape) if draw(st.booleans())
         else rng.standard_normal(shape)).astype(dtype)
    for _ in range(draw(st.integers(0, 4))):
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]))
    return x, draw(st.booleans()), draw(st.booleans())


@PROPERTY
@given(two_by_two_problems())
def test_maxpool2x2_matches_the_window_loop(problem):
    from fastconv.cpu import pool
    x, ceil_mode, parallel = problem
    k = s = (2, 2)
    out_size = geometry(x, k, s, (0, 0), (1, 1), ceil_mode)
    event("2x2 kernel" if pool.is_2x2s2(k, s, (0, 0), (1, 1), x.shape[2:], out_size)
          else "general kernel")
    go = np.random.default_rng(0).standard_normal(x.shape[:2] + out_size).astype(x.dtype)
    go.reshape(-1)[0] = np.inf                       # goes to one element only, no NaN
    y_ref, idx_ref, gx_ref = reference_max_pool(x, go, k, s, (0, 0), (1, 1), out_size)
    with pytest.MonkeyPatch.context() as mp:
        if parallel:
            mp.setattr(pool, "PARALLEL_MIN_2X2", 1)
        for return_indices in (False, True):
            layer = nn.MaxPool2d(2, ceil_mode=ceil_mode, return_indices=return_indices)
            out = layer(x)
            y = out[0] if return_indices else out
            np.testing.assert_array_equal(y, y_ref.astype(x.dtype))
            if return_indices:
                np.testing.assert_array_equal(out[1], idx_ref)
            gx = layer.backward(go)
            assert gx.dtype == x.dtype and gx.shape == x.shape
            np.testing.assert_array_equal(gx, gx_ref.astype(x.dtype))
            assert not np.signbit(gx[gx == 0]).any()     # zeros, not -0 (as PyTorch)
        y2, idx2 = F.max_pool2d(x, 2, ceil_mode=ceil_mode, return_indices=True)
        np.testing.assert_array_equal(idx2, idx_ref)
        np.testing.assert_array_equal(y2, y)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed (optional oracle)")
@PROPERTY
@given(two_by_two_problems())
def test_maxpool2x2_matches_torch(problem):
    x, ceil_mode, _ = problem
    t = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(t, 2, ceil_mode=ceil_mode)
    go = np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(x.dtype)
    yt.backward(torch.tensor(go))
    layer = nn.MaxPool2d(2, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(layer(x), yt.detach().numpy())
    np.testing.assert_array_equal(layer.backward(go), t.grad.numpy())


def test_maxpool2x2_backward_checks_the_gradient_shape():
    layer = nn.MaxPool2d(2)
    layer(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError,
                       match=r"MaxPool2d.backward: grad_output has shape \(2, 3, 4, 5\)"):
        layer.backward(np.zeros((2, 3, 4, 5), np.float32))


# --- nn.Sequential runs MaxPool2d(2) + ReLU in one pass ---------------------------------
@PROPERTY
@given(two_by_two_problems())
def test_sequential_fused_pool_relu_equals_the_layers_one_by_one(problem):
    x, ceil_mode, parallel = problem
    from fastconv.cpu import pool
    go = np.random.default_rng(2).standard_normal(
        x.shape[:2] + geometry(x, (2, 2), (2, 2), (0, 0), (1, 1), ceil_mode)).astype(x.dtype)
    go.reshape(-1)[-1] = np.nan                   # passes where the output is not <= 0
    with pytest.MonkeyPatch.context() as mp:
        if parallel:
            mp.setattr(pool, "PARALLEL_MIN_2X2", 1)
        p1, r1 = nn.MaxPool2d(2, ceil_mode=ceil_mode), nn.ReLU()
        want_y = r1(p1(x))
        want_gx = p1.backward(r1.backward(go))
        seq = nn.Sequential(nn.MaxPool2d(2, ceil_mode=ceil_mode), nn.ReLU())
        for _ in range(2):                        # the first call also plans the geometry
            y = seq(x)
            np.testing.assert_array_equal(y, want_y)
            assert y.dtype == x.dtype
            gx = seq.backward(go)
            assert gx.dtype == x.dtype and gx.shape == x.shape
            np.testing.assert_array_equal(gx, want_gx)
        # the layers' own backwards still work after a fused forward
        seq(x)
        np.testing.assert_array_equal(seq[0].backward(seq[1].backward(go)), want_gx)
        seq(x)
        assert seq.backward(go, input_grad=False) is None
    if torch is not None:
        t = torch.tensor(x, requires_grad=True)
        yt = torch.relu(torch.nn.functional.max_pool2d(t, 2, ceil_mode=ceil_mode))
        yt.backward(torch.tensor(go))
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(gx, t.grad.numpy())


def test_sequential_fusion_keeps_the_errors_and_modes():
    seq = nn.Sequential(nn.MaxPool2d(2), nn.ReLU())
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    seq(x)
    seq(x)
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 3, 3, 4\)"):
        seq.backward(np.ones((2, 3, 3, 4), np.float32))
    with pytest.raises(RuntimeError, match="nothing saved"):
        seq.backward(np.ones((2, 3, 3, 3), np.float32))         # the contexts were consumed
    seq.eval()
    y = seq(x)
    np.testing.assert_array_equal(y, np.maximum(F.max_pool2d(x, 2), 0))
    with pytest.raises(RuntimeError, match="nothing saved"):
        seq.backward(np.ones_like(y))
    seq.train()
    # an inplace ReLU, and a ReLU shared by two places: the same results as one by one
    relu = nn.ReLU(inplace=True)
    seq = nn.Sequential(nn.MaxPool2d(2), relu, nn.MaxPool2d(2, ceil_mode=True), relu)
    y = seq(x)
    np.testing.assert_array_equal(y, np.maximum(F.max_pool2d(np.maximum(F.max_pool2d(x, 2), 0),
                                                             2, ceil_mode=True), 0))


def test_sequential_fusion_pairs_and_fallbacks():
    # (pool, pool, relu): the second pool fuses with the ReLU; a 3x3 pool, a pool before
    # Flatten and a list input (not an ndarray) are not fused; all give the layers' results
    x = np.random.default_rng(4).standard_normal((2, 2, 12, 12)).astype(np.float32)
    for mods in ([nn.MaxPool2d(2), nn.MaxPool2d(2), nn.ReLU()],
                 [nn.MaxPool2d(3), nn.ReLU(), nn.Flatten()],
                 [nn.MaxPool2d(2), nn.Flatten(), nn.ReLU()]):
        seq = nn.Sequential(*mods)
        for _ in range(2):
            y = seq(x.tolist())
            h = x
            for m in mods:
                h = m(h)
            np.testing.assert_array_equal(y, h)
            go = np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)
            want = go
            for m in mods[::-1]:
                want = m.backward(want)
            seq(x)
            fused = [type(m).__name__ for m in mods if "relu_y" in m._ctx]
            assert fused == (["MaxPool2d"] if mods[2].__class__ is nn.ReLU
                             and isinstance(mods[1], nn.MaxPool2d) else [])
            np.testing.assert_array_equal(seq.backward(go), want)
