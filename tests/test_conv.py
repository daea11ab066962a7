"""conv1d / conv2d / conv3d: oracles (naive, scipy, torch), dtypes, shapes, out=, errors, threads."""
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv as fc
import naive
from conftest import (ALGORITHMS, CONV, CPU_ALGORITHMS, PADDING_MODES, PROPERTY, assert_close,
                      conv_configs, conv_kwargs, make_arrays, naive_conv, scipy_conv, torch_accepts,
                      torch_conv)


# --- worked examples ----------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_readme_example(algorithm):
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float64)
    w = np.array([[1, 0], [0, 1]], dtype=np.float64)
    y = fc.conv2d(x[None, None], w[None, None], algorithm=algorithm)
    assert y.shape == (1, 1, 2, 2)
    assert_close(y[0, 0], [[6, 8], [12, 14]])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_small_hand_examples(algorithm):
    # conv1d, stride 2, dilation 2, padding 1 on [1..6] with [1, 10]: taps x[p*2-1], x[p*2+1]
    x = np.arange(1.0, 7.0)[None, None]
    y = fc.conv1d(x, np.array([[[1.0, 10.0]]]), stride=2, padding=1, dilation=2,
                  algorithm=algorithm)
    # padded: [0,1,2,3,4,5,6,0]; outputs at p=0,2,4 (dilated kernel span 3, out len 3)
    assert_close(y, [[[0 + 10 * 2, 2 + 10 * 4, 4 + 10 * 6]]])
    # 'same' stride 2 on a length-5 signal, kernel 3: out 3, total pad 2 -> (1, 1)
    y = fc.conv1d(np.arange(1.0, 6.0)[None, None], np.ones((1, 1, 3)), stride=2,
                  padding="same", algorithm=algorithm)
    assert_close(y, [[[3, 9, 9]]])
    # 'same' stride 2 on a length-6 signal, kernel 2: out 3, total 0 -> no padding
    y = fc.conv1d(np.arange(1.0, 7.0)[None, None], np.ones((1, 1, 2)), stride=2,
                  padding="same", algorithm=algorithm)
    assert_close(y, [[[3, 7, 11]]])
    # 'same' stride 2, length 6, kernel 3: total = 2*2+3-6 = 1 -> (0 before, 1 after)
    y = fc.conv1d(np.arange(1.0, 7.0)[None, None], np.ones((1, 1, 3)), stride=2,
                  padding="same", algorithm=algorithm)
    assert_close(y, [[[6, 12, 11]]])
    # reflect / replicate / circular on [1, 2, 3] with padding 1 and a [1, 0, 0] kernel
    # return the padded signal's first len(x) samples: x[-1] mapped by each mode
    for mode, first in (("reflect", 2.0), ("replicate", 1.0), ("circular", 3.0), ("zeros", 0.0)):
        y = fc.conv1d(np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 0.0, 0.0]]]), padding=1,
                      padding_mode=mode, algorithm=algorithm)
        assert_close(y, [[[first, 1.0, 2.0]]])


