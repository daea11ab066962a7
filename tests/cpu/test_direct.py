"""cpu/direct.py internals: the register-tile micro-kernel, line layouts and segments,
against the naive reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
import naive
from conftest import CONV, PROPERTY, assert_close, conv_configs, conv_kwargs, make_arrays, naive_conv


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("layout", ["image-major", "batch-minor", "images-in-lanes"])
@PROPERTY
@given(data=st.data())
def test_direct_layouts_and_segments(nd, layout, data):
    """The direct kernel reads images one by one (image-major) or interleaved, image index
    innermost (batch-minor, for short lines), or runs cpu/minor.py's position tiles with
    the images in the lanes; forced here for every problem, with tiny segments so that
    segments split output rows (and, batch-minor, the images of a column), and tiny
    channel chunks (images in lanes) so that taps split into many runs, tiles of 4 or 5
    channels."""
    from fastconv.cpu import direct, minor
    cfg = data.draw(conv_configs(nd, max_batch=20 if layout == "images-in-lanes" else 4))
    x, w, b = make_arrays(cfg)
    seg_bytes = data.draw(st.sampled_from([4 * 3, 8 * 7, direct.SEG_BYTES]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(direct, "batch_minor", lambda N, line, itemsize: layout == "batch-minor")
        mp.setattr(direct, "minor_pays", lambda *a: layout == "images-in-lanes")
        mp.setattr(minor, "CHUNK_BYTES", data.draw(st.sampled_from([1, minor.CHUNK_BYTES])))
        R = data.draw(st.sampled_from([4, 5]))          # tiles of 4 or 5 channels
        mp.setattr(minor, "rows", lambda Og: R)
        mp.setattr(direct, "SEG_BYTES", seg_bytes)
        got = CONV[nd](x, w, b, **conv_kwargs(cfg), algorithm="direct")
    assert_close(got, naive_conv(cfg, x, w, b), cfg["dtype"])


@pytest.mark.parametrize("long", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_register_tile_kernel(long, dtype, rng):
    """cpu/_simd.tile4 and tile4_long on their own: acc[j, p0 + i] = sum_t wg[t, j] *
    xr[base + off[t] + p0 + i] (integers exactly), overwriting acc and nothing outside
    its tile."""
    from numba import njit

    from fastconv.cpu._simd import LONG_TILE_BYTES, tile4, tile4_long, tile_width

    tile = tile4_long if long else tile4

    @njit
    def run(acc, p0, xr, base, off, wg, T):
        tile(acc, p0, xr, base, off, wg, T)

    isz = np.dtype(dtype).itemsize
    tw = LONG_TILE_BYTES // isz if long else tile_width(isz)
    xr = rng.integers(-9, 10, 500).astype(dtype)
    for T in (0, 1, 7):
        off = rng.integers(0, 200, T).astype(np.int64)
        wg = rng.integers(-9, 10, (T, 4)).astype(dtype)
        acc = np.full((4, 3 * tw), 7, dtype=dtype)
        run(acc, tw, xr, np.uint64(5), off, wg, T)
        want = np.zeros((4, tw), dtype=np.int64)
        for t in range(T):
            seg = xr[5 + off[t] + tw:5 + off[t] + 2 * tw].astype(np.int64)
            want += wg[t].astype(np.int64)[:, None] * seg[None, :]
        np.testing.assert_array_equal(acc[:, tw:2 * tw], want)
        np.testing.assert_array_equal(acc[:, :tw], 7)
        np.testing.assert_array_equal(acc[:, 2 * tw:], 7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@PROPERTY
@given(data=st.data())
def test_direct_register_tiles(dtype, data):
    """Lines long enough for the register tiles (cpu/_simd.py): whole tiles, a last tile
    overlapping its neighbour, partial blocks of output channels, groups, strides and
    dilations, segments of any length, against the naive reference."""
    from fastconv.cpu import direct
    from fastconv.cpu._simd import LONG_TILE_BYTES, tile_width
    tw = tile_width(np.dtype(dtype).itemsize)
    groups = data.draw(st.sampled_from([1, 2]))
    C, O = groups * data.draw(st.integers(1, 3)), groups * data.draw(st.integers(1, 6))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    H = data.draw(st.integers(kh + 1, kh + 6))
    W = data.draw(st.integers(max(tw // 2, 2 * kw), 3 * tw))     # room for dilation 2
    kw_ = dict(stride=data.draw(st.sampled_from([1, 1, (1, 2), 2])),
               dilation=data.draw(st.sampled_from([1, (1, 2)])), groups=groups,
               padding=data.draw(st.sampled_from([0, 1, "same"])))
    if kw_["padding"] == "same" and kw_["stride"] != 1:
        kw_["padding"] = 1
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    x = rng.uniform(-1, 1, (data.draw(st.integers(1, 3)), C, H, W)).astype(dtype)
    w = rng.uniform(-1, 1, (O, C // groups, kh, kw)).astype(dtype)
    b = rng.uniform(-1, 1, O).astype(dtype)
    lw = LONG_TILE_BYTES // np.dtype(dtype).itemsize     # the long tile's width
    seg_bytes = data.draw(st.sampled_from([(tw + 5) * 8, 2 * tw * 8 + 8, (lw + 3) * 8,
                                           direct.SEG_BYTES]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(direct, "SEG_BYTES", seg_bytes)
        got = fc.conv2d(x, w, b, **kw_, algorithm="direct")
    assert_close(got, naive.conv(x.astype(np.float64), w.astype(np.float64),
                                 b.astype(np.float64), **kw_), dtype)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # (im2col's matmul)
@pytest.mark.parametrize("op", ["forward", "input_grad", "weight_grad"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_images_in_lanes_keep_non_finite_values_local(op, value, rng):
    """cpu/minor.py (forced) puts a NaN/inf of the input, the weight or grad_out exactly
    where im2col's GEMM does: the zero lanes past the batch, the tiles' padding channels
    and the taps outside grad_out's window never meet it."""
    from fastconv.cpu import direct
    kw = dict(stride=(1, 2), padding=(2, 1), dilation=(1, 2))
    for trial in range(4):
        x = rng.standard_normal((3, 2, 9, 11))
        w = rng.standard_normal((6, 2, 3, 3))
        gy = rng.standard_normal(fc.conv2d(x, w, **kw).shape)
        arrays = {"forward": (x, w), "input_grad": (w, gy), "weight_grad": (x, gy)}[op]
        a = arrays[trial % 2]
        a[tuple(rng.integers(0, s) for s in a.shape)] = value

        def run(algorithm):
            if op == "forward":
                return fc.conv2d(x, w, **kw, algorithm=algorithm)
            if op == "input_grad":
                return fc.grad.conv2d_input(x.shape, w, gy, **kw, algorithm=algorithm)
            return fc.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm=algorithm)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(direct, "minor_pays", lambda *a: True)
            mp.setattr(direct, "minor_wgrad_pays", lambda *a: True)
            got = run("direct")
        want = run("im2col")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-10, atol=1e-10)


