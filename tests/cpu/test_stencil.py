"""cpu/stencil.py: the one-channel register-tiled correlation, swept over the edges of
its tiles (widths and heights just below / at / above a tile, half tiles, kernels as
large as the input, strided views) against scipy.signal.correlate2d; integers exactly."""

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given
from hypothesis import strategies as st

from conftest import PROPERTY, run_on_emulated_avx2
from fastconv.cpu import stencil

DTYPES = [np.float32, np.float64, np.int64]


def reference(x, w, bias):
    """(N, G, H, W) x (G, kh, kw) -> valid correlations, float64 (int64 exactly)."""
    exact = x.dtype.kind == "i"
    wide = np.int64 if exact else np.float64
    N, G = x.shape[:2]
    out = np.empty((N, G, x.shape[2] - w.shape[1] + 1, x.shape[3] - w.shape[2] + 1), wide)
    for n in range(N):               # SciPy's direct 2-D correlation keeps int64 exact
        for g in range(G):
            out[n, g] = ss.correlate2d(x[n, g].astype(wide), w[g].astype(wide), "valid")
            out[n, g] += bias[g]
    return out


def check(got, want, dtype):
    if np.dtype(dtype).kind == "i":
        np.testing.assert_array_equal(got, want)
    else:
        eps = np.finfo(dtype).eps
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=64 * eps * scale)


def edge_sizes(tile, half):
    """Lengths around a full and a half tile, whole tiles and a half (the rest in a half
    tile or an overlapping full one), and tiny ones."""
    return sorted({n for t in (half, tile, 2 * tile, tile + half, 2 * tile + half)
                   for n in (t - 1, t, t + 1)} | {1, 2, 5})


@pytest.mark.parametrize("dtype", DTYPES)
@PROPERTY
@given(data=st.data())
def test_stencil_tile_edges(dtype, data):
    """Output widths around the tile widths, heights around the row blocks, every kernel
    shape up to the input's, strided and reversed rows, a bias; nothing outside ``out``
    is written."""
    isz = np.dtype(dtype).itemsize
    tw = stencil.tile_width(isz)
    half = stencil.half_width(isz)
    OW = data.draw(st.sampled_from(edge_sizes(tw, half)))
    OH = data.draw(st.integers(1, 2 * stencil.ROWS + 1))
    kh = data.draw(st.integers(1, 2 * stencil.ROWS + 2))
    kw = data.draw(st.sampled_from([1, 2, 3, 5, 9, 17]))
    N, G = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    H, W = OH + kh - 1, OW + kw - 1
    big = rng.integers(-9, 10, (N, G, H + 3, W + 5)).astype(dtype)
    if data.draw(st.booleans()):
        x = big[:, :, 1:H + 1, 2:W + 2]                       # strided rows
    else:
        x = big[:, :, H + 1:1:-1, 2:W + 2][:, :, :H]           # reversed rows
    w = rng.integers(-9, 10, (G, kh, kw)).astype(dtype)
    bias = rng.integers(-9, 10, G).astype(dtype)
    frame = np.full((N, G, OH + 2, OW + 4), 77, dtype=dtype)
    out = frame[:, :, 1:OH + 1, 2:OW + 2]
    stencil.stencil2d(out, x, w, bias)
    check(out, reference(x, w, bias), dtype)
    inner = np.zeros(frame.shape, bool)
    inner[:, :, 1:OH + 1, 2:OW + 2] = True
    assert (frame[~inner] == 77).all()