# --- property tests against the oracles ---------------------------------------------------------
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(data=st.data())
def test_matches_naive(nd, algorithm, data):
    cfg = data.draw(conv_configs(nd))
    x, w, b = make_arrays(cfg)
    want = naive_conv(cfg, x, w, b)
    got = CONV[nd](x, w, b, **conv_kwargs(cfg), algorithm=algorithm)
    assert isinstance(got, np.ndarray) and got.flags.c_contiguous
    assert got.dtype == cfg["dtype"]
    assert_close(got, want, cfg["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(data=st.data())
def test_matches_scipy_correlate(nd, algorithm, data):
    cfg = data.draw(conv_configs(nd, unbatched=False))
    assume(cfg["stride"] in (1, (1,) * nd))
    x, w, b = make_arrays(cfg)
    pads = naive.pad_pairs(cfg["padding"], nd, x.shape[2:], w.shape[2:], 1, cfg["dilation"])
    want = scipy_conv(x, w, b, 1, pads, cfg["dilation"], cfg["groups"], cfg["padding_mode"])
    got = CONV[nd](x, w, b, **conv_kwargs(cfg), algorithm=algorithm)
    assert_close(got, want, cfg["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(data=st.data())
def test_matches_torch(nd, algorithm, data):
    pytest.importorskip("torch")
    cfg = data.draw(conv_configs(nd, unbatched=False))
    assume(torch_accepts(cfg))
    x, w, b = make_arrays(cfg)
    want = torch_conv(cfg, x, w, b)
    got = CONV[nd](x, w, b, **conv_kwargs(cfg), algorithm=algorithm)
    assert_close(got, want, cfg["dtype"])


def test_naive_matches_scipy_and_torch(rng):
    """The oracles agree with each other (so a shared mistake cannot hide)."""
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    for mode in PADDING_MODES:
        want = naive.conv(x, w, b, 1, ((2, 1), (1, 0)), (1, 2), 2, mode)
        assert_close(scipy_conv(x, w, b, 1, ((2, 1), (1, 0)), (1, 2), 2, mode), want)
    cfg = dict(nd=2, stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2)
    for mode in PADDING_MODES:
        cfg["padding_mode"] = mode
        assert_close(torch_conv(cfg, x, w, b), naive.conv(x, w, b, **conv_kwargs(cfg)))


@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
def test_auto_equals_every_algorithm(algorithm, rng):
    for nd, xs, ws in ((1, (2, 3, 9), (4, 3, 3)), (2, (2, 3, 8, 7), (4, 3, 3, 2)),
                       (3, (1, 2, 5, 4, 5), (3, 2, 2, 3, 2))):
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        auto = CONV[nd](x, w, stride=2, padding="same", dilation=1, algorithm="auto")
        assert_close(CONV[nd](x, w, stride=2, padding="same", algorithm=algorithm), auto)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_large_kernel_and_depthwise(algorithm, rng):
    # kernel spanning the whole (padded) input, depthwise with a channel multiplier
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((6, 1, 9, 9))
    b = rng.standard_normal(6)
    got = fc.conv2d(x, w, b, padding=((2, 0), (1, 3)), groups=3, padding_mode="circular",
                    algorithm=algorithm)
    assert_close(got, naive.conv(x, w, b, 1, ((2, 0), (1, 3)), 1, 3, "circular"))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", [
    # (x shape, w shape, kwargs): more channels than the property tests (channel blocks and
    # their remainders), wider rows, every padding mode
    ((2, 6, 15, 17), (10, 6, 3, 3), dict(padding=1)),
    ((2, 6, 15, 17), (10, 3, 3, 5), dict(stride=(2, 3), padding=((2, 1), (0, 3)), groups=2,
                                         padding_mode="reflect")),
    ((1, 8, 12, 20), (13, 8, 1, 1), {}),
    ((3, 12, 10, 11), (12, 1, 3, 3), dict(padding="same", groups=12, dilation=2,
                                          padding_mode="replicate")),
    ((2, 5, 33), (9, 5, 7), dict(padding=3, padding_mode="circular")),
    ((1, 3, 6, 9, 8), (7, 3, 2, 3, 3), dict(stride=(1, 2, 1), padding="same")),
], ids=lambda c: "x".join(map(str, c[0])))
def test_medium_shapes(algorithm, case, rng):
    xs, ws, kw = case
    nd = len(ws) - 2
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        got = CONV[nd](x, w, b, **kw, algorithm=algorithm)
        assert_close(got, naive.conv(x, w, b, **kw), dtype)


# --- dtypes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.bool_])
def test_int_and_bool_give_float64(algorithm, dtype, rng):
    x = rng.integers(0, 3, (2, 2, 6, 5)).astype(dtype)
    w = rng.integers(-2, 3, (3, 2, 2, 3)).astype(dtype)
    y = fc.conv2d(x, w, stride=(1, 2), padding=1, algorithm=algorithm)
    assert y.dtype == np.float64
    assert_close(y, naive.conv(x, w, None, (1, 2), 1))
    b = np.array([1, 2, 3], dtype=dtype)
    y = fc.conv1d(x[:, :, 0], w[:, :, 0], b, algorithm=algorithm)
    assert y.dtype == np.float64
    assert_close(y, naive.conv(x[:, :, 0], w[:, :, 0], b))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float16_computed_in_float32(algorithm, rng):
    x = rng.uniform(-1, 1, (2, 3, 7, 6)).astype(np.float16)
    w = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float16)
    b = rng.uniform(-1, 1, 4).astype(np.float16)
    y = fc.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert y.dtype == np.float16
    y32 = fc.conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), padding=1,
                    algorithm=algorithm)
    # computed in float32 then rounded once: equal to the float32 result rounded to float16
    np.testing.assert_array_equal(y, y32.astype(np.float16))
    assert_close(y, naive.conv(x, w, b, padding=1), np.float16)