@PROPERTY
@given(data=st.data())
def test_pack_weight_cached_index_and_direct_build_agree(data):
    # the tile weight layout (cpu/_common.pack_weight) by its cached gather index (small
    # weights) and built directly (large ones): the same array, zero past each group's
    # last channel, defined by wp[g, ob, t, j] = w[g*Og + R*ob + j, perm[t]]
    from fastconv.cpu import _common
    groups = data.draw(st.integers(1, 3))
    Og = data.draw(st.integers(1, 11))
    T = data.draw(st.integers(1, 30))
    R = data.draw(st.sampled_from([4, 5]))
    w = np.arange(groups * Og * T, dtype=np.float32).reshape(groups * Og, T) + 1
    perm = (np.random.default_rng(T).permutation(T).astype(np.int64)
            if data.draw(st.booleans()) else None)
    cached = _common.pack_weight(w, groups, R, perm)
    old = _common.PACK_INDEX_MAX
    try:
        _common.PACK_INDEX_MAX = 0
        built = _common.pack_weight(w, groups, R, perm)
    finally:
        _common.PACK_INDEX_MAX = old
    taps = np.arange(T) if perm is None else perm
    nob = -(-Og // R)
    want = np.zeros((groups, nob, T, R), np.float32)
    for g in range(groups):
        for ob in range(nob):
            for j in range(R):
                if ob * R + j < Og:
                    want[g, ob, :, j] = w[g * Og + ob * R + j, taps]
    np.testing.assert_array_equal(cached, want)
    np.testing.assert_array_equal(built, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_phase_split_matches_strided_slices(dtype, rng):
    """The polyphase split (strided forward and weight gradient) against numpy's strided
    slices: plane (c*sh + ph)*sw + pw holds xp[n, c, :, ph::sh, pw::sw], zero where a
    phase is a row or column short; odd and even extents, depths, a strided input, and
    a reused workspace holding another call's values; one large enough to run in
    parallel."""
    from fastconv.cpu import direct
    for (N, C, D, H, W), (sh, sw) in [((2, 3, 1, 9, 11), (2, 2)), ((1, 2, 3, 7, 8), (3, 2)),
                                      ((2, 1, 2, 5, 5), (1, 3)), ((1, 2, 1, 2, 1), (2, 2)),
                                      ((2, 3, 1, 229, 230), (2, 2))]:
        xp = rng.integers(-9, 10, (N, C, D, H, 2 * W)).astype(dtype)[..., ::2]
        for _ in range(2):
            got = direct._phase_split(xp, sh, sw)
            Hq, Wq = -(-H // sh), -(-W // sw)
            want = np.zeros((N, C, sh, sw, D, Hq, Wq), dtype)
            for ph in range(sh):
                for pw in range(sw):
                    src = xp[:, :, :, ph::sh, pw::sw]
                    want[:, :, ph, pw, :, :src.shape[3], :src.shape[4]] = src
            np.testing.assert_array_equal(got, want.reshape(N, C * sh * sw, D, Hq, Wq))
            xp = xp[..., ::-1].copy()
