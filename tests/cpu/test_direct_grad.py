"""The direct gradients' internals: the weight-gradient register tile (cpu/_simd.grad_tile,
both host shapes, the AVX2 one also on an emulated host), the weight-gradient kernel's lines, segments, tap chunks and image
splits, and the polyphase input gradient, against the naive reference."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv as fc
import naive
from conftest import PROPERTY, assert_close, run_on_emulated_avx2


@pytest.mark.parametrize("shape", ["avx512", "avx2", "avx512_alt", "avx2_alt"])
@pytest.mark.parametrize("vector_bytes", [32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_grad_tile_kernel(shape, vector_bytes, dtype, rng):
    """grad_tile on its own, for every host tile shape and vector width:
    acc[a0 + (j*taps + i)*V + l] += sum_{m < ni} sum_{s < n} gl[g0 + m*gi + (s*rows + j)*V + l]
    * xr[x0 + m*xi + off[t0 + i] + s*V + l] (grad_out row-interleaved; integers exactly),
    leaving everything outside its accumulators alone."""
    from numba import njit

    from fastconv.cpu._simd import GRAD_TILES, grad_tile

    rows, taps = GRAD_TILES[shape]
    tile = grad_tile(rows, taps, vector_bytes)

    @njit
    def run(acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi):
        tile(acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi)

    V = vector_bytes // np.dtype(dtype).itemsize
    gl = rng.integers(-9, 10, 2000).astype(dtype)
    xr = rng.integers(-9, 10, 2000).astype(dtype)
    off = rng.integers(0, 100, taps + 3).astype(np.int64)
    for n, ni in [(0, 1), (1, 1), (3, 1), (3, 0), (0, 2), (1, 3), (2, 2)]:
        a0, g0, x0, t0 = 5, 7, 11, 2
        gi, xi = 3 * rows * V + 3, 4 * V + 100 + 5
        acc = np.full(a0 + rows * taps * V + 5, 3, dtype=dtype)
        run(acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi)
        for j in range(rows):
            for i in range(taps):
                for lane in range(V):
                    s = np.arange(n)
                    want = 3 + sum(int(np.sum(
                        gl[g0 + m * gi + (s * rows + j) * V + lane].astype(np.int64)
                        * xr[x0 + m * xi + off[t0 + i] + s * V + lane].astype(np.int64)))
                        for m in range(ni))
                    assert acc[a0 + (j * taps + i) * V + lane] == want
        np.testing.assert_array_equal(acc[:a0], 3)
        np.testing.assert_array_equal(acc[a0 + rows * taps * V:], 3)


@st.composite
def grad_problems(draw):
    """2-D problems around the tiles' edges: output channels around GRAD_ROWS, taps
    around GRAD_TAPS, lines around vector multiples; one image, tiny weights."""
    groups = draw(st.sampled_from([1, 1, 2]))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    N = draw(st.sampled_from([1, 1, 2, 3, 5]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    assume(all((i + 2 * q - (k - 1) * e - 1) >= 0 for i, q, k, e in zip((H, W), p, (kh, kw), d)))
    return dict(x_shape=(N, groups * cg, H, W), w_shape=(groups * og, cg, kh, kw),
                kw=dict(stride=s, padding=p, dilation=d, groups=groups), dtype=dtype,
                seed=draw(st.integers(0, 2**31)))


def _arrays(pb):
    rng = np.random.default_rng(pb["seed"])
    x = rng.uniform(-1, 1, pb["x_shape"]).astype(pb["dtype"])
    w = rng.uniform(-1, 1, pb["w_shape"]).astype(pb["dtype"])
    gy = rng.uniform(-1, 1, naive.conv(x, w, None, **pb["kw"]).shape).astype(pb["dtype"])
    return x, w, gy


@pytest.mark.parametrize("layout", ["default", "tiny-segments-split-images", "three-row-blocks",
                                    "main-tile", "alt-tile", "lanes-main-tile",
                                    "lanes-alt-tile-split-rows"])
@PROPERTY
@given(pb=grad_problems())
def test_direct_weight_grad(layout, pb):
    """The weight gradient, also with one vector per segment, one tap block per task and
    every image its own partial sum (forced), so segment, chunk and split edges all occur,
    with tasks of three channel blocks on segments of a few vectors, and with each of the
    host's two tile shapes forced; and cpu/minor.py's (images in the lanes), with each
    tile shape, also with every output row its own partial sum."""
    from fastconv.cpu import direct, minor
    x, w, gy = _arrays(pb)
    want = naive.conv_weight_grad(x, w.shape, gy, **pb["kw"])
    with pytest.MonkeyPatch.context() as mp:
        lanes = layout.startswith("lanes-")
        mp.setattr(direct, "minor_wgrad_pays", lambda *a: lanes)
        layout = layout[6:] if lanes else layout
        if layout == "alt-tile-split-rows":
            mp.setattr(minor, "n_tasks_target", lambda: 10_000)
            layout = "alt-tile"
        if layout == "tiny-segments-split-images":
            mp.setattr(direct, "GRAD_SEG_BYTES", 1)
            mp.setattr(direct, "GRAD_CHUNK", 1)
            mp.setattr(direct, "n_tasks_target", lambda: 10_000)
        if layout in ("main-tile", "alt-tile"):
            mp.setattr(direct, "GRAD_SHAPE", layout[:-5])
        if layout == "three-row-blocks":   # tasks of 3 channel blocks (also on short lines)
            mp.setattr(direct, "GRAD_ROW_BLOCKS", 3)
            mp.setattr(direct, "GRAD_SEG_BYTES", 3 * 4 * 8)
        got = fc.grad.conv2d_weight(x, w.shape, gy, **pb["kw"], algorithm="direct")
    assert got.dtype == pb["dtype"]
    assert_close(got, want, pb["dtype"])


@pytest.mark.parametrize("lanes", [False, True])
@PROPERTY
@given(pb=grad_problems())
def test_direct_input_grad_polyphase(lanes, pb):
    """Per phase, the line kernels over the padded grad_out, or (lanes) cpu/minor.py's
    position tiles summing only the taps that reach grad_out."""
    from fastconv.cpu import direct, minor
    x, w, gy = _arrays(pb)
    want = naive.conv_input_grad(x.shape, w, gy, **pb["kw"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(direct, "minor_pays", lambda *a: lanes)
        mp.setattr(minor, "rows", lambda Og: 4 + pb["seed"] % 2)    # tiles of 4 or 5
        got = fc.grad.conv2d_input(x.shape, w, gy, **pb["kw"], algorithm="direct")
    assert got.dtype == pb["dtype"]
    assert_close(got, want, pb["dtype"])


@given(k=st.integers(1, 9), s=st.integers(1, 5), d=st.integers(1, 4), o=st.integers(1, 9),
       extra=st.integers(0, 4))
def test_polyphase_plan_uses_every_tap_once(k, s, d, o, extra):
    """Each tap belongs to exactly one phase; each phase covers its padded-input
    positions m*s + r for every m, inside the padded grad_out."""
    from fastconv.cpu.engine import polyphase
    ip = (o - 1) * s + (k - 1) * d + 1 + extra
    [(P, U, dl, phases)] = polyphase((o,), (s,), (d,), (k,), (ip,))
    taps = sorted(k0 + j * step for r, k0, step, J, a, M in phases for j in range(J))
    assert taps == [t for t in range(k) if (t * d) % s in {ph[0] for ph in phases}]
    assert all(t * d % s != r or t in taps for t in range(k) for r in range(s)
               if -(-(ip - r) // s) > 0)
    for r, k0, step, J, a_last, M in phases:
        assert all((k0 + j * step) * d % s == r for j in range(J))
        assert M == len(range(r, ip, s))
        assert P - a_last >= 0 and P - a_last + M + (J - 1) * dl <= U


@pytest.mark.parametrize("host", ["avx512", "avx2"])
def test_weight_gradient_tile_choice(host, monkeypatch):
    """The weight gradient runs the host's tile shape whose tiles cost least: on
    AVX-512 (tiles bound by their FMAs) the one that pads the channels and taps least;
    on AVX2 (bound by their loads) the one with fewer tiles: the stem's 64 x 147 takes
    3 x 4 (814 tiles; 2 x 5 would pad less but take 960), mnist.conv1's 10 x 25 takes
    2 x 5 (25 tiles, no padding)."""
    from fastconv.cpu import _simd, direct
    main, alt = _simd.GRAD_TILES[host], _simd.GRAD_TILES[host + "_alt"]
    monkeypatch.setattr(direct, "GRAD_ROWS", main[0])
    monkeypatch.setattr(direct, "GRAD_TAPS", main[1])
    monkeypatch.setattr(direct, "GRAD_ALT_ROWS", alt[0])
    monkeypatch.setattr(direct, "GRAD_ALT_TAPS", alt[1])
    for Og in range(1, 70, 3):
        for T in (1, 9, 25, 27, 147, 250, 576):
            pads = [-(-Og // r) * r * -(-T // t) * t for r, t in (main, alt)]
            tiles = [-(-Og // r) * -(-T // t) for r, t in (main, alt)]
            if host == "avx512":
                assert direct.grad_alt(Og, T) == (pads[1] < pads[0])
            else:
                assert direct.grad_alt(Og, T) == (tiles[1] < tiles[0])
    if host == "avx2":
        assert direct.grad_shape(direct.grad_alt(64, 147)) == (3, 4)
        assert direct.grad_shape(direct.grad_alt(10, 25)) == (2, 5)


def test_avx2_tile_shape_in_a_subprocess(tmp_path):
    """A host without AVX-512 (emulated: LLVM told the CPU has none) gets the
    16-register weight-gradient tile; its forward and gradients are right.
    (Its own numba cache: compiled code is keyed by the CPU, not by this patch.)"""
    run_on_emulated_avx2("""
        import fastconv as fc, naive
        from fastconv.cpu import _simd
        assert (_simd.GRAD_ROWS, _simd.GRAD_TAPS) == _simd.GRAD_TILES["avx2"]
        rng = np.random.default_rng(0)
        for s, C, O, k in ((1, 3, 5, 3), (2, 3, 5, 3), (1, 1, 10, 5)):   # 3 x 4; 2 x 5 tiles
            x = rng.standard_normal((2, C, 11, 10)).astype(np.float32)
            w = rng.standard_normal((O, C, k, k)).astype(np.float32)
            gy = rng.standard_normal(naive.conv(x, w, None, stride=s, padding=1).shape)
            gy = gy.astype(np.float32)
            got = fc.grad.conv2d_weight(x, w.shape, gy, stride=s, padding=1, algorithm="direct")
            want = naive.conv_weight_grad(x, w.shape, gy, stride=s, padding=1)
            assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), s
            got = fc.conv2d(x, w, stride=s, padding=1, algorithm="direct")
            want = naive.conv(x, w, None, stride=s, padding=1)
            assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), s
            got = fc.grad.conv2d_input(x.shape, w, gy, stride=s, padding=1, algorithm="direct")
            want = naive.conv_input_grad(x.shape, w, gy, stride=s, padding=1)
            assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), s
        print("ok")
    """, tmp_path)


def test_avx2_images_in_lanes_in_a_subprocess(tmp_path):
    """cpu/minor.py on an emulated AVX2 host: 8-lane vectors, lane chunks of at most 3
    (4-channel tiles) or 2 (5-channel tiles) vectors, a batch that ends inside a vector;
    all three ops right."""
    run_on_emulated_avx2("""
        import fastconv as fc, naive
        from fastconv.cpu import direct, minor
        assert minor.MAX_VECTORS == {4: 3, 5: 2} and minor.lanes(19, 4) == 24
        direct.minor_pays = direct.minor_wgrad_pays = lambda *a: True
        rng = np.random.default_rng(0)
        for O, s in ((8, 1), (10, 2)):          # tiles of 4 and of 5 channels
            x = rng.standard_normal((19, 3, 9, 10)).astype(np.float32)
            w = rng.standard_normal((O, 3, 3, 3)).astype(np.float32)
            gy = rng.standard_normal(naive.conv(x, w, None, stride=s, padding=1).shape)
            gy = gy.astype(np.float32)
            for got, want in (
                    (fc.conv2d(x, w, stride=s, padding=1, algorithm="direct"),
                     naive.conv(x, w, None, stride=s, padding=1)),
                    (fc.grad.conv2d_input(x.shape, w, gy, stride=s, padding=1, algorithm="direct"),
                     naive.conv_input_grad(x.shape, w, gy, stride=s, padding=1)),
                    (fc.grad.conv2d_weight(x, w.shape, gy, stride=s, padding=1, algorithm="direct"),
                     naive.conv_weight_grad(x, w.shape, gy, stride=s, padding=1))):
                assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), (O, s)
        print("ok")
    """, tmp_path)


@pytest.mark.parametrize("where", ["x", "gy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_direct_weight_grad_non_finite(where, value, rng):
    """A NaN or inf anywhere in the input (also where only the padded-width grid's
    wrap-around columns read it) or grad_out: the same result as im2col's GEMM, NaN/inf
    exactly where a true term touches it."""
    for trial in range(6):
        x = rng.standard_normal((2, 3, 9, 11))
        gy = rng.standard_normal((2, 5, 7, 9))
        a = x if where == "x" else gy
        idx = tuple(rng.integers(0, s) for s in a.shape)
        if trial == 0 and where == "x":
            idx = (1, 2, 4, 10)          # the last column: read by wrap-around positions
        a[idx] = value
        got = fc.grad.conv2d_weight(x, (5, 3, 3, 3), gy, algorithm="direct")
        want = fc.grad.conv2d_weight(x, (5, 3, 3, 3), gy, algorithm="im2col")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_vec_copy(dtype):
    """cpu/_simd.vec_copy copies one host-width vector, at any offsets, nothing else."""
    from numba import njit

    from fastconv.cpu._simd import VECTOR_BYTES, vec_copy

    @njit
    def run(dst, d0, src, s0):
        vec_copy(dst, d0, src, s0)

    V = VECTOR_BYTES // np.dtype(dtype).itemsize
    src = np.arange(3 * V, dtype=dtype)
    for d0, s0 in [(0, 0), (3, 5), (V + 1, 2 * V - 1)]:
        dst = np.full(3 * V, -1, dtype=dtype)
        run(dst, d0, src, s0)
        want = np.full(3 * V, -1, dtype=dtype)
        want[d0:d0 + V] = src[s0:s0 + V]
        np.testing.assert_array_equal(dst, want)