@pytest.mark.parametrize("xdt,wdt", [(np.float32, np.float64), (np.float64, np.float32),
                                     (np.float16, np.float32), (np.int8, np.float32),
                                     (np.int64, np.float32), (np.float32, np.bool_)])
def test_mixed_dtypes_follow_result_type(xdt, wdt, rng):
    x = rng.integers(0, 3, (1, 2, 5, 5)).astype(xdt)
    w = rng.integers(0, 3, (2, 2, 2, 2)).astype(wdt)
    rt = np.result_type(x, w)
    expected = np.float64 if rt.kind in "biu" else rt
    y = fc.conv2d(x, w)
    assert y.dtype == expected
    assert_close(y, naive.conv(x, w), np.float32 if expected != np.float64 else np.float64)


@pytest.mark.parametrize("which", ["input", "weight", "bias"])
def test_complex_raises_type_error(which, rng):
    args = {"input": rng.standard_normal((1, 2, 5, 5)), "weight": rng.standard_normal((3, 2, 2, 2)),
            "bias": rng.standard_normal(3)}
    args[which] = args[which] + 1j
    with pytest.raises(TypeError, match="complex"):
        fc.conv2d(args["input"], args["weight"], args["bias"])


@pytest.mark.parametrize("bad", ["abc", [[1, 2], [3]], np.array([[object()]], dtype=object)])
def test_non_numeric_input_raises_type_error(bad):
    with pytest.raises((TypeError, ValueError), match="input"):
        fc.conv2d(bad, np.ones((1, 1, 1, 1)))


# --- shapes: unbatched, empty, zero sizes -------------------------------------------------------
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_unbatched(nd, algorithm, rng):
    x = rng.standard_normal((3,) + (5,) * nd)
    w = rng.standard_normal((2, 3) + (2,) * nd)
    b = rng.standard_normal(2)
    y = CONV[nd](x, w, b, padding=1, algorithm=algorithm)
    assert y.shape == (2,) + (6,) * nd
    assert_close(y, CONV[nd](x[None], w, b, padding=1, algorithm=algorithm)[0])
    assert_close(y, naive.conv(x, w, b, padding=1))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_empty_batch(nd, algorithm, mode):
    x = np.zeros((0, 4) + (6,) * nd, dtype=np.float32)
    w = np.ones((6, 2) + (3,) * nd, dtype=np.float32)
    y = CONV[nd](x, w, np.ones(6, np.float32), stride=2, padding=1, groups=2, padding_mode=mode,
                 algorithm=algorithm)
    assert isinstance(y, np.ndarray)
    assert y.shape == (0, 6) + (3,) * nd
    assert y.dtype == np.float32


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_zero_sizes_raise(nd):
    f = CONV[nd]
    with pytest.raises(ValueError, match=re.escape(str((1, 2) + (0,) + (4,) * (nd - 1)))):
        f(np.zeros((1, 2) + (0,) + (4,) * (nd - 1)), np.ones((1, 2) + (1,) * nd))
    with pytest.raises(ValueError, match=r"(?i)channel"):
        f(np.zeros((1, 0) + (4,) * nd), np.ones((1, 0) + (1,) * nd))
    with pytest.raises(ValueError, match=r"weight.*" + re.escape(str((1, 2) + (0,) * nd))):
        f(np.zeros((1, 2) + (4,) * nd), np.ones((1, 2) + (0,) * nd))
    with pytest.raises(ValueError, match=r"weight"):
        f(np.zeros((1, 2) + (4,) * nd), np.ones((0, 2) + (1,) * nd))