def extended(x, pads, boundary, fill):
    """x (N, G, H, W) extended by pads ((top, bottom), (left, right)): scipy's
    convolve2d boundaries, through fastconv._pad's index maps."""
    from fastconv._pad import source_index
    mode = {"fill": "zeros", "circular": "circular", "symmetric": "symmetric"}[boundary]
    for axis, (b, a) in zip((2, 3), pads):
        idx = source_index(x.shape[axis], b, a, mode)
        x = np.take(x, np.maximum(idx, 0), axis=axis)
        if boundary == "fill":
            shape = [1] * 4
            shape[axis] = idx.size
            x = np.where((idx >= 0).reshape(shape), x, np.asarray(fill, x.dtype))
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@PROPERTY
@given(data=st.data())
def test_stencil_extension_edges(dtype, data):
    """The extension read in place (``pads``, ``boundary``): widths around the tiles,
    heights around the row blocks, pads from none to more than the input (kernels larger
    than the image), every boundary, one-column strips (tiny L1 budget) or whole rows,
    ordinary or non-temporal stores, strided rows, 1-D (one-row) kernels; against the
    kernel on the explicitly extended input and against SciPy; nothing outside ``out``
    is written and ``x`` is left as it was."""
    isz = np.dtype(dtype).itemsize
    tw = stencil.tile_width(isz)
    half = stencil.half_width(isz)
    lanes = stencil.lanes(isz)
    W = data.draw(st.sampled_from(edge_sizes(tw, half) + [3 * lanes * stencil.stream_vectors(isz)]))
    H = data.draw(st.integers(1, 2 * stencil.ROWS + 3))
    kh = data.draw(st.sampled_from([1, 2, 3, 5, H, H + 2]))
    kw = data.draw(st.sampled_from([1, 2, 3, 4, 9, 4 * lanes + 1, (4 * lanes + 1) * 2, W,
                                    W + 3]))
    boundary = data.draw(st.sampled_from(["fill", "circular", "symmetric"]))
    pt, pb = (data.draw(st.integers(0, kh + 1)) for _ in range(2))
    pl, pr = (data.draw(st.integers(0, kw + 1)) for _ in range(2))
    OH, OW = H + pt + pb - kh + 1, W + pl + pr - kw + 1
    if OH < 1 or OW < 1:
        return
    fill = data.draw(st.integers(-3, 3))
    nt = data.draw(st.sampled_from([None, True, False]))
    N, G = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    big = rng.integers(-9, 10, (N, G, H + 2, W + 3)).astype(dtype)
    x = big[:, :, 1:H + 1, 2:W + 2]
    before = x.copy()
    w = rng.integers(-9, 10, (G, kh, kw)).astype(dtype)
    bias = rng.integers(-9, 10, G).astype(dtype)
    frame = np.full((N, G, OH + 2, OW + 4), 77, dtype=dtype)
    out = frame[:, :, 1:OH + 1, 2:OW + 2]
    l1 = stencil.L1_BYTES
    try:
        if data.draw(st.booleans()):
            stencil.L1_BYTES = 1                      # strips of one tile
        stencil.stencil2d(out, x, w, bias, ((pt, pb), (pl, pr)), boundary, fill, nt=nt)
    finally:
        stencil.L1_BYTES = l1
    want = reference(extended(x, ((pt, pb), (pl, pr)), boundary, fill), w, bias)
    check(out, want, dtype)
    if N == G == 1 and pt == pb == pl == pr == 0:
        np.testing.assert_array_equal(
            want[0, 0], ss.correlate2d(x[0, 0].astype(want.dtype), w[0].astype(want.dtype),
                                       "valid") + bias[0])
    inner = np.zeros(frame.shape, bool)
    inner[:, :, 1:OH + 1, 2:OW + 2] = True
    assert (frame[~inner] == 77).all()
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("boundary", ["fill", "circular", "symmetric"])
def test_stencil_extension_large_float(boundary, rng):
    """A 1024-wide float64 image (the benchmark's rows) and a long 1-D signal, pads of
    'same' mode, non-temporal stores on a pooled-size output, against scipy.signal."""
    x = rng.standard_normal((1, 1, 70, 1024))
    for k in (3, 7, 15):
        w = rng.standard_normal((1, k, k + 2))
        pads = ((k // 2, (k - 1) // 2), ((k + 2) // 2, (k + 1) // 2))
        out = np.empty((1, 1, 70, 1024))
        stencil.stencil2d(out, x, w, None, pads, boundary, 0.5, nt=True)
        want = ss.correlate2d(x[0, 0], w[0], "same", {"circular": "wrap",
                                                       "symmetric": "symm"}.get(boundary,
                                                                                "fill"), 0.5)
        np.testing.assert_allclose(out[0, 0], want, rtol=0, atol=1e-12 * k * k)
    s = rng.standard_normal((1, 1, 1, 300001))
    w = rng.standard_normal((1, 1, 101))
    out = np.empty((1, 1, 1, 300001))
    stencil.stencil2d(out, s, w, None, ((0, 0), (50, 50)), boundary, 0.0, nt=True)
    np.testing.assert_allclose(out[0, 0, 0], reference(extended(s, ((0, 0), (50, 50)),
                                                                boundary, 0.0), w,
                                                       np.zeros(1))[0, 0, 0],
                               rtol=0, atol=1e-11)


def row_sizes(rw, sw):
    """Output widths around the one-row tiles (and the multi-row tiles' half tile)."""
    return sorted({n for t in (rw, 2 * rw, sw, 2 * sw, 3 * sw, 4 * sw)
                   for n in (t - 1, t, t + 1)}
                  | {1, 2, 5, rw // 2})


def tap_counts(lanes, isz):
    """Kernel lengths around the one-row tiles' blocks of ``lanes`` taps, below and above
    the streaming tile's stream_vectors(isz) whole blocks."""
    sv = stencil.stream_vectors(isz)
    return sorted({1, 2, 3} | {n for t in (lanes, 2 * lanes, 3 * lanes, sv * lanes,
                                           (sv + 1) * lanes, (sv + 3) * lanes)
                               for n in (t - 1, t, t + 1)})


@pytest.mark.parametrize("dtype", DTYPES)
@PROPERTY
@given(data=st.data())
def test_stencil_row_tile_edges(dtype, data):
    """One-row kernels (1-D signals) on the shifted-input row tiles: output widths around
    their widths, kernel lengths around their blocks of taps, several strips, strided rows;
    integers exactly; nothing outside ``out`` is written (nor read past the input: the
    frame around ``x`` holds NaN/huge values that would show)."""
    isz = np.dtype(dtype).itemsize
    lanes = stencil.lanes(isz)
    rw = lanes * stencil.ROW_VECTORS
    OW = data.draw(st.sampled_from(row_sizes(rw, lanes * stencil.stream_vectors(isz))))
    kw = data.draw(st.sampled_from(tap_counts(lanes, isz)))
    OH = data.draw(st.integers(1, 3))
    N, G = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    W = OW + kw - 1
    poison = np.nan if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max
    big = np.full((N, G, OH + 2, W + 2 * lanes + 2), poison, dtype=dtype)
    x = big[:, :, 1:OH + 1, lanes + 1:lanes + 1 + W]
    x[...] = rng.integers(-9, 10, x.shape)
    w = rng.integers(-9, 10, (G, 1, kw)).astype(dtype)
    bias = rng.integers(-9, 10, G).astype(dtype)
    frame = np.full((N, G, OH + 2, OW + 4), 77, dtype=dtype)
    out = frame[:, :, 1:OH + 1, 2:OW + 2]
    stencil.stencil2d(out, x, w, bias)
    check(out, reference(x, w, bias), dtype)
    inner = np.zeros(frame.shape, bool)
    inner[:, :, 1:OH + 1, 2:OW + 2] = True
    assert (frame[~inner] == 77).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_stencil_row_tiles_every_edge(dtype, rng):
    """Every kernel length of tap_counts with every width of row_sizes (the sweep above
    samples them), integers exactly, in one image per length (rows of different widths
    as separate images would repeat the same tiles)."""
    isz = np.dtype(dtype).itemsize
    lanes = stencil.lanes(isz)
    for kw in tap_counts(lanes, isz):
        for OW in row_sizes(lanes * stencil.ROW_VECTORS, lanes * stencil.stream_vectors(isz)):
            x = rng.integers(-9, 10, (1, 1, 1, OW + kw - 1)).astype(dtype)
            w = rng.integers(-9, 10, (1, 1, kw)).astype(dtype)
            out = np.empty((1, 1, 1, OW), dtype)
            stencil.stencil2d(out, x, w)
            check(out, reference(x, w, np.zeros(1, dtype)), dtype)


_STREAM_TILES = {}


def stream_tile_runner(S, loads, pairs=False):
    """A kernel that runs the streaming one-row tile (S places, shifted inputs by
    ``loads`` or by shuffles; ``pairs``: the fast FIR algorithm's lane-paired taps) once,
    output column oj reading x from column 0, with places dist apart: the host runs one
    of the two ways in stencil2d, this runs both on any host (compiling the tile alone,
    not the whole stencil)."""
    key = (S, loads, pairs)
    if key not in _STREAM_TILES:
        from numba import njit
        tile = stencil._stream_intrinsic(S, loads, pairs)

        @njit
        def run(out, oj, x, w, b0, dist, taps):
            tile(out, 0, oj, x, 0, 0, w, 1, taps, b0, dist, False)

        _STREAM_TILES[key] = run
    return _STREAM_TILES[key]


@pytest.mark.parametrize("loads", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_stream_tile_both_shifts(dtype, loads, rng):
    """The streaming tile with its shifted inputs made by unaligned loads (hosts below
    64-byte vectors) and by shuffles (AVX-512), one and two places, kernel lengths from
    its least (stream_vectors() whole blocks of taps) up: integers exactly, against the
    reference; nothing read past the input the tile needs (NaN/huge values around it)
    nor written outside its outputs."""
    lanes = stencil.lanes(np.dtype(dtype).itemsize)
    sv = stencil.stream_vectors(np.dtype(dtype).itemsize)
    poison = np.nan if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max
    for S in (1, 2):
        run = stream_tile_runner(S, loads)
        for kw in sorted({sv * lanes + 1, sv * lanes + 2, (sv + 1) * lanes,
                          (sv + 1) * lanes + 1, (sv + 3) * lanes + lanes - 1, 101}):
            width = sv * lanes                   # outputs of one place
            dist = width + 3                     # the places apart, not vector-aligned
            OW = (S - 1) * dist + width
            big = np.full((1, OW + kw - 1 + 2 * lanes), poison, dtype)
            x = big[:, lanes:lanes + OW + kw - 1]
            x[...] = rng.integers(-9, 10, x.shape)
            w = rng.integers(-9, 10, (1, kw)).astype(dtype)
            out = np.full((1, OW + 2 * lanes), 77, dtype)
            run(out, lanes, x, w, dtype(3), dist, kw)
            want = reference(x.reshape(1, 1, 1, -1), w.reshape(1, 1, kw),
                             np.full(1, 3, dtype))[0, 0]
            for q in range(S):
                got = out[:, lanes + q * dist:lanes + q * dist + width]
                check(got, want[:, q * dist:q * dist + width], dtype)
            written = np.zeros(out.shape, bool)
            for q in range(S):
                written[:, lanes + q * dist:lanes + q * dist + width] = True
            assert (out[~written] == 77).all(), (S, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@PROPERTY
@given(data=st.data())
def test_whole_small_planes(dtype, data):
    """Enough small planes for the threads run whole from one copy of their extended
    input (stencil.whole_planes): widths around the half tile (below it by half tiles on
    the copy's wider rows), heights around the row blocks, kernels up to the plane,
    padded or not, every boundary, a bias, non-temporal stores or not; against the
    reference (integers exactly) and nothing written outside ``out``."""
    from fastconv.cpu._common import n_tasks_target
    isz = np.dtype(dtype).itemsize
    hw = stencil.half_width(isz)
    OW = data.draw(st.sampled_from(sorted({1, 2, hw - 1, hw, hw + 1, 2 * hw + 3})))
    OH = data.draw(st.integers(1, 2 * stencil.ROWS + 1))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    pads = data.draw(st.sampled_from([((0, 0), (0, 0)), ((1, 1), (1, 1)),
                                      ((kh - 1, 0), (0, kw - 1)), ((kh // 2, (kh - 1) // 2),
                                                                   (kw // 2, (kw - 1) // 2))]))
    boundary = data.draw(st.sampled_from(["fill", "wrap", "symm"]))
    H, W = OH + kh - 1 - sum(pads[0]), OW + kw - 1 - sum(pads[1])
    if H < 1 or W < 1 or (boundary != "fill" and (H < max(pads[0]) or W < max(pads[1]))):
        return
    planes = n_tasks_target() + data.draw(st.integers(0, 3))
    G = data.draw(st.sampled_from([1, 2, planes]))
    N = -(-planes // G)
    padded = max(max(pads[0]), max(pads[1])) > 0
    assert stencil.whole_planes(N * G, OH, OW, kh, kw, isz, padded) == (padded or OW < hw)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x = rng.integers(-9, 10, (N, G, H, W)).astype(dtype)
    w = rng.integers(-9, 10, (G, kh, kw)).astype(dtype)
    bias = rng.integers(-9, 10, G).astype(dtype)
    big = np.full((N, G, OH + 2, OW + 2), 77, dtype)
    out = big[:, :, 1:-1, 1:-1]
    fill = 2
    stencil.stencil2d(out, x, w, bias, pads, boundary, fill, nt=data.draw(st.booleans()))
    mode = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}[boundary]
    extra = dict(constant_values=fill) if mode == "constant" else {}
    xe = np.pad(x, ((0, 0), (0, 0)) + pads, mode, **extra)
    check(out, reference(xe, w, bias), dtype)
    inner = np.zeros(big.shape, bool)
    inner[:, :, 1:-1, 1:-1] = True
    assert (big[~inner] == 77).all()


@pytest.mark.parametrize("loads", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_tile_lane_pairs(dtype, loads, rng):
    """The fast FIR algorithm's lane-paired streaming tile, ``out[j] = b0 + sum_c
    W[c, j % 2] * x[j + 2c]`` (j from each place's first output), by loads and by
    shuffles, one and two places, tap counts from its least (stream_vectors() blocks of
    lanes / 2 taps) up: exact on small integers; nothing read past the input it needs
    (NaN around it) nor written outside its outputs."""
    lanes = stencil.lanes(np.dtype(dtype).itemsize)
    sv = stencil.stream_vectors(np.dtype(dtype).itemsize)
    B = lanes // 2
    for S in (1, 2):
        run = stream_tile_runner(S, loads, pairs=True)
        for nk in sorted({sv * B + 1, sv * B + 2, (sv + 1) * B, (sv + 2) * B + B - 1, 51}):
            width = sv * lanes
            dist = width + 6                     # the places apart: even, not aligned
            OW = (S - 1) * dist + width
            big = np.full((1, OW + 2 * nk - 2 + 2 * lanes), np.nan, dtype)
            x = big[:, lanes:lanes + OW + 2 * nk - 2]
            x[...] = rng.integers(-9, 10, x.shape)
            wl = rng.integers(-9, 10, (nk, 2)).astype(dtype)      # (even, odd) per tap
            w = np.ascontiguousarray(np.tile(wl, (1, B)).reshape(1, nk * lanes))
            out = np.full((1, OW + 2 * lanes), 77, dtype)
            run(out, lanes, x, w, dtype(3), dist, nk)
            written = np.zeros(out.shape, bool)
            for q in range(S):
                j = np.arange(width)
                want = 3 + sum(wl[c, j % 2] * x[0, q * dist + j + 2 * c] for c in range(nk))
                np.testing.assert_array_equal(out[0, lanes + q * dist:][:width], want)
                written[:, lanes + q * dist:lanes + q * dist + width] = True
            assert (out[~written] == 77).all(), (S, nk)


def fir_case(rng, dtype, OW, kw, pads, N=1, G=1, OH=1):
    W = OW + kw - 1 - sum(pads)
    x = rng.standard_normal((N, G, OH, W)).astype(dtype)
    w = rng.standard_normal((G, 1, kw)).astype(dtype)
    bias = rng.standard_normal(G).astype(dtype)
    return x, w, bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@PROPERTY
@given(data=st.data())
def test_fast_fir_matches_direct(dtype, data, monkeypatch):
    """stencil2d's fast FIR path (fir=True) on one-row kernels against the float64
    reference: chunks (made small here) and outputs just around their multiples, kernels
    from the path's least taps up, even and odd, every boundary, padded and valid, several
    images, channels and rows, a bias; the weights and bias alone decide nothing else.
    Within the tests' tolerance of the data's scale, and never written outside ``out``."""
    isz = np.dtype(dtype).itemsize
    monkeypatch.setattr(stencil, "FIR_CHUNK_BYTES", data.draw(st.sampled_from([1, 4096])))
    kw = data.draw(st.sampled_from([stencil.FIR_MIN_TAPS, stencil.FIR_MIN_TAPS + 1, 101, 150]))
    C = stencil.fir_chunk(kw, isz)
    assert C > 0
    OW = data.draw(st.sampled_from([C - 1, C, C + 1, 2 * C - 1, 3 * C + 5]))
    left = data.draw(st.sampled_from([0, 1, kw // 2, kw - 1]))
    right = data.draw(st.sampled_from([0, (kw - 1) // 2, kw - 1]))
    boundary = data.draw(st.sampled_from(["fill", "wrap", "symm"]))
    N, G, OH = (data.draw(st.integers(1, 2)) for _ in range(3))
    if OW + kw - 1 - left - right < 1:
        return                                           # no input that wide
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x, w, bias = fir_case(rng, dtype, OW, kw, (left, right), N, G, OH)
    if x.shape[3] < max(left, right) and boundary != "fill":
        return                                           # wrap/symm need that much input
    big = np.full((N, G, OH, OW + 16), 77, dtype)
    out = big[..., 8:8 + OW]
    stencil.stencil2d(out, x, w, bias, ((0, 0), (left, right)), boundary, fill=0.5, fir=True)
    mode = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}[boundary]
    kw_pad = dict(constant_values=0.5) if mode == "constant" else {}
    xe = np.pad(x.astype(np.float64), ((0, 0),) * 3 + ((left, right),), mode, **kw_pad)
    check(out, reference(xe, w.astype(np.float64), bias.astype(np.float64)), dtype)
    assert (big[..., :8] == 77).all() and (big[..., 8 + OW:] == 77).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_fir_nonfinite_and_overflow_like_direct(dtype, rng, monkeypatch):
    """NaN and inf inputs, and finite data whose fast-FIR partial sums overflow where the
    direct sums do not: the fast FIR path gives the direct path's values, NaN and inf
    in the same places (those chunks are recomputed by the direct sums). (The other way
    round, outputs whose direct sums overflow may come out finite, as documented.)"""
    monkeypatch.setattr(stencil, "FIR_CHUNK_BYTES", 1)
    kw = 101
    C = stencil.fir_chunk(kw, np.dtype(dtype).itemsize)
    OW = 6 * C
    x, w, _ = fir_case(rng, dtype, OW, kw, (0, 0))
    x[0, 0, 0, [C + 3, 3 * C + 50]] = [np.inf, -np.inf]
    x[0, 0, 0, 4 * C + 7] = np.nan
    x[0, 0, 0, 5 * C + 2] = np.inf
    w[0, 0, 1] = 0                                      # inf * 0 = NaN there
    out, ref = np.empty((2, 1, 1, 1, OW), dtype)
    stencil.stencil2d(out, x, w, fir=True)
    stencil.stencil2d(ref, x, w, fir=False)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    fin = np.isfinite(ref)
    assert (~fin).any() and fin.any()
    check(out[fin], ref[fin], dtype)
    # alternating +-1 taps on data near the largest float: the direct sums stay near
    # it, the even and odd phases' sums (51 and 50 terms) overflow
    big = np.finfo(dtype).max / 4
    xb = np.full((1, 1, 1, OW + kw - 1), big, dtype)
    wb = np.where(np.arange(kw) % 2 == 0, 1, -1).astype(dtype).reshape(1, 1, kw)
    stencil.stencil2d(out, xb, wb, fir=True)
    stencil.stencil2d(ref, xb, wb, fir=False)
    assert np.isfinite(ref).all()
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("kw", [stencil.FIR_MIN_TAPS, 100, 101])
def test_fast_fir_reads_only_the_windows(kw, rng, monkeypatch):
    """Valid outputs of exactly one and two chunks: the fast FIR path runs every chunk
    (its rounding differs from the direct sums'), odd kernels included, whose A[C] and
    last pairwise sum would take the input one past the last window (0 instead); NaN
    right after x's end (a view of a larger array) reaches no output."""
    dtype = np.float64
    C = stencil.fir_chunk(kw, 8)
    for OW in (C, 2 * C):
        big = np.full((1, 1, 1, OW + kw + 7), np.nan, dtype)
        x = big[..., :OW + kw - 1]
        x[...] = rng.standard_normal(x.shape)
        w = rng.standard_normal((1, 1, kw))
        out, ref = np.empty((2, 1, 1, 1, OW))
        stencil.stencil2d(out, x, w, fir=True)
        stencil.stencil2d(ref, x, w, fir=False)
        assert np.isfinite(out).all()
        check(out, ref, dtype)
        last = slice(OW - C, OW)
        assert not np.array_equal(out[..., last], ref[..., last])     # the path ran there


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_fast_fir_padding_wider_than_a_chunk(boundary, rng, monkeypatch):
    """'full' padding of a long kernel with small chunks: the head columns (whose windows
    start in the padding, kw - 1 of them) are wider than a chunk and run from one copy of
    the extension; right, and nothing written outside ``out``."""
    monkeypatch.setattr(stencil, "FIR_CHUNK_BYTES", 1)
    kw = 257
    C = stencil.fir_chunk(kw, 8)
    assert C < kw - 1
    x = rng.standard_normal((1, 1, 2, 3 * C + kw))
    w = rng.standard_normal((1, 1, kw))
    OW = x.shape[3] + kw - 1
    big = np.full((1, 1, 2, OW + 16), 77.0)
    out = big[..., 8:8 + OW]
    stencil.stencil2d(out, x, w, None, ((0, 0), (kw - 1, kw - 1)), boundary, fir=True)
    ref = np.empty_like(out)
    stencil.stencil2d(ref, x, w, None, ((0, 0), (kw - 1, kw - 1)), boundary, fir=False)
    check(out, ref, np.float64)
    assert (big[..., :8] == 77).all() and (big[..., 8 + OW:] == 77).all()


def test_fast_fir_applies_to_long_float_kernels_only():
    """fir_chunk: 0 below FIR_MIN_TAPS and for kernels too short for the lane-paired
    tile; a multiple of two of its tiles and of the combination's step otherwise."""
    for isz in (4, 8):
        lanes = stencil.lanes(isz)
        unit = 2 * stencil.stream_vectors(isz) * lanes
        assert stencil.fir_chunk(stencil.FIR_MIN_TAPS - 1, isz) == 0
        for kw in (stencil.FIR_MIN_TAPS, 101, 1000):
            C = stencil.fir_chunk(kw, isz)
            if (kw + 1) // 2 - 1 >= stencil.stream_vectors(isz) * lanes // 2:
                assert C % unit == 0 and C % (stencil.FIR_UNROLL * lanes) == 0 and C > 0
    assert stencil.fir_macs(41) > 41 and stencil.fir_macs(201) < 0.9 * 201   # worth it long


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stencil_float_values_and_strips(dtype, monkeypatch, rng):
    """Random floats (not only small integers) within a few ulps of float64; tiny L1
    budgets force strips of one tile and several tasks per image."""
    for l1 in (1, stencil.L1_BYTES):
        monkeypatch.setattr(stencil, "L1_BYTES", l1)
        for OH, OW, kh, kw in [(37, 3 * stencil.tile_width(np.dtype(dtype).itemsize) + 3, 7, 5),
                               (9, 200, 15, 15), (1, 1000, 1, 31), (5, 70, 4, 1)]:
            x = rng.standard_normal((1, 2, OH + kh - 1, OW + kw - 1)).astype(dtype)
            w = rng.standard_normal((2, kh, kw)).astype(dtype)
            out = np.empty((1, 2, OH, OW), dtype)
            stencil.stencil2d(out, x, w)
            check(out, reference(x, w, np.zeros(2)), dtype)


def test_stencil_integers_wrap_like_numpy():
    """int64 products and sums wrap around as NumPy's do (no float detour)."""
    x = np.full((1, 1, 3, 40), 2 ** 40, dtype=np.int64)
    w = np.full((1, 2, 3), 2 ** 30, dtype=np.int64)
    out = np.empty((1, 1, 2, 38), np.int64)
    stencil.stencil2d(out, x, w)
    with np.errstate(over="ignore"):
        want = (x[0, 0, 0, 0] * w[0, 0, 0]) * np.int64(6)
    np.testing.assert_array_equal(out, want)


def test_vector_width_is_the_hosts():
    import llvmlite.binding as llvm
    from numba import config
    feats = llvm.get_host_cpu_features()
    if config.CPU_FEATURES or config.CPU_NAME:
        pytest.skip("numba compiles for a configured CPU")
    want = 64 if feats.get("avx512f") else 32 if feats.get("avx2") or feats.get("avx") else 16
    assert stencil.VECTOR_BYTES == want


def test_avx2_tiles_in_a_subprocess(tmp_path):
    """A host without AVX-512 (emulated: LLVM told the CPU has none) gets 32-byte
    vectors, 3-vector tiles, the row tile on 4-lane shifts and the streaming tile on
    unaligned loads (5 vectors of 8-byte elements); 2-D and 1-D results against SciPy,
    integers exactly. (Its own numba cache: compiled code is keyed by the CPU, not by
    this patch.)"""
    run_on_emulated_avx2("""
        import numpy as np, scipy.signal as ss
        from fastconv.cpu import stencil
        assert stencil.VECTOR_BYTES == 32 and stencil.VECTORS == 3, stencil.VECTOR_BYTES
        assert stencil.SHIFT_BY_LOADS and stencil.stream_vectors(8) == 5
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64, np.int64):
            for (H, W, kh, kw) in [(9, 40, 3, 3), (6, 70, 5, 7), (1, 300, 1, 9),
                                   (2, 33, 1, 4), (1, 17, 1, 5), (3, 100, 1, 101),
                                   (1, 400, 1, 101), (2, 230, 1, 25), (1, 90, 1, 49)]:
                if kw > W:
                    continue
                x = rng.integers(-9, 10, (1, 1, H, W)).astype(dt)
                w = rng.integers(-9, 10, (1, kh, kw)).astype(dt)
                out = np.empty((1, 1, H - kh + 1, W - kw + 1), dt)
                stencil.stencil2d(out, x, w)
                want = ss.correlate2d(x[0, 0].astype(np.int64), w[0].astype(np.int64), "valid")
                assert (out[0, 0] == want).all(), (dt, H, W, kh, kw)
        print("ok")
    """, tmp_path)