# --- array-likes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_any_array_like(algorithm, rng):
    big = rng.standard_normal((2, 6, 9, 10))
    wbig = rng.standard_normal((4, 3, 5, 6))
    bbig = rng.standard_normal(8)
    kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), algorithm=algorithm)
    views = [
        (big[:, ::2, 1:8, ::-1], wbig[:, :, ::2, ::-2], bbig[::2]),      # slices, negative strides
        (np.asfortranarray(big[:, :3]), np.asfortranarray(wbig[:, :, :3, :3]), bbig[:4]),
        (big[..., ::-1][:, 3:], wbig[:, :, ::-1, 1:4], bbig[4:][::-1]),
        (big.transpose(0, 1, 3, 2)[:, :3, :8], wbig.transpose(0, 1, 3, 2)[:, :, :2], bbig[:4]),
    ]
    for x, w, b in views:
        assert not (x.flags.c_contiguous and w.flags.c_contiguous)
        want = fc.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b),
                         **kw)
        np.testing.assert_array_equal(fc.conv2d(x, w, b, **kw), want)
        assert_close(want, naive.conv(x, w, b, (2, 1), ((1, 0), (2, 1)), (1, 2)))
    # nested lists and tuples, 1-D, 2-D, 3-D
    for nd in (1, 2, 3):
        x = rng.integers(-3, 4, (1, 2) + (4,) * nd).astype(np.float64)
        w = rng.integers(-3, 4, (2, 2) + (2,) * nd).astype(np.float64)
        got = CONV[nd](x.tolist(), w.tolist(), (1.0, -1.0), algorithm=algorithm)
        np.testing.assert_array_equal(got, CONV[nd](x, w, np.array([1.0, -1.0]), algorithm=algorithm))
        assert got.dtype == np.float64
        got = CONV[nd](x.tolist(), w.astype(int).tolist(), algorithm=algorithm)   # int lists
        assert got.dtype == np.float64
        assert_close(got, naive.conv(x, w))


def test_torch_tensor_that_requires_grad_names_the_parameter():
    torch = pytest.importorskip("torch")
    x = torch.ones(1, 1, 4, 4, requires_grad=True)
    with pytest.raises(TypeError, match=r"conv2d: input must be array-like.*detach"):
        fc.conv2d(x, np.ones((1, 1, 2, 2)))
    with pytest.raises(TypeError, match=r"conv2d_weight: grad_output must be array-like"):
        fc.grad.conv2d_weight(np.ones((1, 1, 4, 4)), (1, 1, 2, 2),
                              torch.ones(1, 1, 3, 3, requires_grad=True))
    np.testing.assert_array_equal(fc.conv2d(x.detach(), np.ones((1, 1, 2, 2))),
                                  np.full((1, 1, 3, 3), 4.0))


@pytest.mark.parametrize("nd", [1, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_array_like_1d_3d(nd, algorithm, rng):
    x = rng.standard_normal((2, 4) + (7,) * nd)[..., ::-1]
    w = np.asfortranarray(rng.standard_normal((3, 2) + (3,) * nd))
    y = CONV[nd](x[:, ::2], w, algorithm=algorithm, padding="same", padding_mode="reflect")
    want = CONV[nd](np.ascontiguousarray(x[:, ::2]), np.ascontiguousarray(w), algorithm=algorithm,
                    padding="same", padding_mode="reflect")
    np.testing.assert_array_equal(y, want)


# --- out= -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_out_written_in_place(algorithm, dtype, rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    kw = dict(stride=(2, 1), padding=1, padding_mode="replicate", algorithm=algorithm)
    want = fc.conv2d(x, w, b, **kw)
    out = np.full(want.shape, np.nan, dtype=dtype)
    res = fc.conv2d(x, w, b, **kw, out=out)
    assert res is out
    np.testing.assert_array_equal(out, want)
    # unbatched, and every rank
    out = np.full(want.shape[1:], np.nan, dtype=dtype)
    assert fc.conv2d(x[1], w, b, **kw, out=out) is out
    np.testing.assert_array_equal(out, fc.conv2d(x[1], w, b, **kw))
    assert_close(out, want[1], dtype)
    for nd in (1, 3):
        xn = rng.standard_normal((2, 3) + (5,) * nd).astype(dtype)
        wn = rng.standard_normal((4, 3) + (2,) * nd).astype(dtype)
        want = CONV[nd](xn, wn, algorithm=algorithm)
        out = np.empty_like(want)
        assert CONV[nd](xn, wn, algorithm=algorithm, out=out) is out
        np.testing.assert_array_equal(out, want)


def test_out_empty_batch():
    out = np.empty((0, 2, 3, 3))
    assert fc.conv2d(np.zeros((0, 1, 4, 4)), np.ones((2, 1, 2, 2)), out=out) is out


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_out_errors(algorithm):
    x = np.ones((2, 3, 6, 6))
    w = np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"out.*\(2, 4, 4, 3\).*\(2, 4, 4, 4\)"):
        fc.conv2d(x, w, out=np.empty((2, 4, 4, 3)), algorithm=algorithm)
    with pytest.raises(ValueError, match=r"out"):
        fc.conv2d(x, w, out=np.empty((4, 4, 4)), algorithm=algorithm)
    with pytest.raises(TypeError, match=r"out.*float32.*float64"):
        fc.conv2d(x, w, out=np.empty((2, 4, 4, 4), np.float32), algorithm=algorithm)
    with pytest.raises(TypeError, match=r"out"):
        fc.conv2d(x.astype(np.float32), w.astype(np.float32), out=np.empty((2, 4, 4, 4)),
                  algorithm=algorithm)
    with pytest.raises(ValueError, match=r"out.*contiguous"):
        fc.conv2d(x, w, out=np.empty((2, 4, 4, 8))[..., ::2], algorithm=algorithm)
    with pytest.raises(ValueError, match=r"out.*contiguous"):
        fc.conv2d(x, w, out=np.asfortranarray(np.empty((2, 4, 4, 4))), algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("alias", ["input", "input-1x1", "weight"])
def test_out_overlapping_an_operand(algorithm, alias, rng):
    # the kernels write out while they read: an overlapping out must still give the result
    if alias == "input-1x1":
        x = rng.standard_normal((4, 8, 16, 16))
        w = rng.standard_normal((8, 8, 1, 1))
        want = fc.conv2d(x, w, algorithm=algorithm)
        assert fc.conv2d(x, w, out=x, algorithm=algorithm) is x
        np.testing.assert_allclose(x, want, rtol=1e-12, atol=1e-12)
    elif alias == "input":
        x = rng.standard_normal((2, 3, 8, 8))
        w = rng.standard_normal((3, 3, 3, 3))
        want = fc.conv2d(x, w, padding=1, algorithm=algorithm)
        fc.conv2d(x, w, padding=1, out=x, algorithm=algorithm)
        np.testing.assert_allclose(x, want, rtol=1e-12, atol=1e-12)
    else:
        buf = rng.standard_normal(2 * 2 * 3 * 3 + 100)
        w = buf[:36].reshape(2, 2, 3, 3)
        x = rng.standard_normal((1, 2, 5, 5))
        want = fc.conv2d(x, w.copy(), algorithm=algorithm)
        out = buf[:2 * 3 * 3].reshape(1, 2, 3, 3)
        fc.conv2d(x, w, out=out, algorithm=algorithm)
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride", [7, 10 ** 6, 2 ** 63, 2 ** 64, (1, 2 ** 70)])
def test_stride_beyond_the_input(algorithm, stride):
    # one output position per axis: as a stride of exactly the reach, and no absurd buffers
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    w = np.ones((1, 1, 3, 3))
    got = fc.conv2d(x, w, stride=stride, algorithm=algorithm)
    s = (stride, stride) if isinstance(stride, int) else stride
    want = naive.conv(x, w, None, stride=tuple(min(v, 4) for v in s))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    gy = np.ones(got.shape)
    np.testing.assert_allclose(fc.grad.conv2d_input(x.shape, w, gy, stride=stride,
                                                    algorithm=algorithm),
                               fc.grad.conv2d_input(x.shape, w, gy, stride=tuple(min(v, 4) for v in s)))
    np.testing.assert_allclose(fc.grad.conv2d_weight(x, w.shape, gy, stride=stride,
                                                     algorithm=algorithm),
                               fc.grad.conv2d_weight(x, w.shape, gy, stride=tuple(min(v, 4) for v in s)))


def test_auto_never_runs_an_fft_over_non_finite_operands(monkeypatch, rng):
    # force the cost model's choice to fft: auto must still keep a NaN/inf local
    from fastconv import dispatch
    monkeypatch.setattr(dispatch, "estimate",
                        lambda spec, op="forward", device="cpu": {"fft": 1.0, "direct": 2.0,
                                                                  "im2col": 3.0})
    monkeypatch.setattr(dispatch, "_chosen", {})
    assert fc.choose_algorithm((1, 1, 12, 12), (1, 1, 5, 5)).algorithm == "fft"
    x = rng.standard_normal((1, 1, 12, 12))
    w = rng.standard_normal((1, 1, 5, 5))
    gy = rng.standard_normal((1, 1, 8, 8))
    for bad in ("x", "w", "gy"):
        xa, wa, ga = x.copy(), w.copy(), gy.copy()
        {"x": xa, "w": wa, "gy": ga}[bad][0, 0, 0, 0] = np.inf if bad == "w" else np.nan
        pairs = [(lambda alg: fc.conv2d(xa, wa, algorithm=alg), bad in "xw"),
                 (lambda alg: fc.grad.conv2d_input(xa.shape, wa, ga, algorithm=alg),
                  bad in ("w", "gy")),
                 (lambda alg: fc.grad.conv2d_weight(xa, wa.shape, ga, algorithm=alg),
                  bad in ("x", "gy"))]
        for f, affected in pairs:
            if not affected:
                continue
            got = f("auto")
            want = f("direct")       # NaN/inf where the sum touches them, finite elsewhere
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --- inputs are never modified ----------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_inputs_unchanged(algorithm, mode, rng):
    for nd in (1, 2, 3):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((2, 4) + (5,) * nd).astype(dtype)
            w = rng.standard_normal((6, 2) + (2,) * nd).astype(dtype)
            b = rng.standard_normal(6).astype(dtype)
            gy = rng.standard_normal((2, 6) + (3,) * nd).astype(dtype)
            copies = [a.copy() for a in (x, w, b, gy)]
            kw = dict(stride=2, padding=1, dilation=1, groups=2, padding_mode=mode,
                      algorithm=algorithm)
            CONV[nd](x, w, b, **kw)
            CONV[nd](x, w, b, **kw, out=np.empty((2, 6) + (3,) * nd, dtype))
            getattr(fc.grad, f"conv{nd}d_input")(x.shape, w, gy, **kw)
            getattr(fc.grad, f"conv{nd}d_weight")(x, w.shape, gy, **kw)
            for a, c in zip((x, w, b, gy), copies):
                np.testing.assert_array_equal(a, c)
    y = rng.standard_normal((2, 4, 3, 3))
    w = rng.standard_normal((4, 3, 2, 2))
    b = rng.standard_normal(6)
    copies = [a.copy() for a in (y, w, b)]
    fc.conv_transpose2d(y, w, b, stride=2, padding=1, output_padding=1, groups=2,
                        algorithm=algorithm)
    for a, c in zip((y, w, b), copies):
        np.testing.assert_array_equal(a, c)


# --- errors -------------------------------------------------------------------------------------
X = np.ones((1, 4, 5, 5))
W = np.ones((2, 4, 3, 3))

BAD_CONV2D = [
    # (kwargs overriding x/w/bias/..., exception, regex the message must match)
    (dict(stride=0), ValueError, r"stride.*0"),
    (dict(stride=-1), ValueError, r"stride.*-1"),
    (dict(stride=(1, 0)), ValueError, r"stride.*\(1, 0\)"),
    (dict(stride=(1, 1, 1)), ValueError, r"stride.*\(1, 1, 1\)"),
    (dict(stride=()), ValueError, r"stride"),
    (dict(stride=1.5), TypeError, r"stride.*1\.5"),
    (dict(stride=2.0), TypeError, r"stride.*2\.0"),
    (dict(stride="2"), TypeError, r"stride"),
    (dict(dilation=0), ValueError, r"dilation.*0"),
    (dict(dilation=-2), ValueError, r"dilation.*-2"),
    (dict(dilation=(1, 2, 3)), ValueError, r"dilation.*\(1, 2, 3\)"),
    (dict(dilation=1.0), TypeError, r"dilation.*1\.0"),
    (dict(padding="full"), ValueError, r"padding.*'full'"),
    (dict(padding="SAME"), ValueError, r"padding.*'SAME'"),
    (dict(padding=-1), ValueError, r"padding.*-1"),
    (dict(padding=(1, 2, 3)), ValueError, r"padding.*\(1, 2, 3\)"),
    (dict(padding=1.5), TypeError, r"padding.*1\.5"),
    (dict(padding=((1, 1),)), ValueError, r"padding.*\(\(1, 1\),\)"),
    (dict(padding=((1, 1), (1, 1), (1, 1))), ValueError, r"padding"),
    (dict(padding=((1, 1, 1), (1, 1))), ValueError, r"padding.*\(1, 1, 1\)"),
    (dict(padding=((1,), (1, 1))), ValueError, r"padding"),
    (dict(padding=((1, -1), (1, 1))), ValueError, r"padding"),
    (dict(groups=3), ValueError, r"\(1, 4, 5, 5\).*groups=3"),
    (dict(groups=0), ValueError, r"groups.*0"),
    (dict(groups=-2), ValueError, r"groups.*-2"),
    (dict(groups=1.0), TypeError, r"groups.*1\.0"),
    (dict(groups=2, weight=np.ones((3, 2, 3, 3))), ValueError, r"(?s)(groups.*\(3, 2, 3, 3\)|\(3, 2, 3, 3\).*groups)"),
    (dict(weight=np.ones((2, 3, 3, 3))), ValueError,
     r"weight has 3 input channels per group but (input|x) has 4 channels with groups=1"),
    (dict(weight=np.ones((2, 3, 3, 3)), groups=2), ValueError,
     r"(?s)weight has 3 input channels per group but (input|x) has 4 channels with groups=2"),
    (dict(bias=np.ones(3)), ValueError, r"bias.*\(3,\)"),
    (dict(bias=np.ones((2, 1))), ValueError, r"bias.*\(2, 1\)"),
    (dict(bias=np.ones(())), ValueError, r"bias"),
    (dict(padding=5, padding_mode="reflect"), ValueError, r"padding.*\(1, 4, 5, 5\)"),
    (dict(padding=((0, 0), (0, 5)), padding_mode="reflect"), ValueError, r"padding.*\(1, 4, 5, 5\)"),
    (dict(padding=6, padding_mode="circular"), ValueError, r"padding.*\(1, 4, 5, 5\)"),
    (dict(algorithm="winograd9"), ValueError, r"algorithm.*'winograd9'"),
    (dict(algorithm=None), ValueError, r"algorithm"),
    (dict(padding_mode="mirror"), ValueError, r"padding_mode.*'mirror'"),
    (dict(padding_mode="constant"), ValueError, r"padding_mode.*'constant'"),
    (dict(weight=np.ones((2, 4, 6, 3))), ValueError, r"kernel.*\(1, 4, 5, 5\).*\(2, 4, 6, 3\)"),
    (dict(weight=np.ones((2, 4, 3, 3)), dilation=3), ValueError, r"kernel.*\(1, 4, 5, 5\)"),
    (dict(input=np.ones((5, 5))), ValueError, r"input.*\(5, 5\)"),
    (dict(input=np.ones((1, 1, 4, 5, 5))), ValueError, r"input.*\(1, 1, 4, 5, 5\)"),
    (dict(weight=np.ones((4, 3, 3))), ValueError, r"weight.*\(4, 3, 3\)"),
    (dict(weight=np.ones((1, 2, 4, 3, 3))), ValueError, r"weight.*\(1, 2, 4, 3, 3\)"),
    (dict(device="tpu"), ValueError, r"device.*'tpu'"),
    (dict(stride=2 ** 64, algorithm="im2col", input=np.ones((1, 4, 2, 2))), ValueError,
     r"kernel"),
]


@pytest.mark.parametrize("kwargs,exc,pattern", BAD_CONV2D,
                         ids=[repr(c[0])[:60] for c in BAD_CONV2D])
def test_conv2d_bad_input(kwargs, exc, pattern):
    args = dict(input=X, weight=W, bias=None)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern) as info:
        fc.conv2d(**args)
    assert "numba" not in str(info.value).lower()
    assert str(info.value).startswith("conv2d")


@pytest.mark.parametrize("nd", [1, 3])
def test_conv1d_conv3d_bad_input(nd):
    f = CONV[nd]
    x = np.ones((1, 4) + (5,) * nd)
    w = np.ones((2, 4) + (3,) * nd)
    name = f"conv{nd}d"
    cases = [
        (dict(stride=(1,) * (nd + 1)), ValueError, "stride"),
        (dict(dilation=0), ValueError, "dilation"),
        (dict(padding=((1, 1),) * (nd + 1)), ValueError, "padding"),
        (dict(padding=(1, 1) if nd == 1 else ((1, 1), (1, 1))), ValueError, "padding"),
        (dict(padding=5, padding_mode="reflect"), ValueError, re.escape(str(x.shape))),
        (dict(weight=np.ones((2, 3) + (3,) * nd)), ValueError,
         r"weight has 3 input channels per group but (input|x) has 4 channels with groups=1"),
        (dict(groups=3), ValueError, "groups"),
        (dict(bias=np.ones(5)), ValueError, r"bias.*\(5,\)"),
        (dict(weight=np.ones((2, 4) + (7,) * nd)), ValueError, "kernel"),
        (dict(input=np.ones((5,) * nd)), ValueError, "input"),
        (dict(weight=np.ones((2, 4) + (3,) * (nd + 1))), ValueError, "weight"),
        (dict(algorithm="nope"), ValueError, "algorithm"),
        (dict(padding_mode="nope"), ValueError, "padding_mode"),
    ]
    for kwargs, exc, pattern in cases:
        args = dict(input=x, weight=w)
        args.update(kwargs)
        with pytest.raises(exc, match=pattern) as info:
            f(**args)
        assert str(info.value).startswith(name), str(info.value)
    # per-side padding for conv1d is one pair: ((l, r),)
    if nd == 1:
        y = f(x, w, padding=((2, 1),))
        assert y.shape == (1, 2, 6)
        assert_close(y, naive.conv(x, w, padding=((2, 1),)))


# --- threads -------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_concurrent_calls_from_threads(algorithm, rng):
    problems = []
    for i in range(8):
        x = rng.standard_normal((2, 3, 12 + i, 11)).astype(np.float32 if i % 2 else np.float64)
        w = rng.standard_normal((4, 3, 3, 3)).astype(x.dtype)
        kw = dict(stride=1 + i % 2, padding=i % 3, padding_mode=PADDING_MODES[i % 4],
                  algorithm=algorithm)
        problems.append((x, w, kw))
    serial = [fc.conv2d(x, w, **kw) for x, w, kw in problems]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            futures = [pool.submit(fc.conv2d, x, w, **kw) for x, w, kw in problems]
            for fut, want in zip(futures, serial):
                np.testing.assert_array_equal(fut.result(), want)
