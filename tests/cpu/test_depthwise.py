"""cpu/depthwise.py: depthwise convolution with the channels in the vector lanes, swept over
channel counts around the lanes, plane sizes around its tiles, strides, dilations and
zero padding read in place, against the float64 reference of tests/naive.py; its routing
(cpu/direct.runs_lanes) through fastconv.conv2d and the gradients, and the cost model's
counts of it."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv as fc
import naive
from conftest import PROPERTY, assert_close
from fastconv import dispatch
from fastconv._validate import conv_spec
from fastconv.cpu import depthwise, direct

DTYPES = [np.float32, np.float64]


def reference(x, w, b, stride, padding, dilation):
    """(N, C, H, W) depthwise with w (C, kh, kw), padding ((top, bottom), (left, right))."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + tuple(padding))
    return naive.conv(xp, w[:, None].astype(np.float64), b.astype(np.float64), stride, 0,
                      dilation, groups=x.shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
@PROPERTY
@given(data=st.data())
def test_depthwise_sweep(dtype, data):
    """Channels below, at and past whole blocks of lanes; output widths around the tiles'
    (8, 4, 2, 1 positions); strides, dilations, asymmetric zero padding read in place or
    none; a bias; the inputs untouched."""
    L = depthwise.lanes(np.dtype(dtype).itemsize)
    C = data.draw(st.sampled_from(sorted({1, 2, L - 1, L, L + 1, 2 * L, 2 * L + 3})))
    N = data.draw(st.integers(1, 2))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh, dw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    pads = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in "hw")
    H, W = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    Hp, Wp = H + sum(pads[0]), W + sum(pads[1])
    assume(Hp >= (kh - 1) * dh + 1 and Wp >= (kw - 1) * dw + 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, kh, kw)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    want = reference(x, w, b, (sh, sw), pads, (dh, dw))
    copies = [a.copy() for a in (x, w, b)]
    out = np.full(want.shape, np.nan, dtype)
    got = depthwise.depthwise(out, x, w, b, (sh, sw), (dh, dw), (pads[0][0], pads[1][0]),
                              (Hp, Wp))
    assert got is out
    assert_close(out, want, dtype)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    # the padded input itself (no origin), into a strided view of a larger output
    xp = np.pad(x, ((0, 0), (0, 0)) + pads)
    big = np.zeros(want.shape[:3] + (want.shape[3] + 3,), dtype)
    depthwise.depthwise(big[..., 1:-2], xp, w, b, (sh, sw), (dh, dw))
    assert_close(big[..., 1:-2], want, dtype)
    assert not big[..., 0].any() and not big[..., -2:].any()


@pytest.mark.parametrize("dtype", DTYPES)
@PROPERTY
@given(data=st.data())
def test_depthwise_gradients_sweep(dtype, data):
    """The input gradient (whole, or over a window: the unpadded input) and the weight
    gradient (from the padded input, or reading its zero padding in place) over the
    forward's sweep, against the float64 definitions."""
    L = depthwise.lanes(np.dtype(dtype).itemsize)
    C = data.draw(st.sampled_from(sorted({1, L - 1, L, L + 1, 2 * L + 3})))
    N = data.draw(st.integers(1, 3))
    k = data.draw(st.integers(1, 5))
    s, d, p = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2)), data.draw(st.integers(0, 3))
    H, W = data.draw(st.integers(1, 16)), data.draw(st.integers(1, 16))
    assume(H + 2 * p >= (k - 1) * d + 1 and W + 2 * p >= (k - 1) * d + 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, 1, k, k)).astype(dtype)
    go = rng.standard_normal(naive.conv(x, w, None, s, p, d, C).shape).astype(dtype)
    padded = (H + 2 * p, W + 2 * p)
    want = naive.conv_input_grad(x.shape, w, go, s, p, d, C)
    assert_close(depthwise.input_grad(go, w[:, 0], (s, s), (d, d), padded, ((p, H), (p, W))),
                 want, dtype)
    whole = depthwise.input_grad(go, w[:, 0], (s, s), (d, d), padded)
    assert whole.shape == (N, C) + padded
    assert_close(whole[:, :, p:p + H, p:p + W], want, dtype)
    want = naive.conv_weight_grad(x, w.shape, go, s, p, d, C)[:, 0]
    assert_close(depthwise.weight_grad(x, go, (k, k), (s, s), (d, d), (p, p), padded), want,
                 dtype)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    assert_close(depthwise.weight_grad(xp, go, (k, k), (s, s), (d, d)), want, dtype)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # (the reference's)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_nonfinite_in_place(dtype):
    """NaN and inf reach exactly the outputs whose taps read them (each lane, each
    position its own sums): as the definition, also for channels past the last whole
    block and positions a row's last tile computes past the plane."""
    L = depthwise.lanes(np.dtype(dtype).itemsize)
    rng = np.random.default_rng(3)
    C, H, W = L + 3, 9, 7
    x = rng.standard_normal((2, C, H, W)).astype(dtype)
    x[0, 1, 4, 6] = np.nan
    x[1, L + 1, 0, 0] = np.inf
    x[1, 2, 8, 3] = -np.inf
    w = rng.standard_normal((C, 3, 3)).astype(dtype)
    w[5 % C, 1, 1] = 0.0
    b = rng.standard_normal(C).astype(dtype)
    for stride in ((1, 1), (2, 1)):
        want = reference(x, w, b, stride, ((1, 1), (1, 1)), (1, 1))
        got = depthwise.depthwise(np.empty(want.shape, dtype), x, w, b, stride, (1, 1), (1, 1),
                                  (H + 2, W + 2))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
        fin = np.isfinite(want)
        assert_close(got[fin], want[fin], dtype, scale=np.abs(want[fin]).max())


LAYERS = [  # (N, C, H, W, k, stride, padding, dilation): small planes, strided, dilated
    (2, 20, 7, 7, 3, 1, 1, 1), (3, 9, 14, 13, 5, 1, 2, 1), (2, 16, 12, 11, 3, 2, 1, 1),
    (1, 8, 15, 15, 3, 2, 2, 2), (2, 5, 9, 30, 3, 3, 0, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_conv2d_routes_depthwise_layers_to_lanes(dtype, layer):
    """fastconv.conv2d, auto and direct, on depthwise layers the channel-lane kernel runs
    (direct.runs_lanes), against the float64 definition; the input and weight gradients
    (whose forwards run it too) against theirs; the cost model counts its work."""
    N, C, H, W, k, s, p, d = layer
    rng = np.random.default_rng(sum(layer))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, 1, k, k)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    spec = conv_spec("conv2d", 2, x, w, b, s, p, d, C, "zeros")[0]
    OH, OW = spec.out_size
    assert direct.runs_lanes(C, 1, 1, (1, k, k), (1, OH, OW), (1, s, s), (1, d, d),
                             (1, H + 2 * p, W + 2 * p), dtype)
    feats = dispatch.direct_features(spec, "forward")
    assert feats["dwlane_mac"] > 0 and feats["dwlane_task"] == N * -(-C // depthwise.lanes(
        np.dtype(dtype).itemsize))
    want = naive.conv(x, w, b, s, p, d, C)
    for algorithm in ("auto", "direct"):
        assert_close(fc.conv2d(x, w, b, s, p, d, C, algorithm=algorithm), want, dtype)
    go = rng.standard_normal(want.shape).astype(dtype)
    assert_close(fc.grad.conv2d_input(x.shape, w, go, s, p, d, C, algorithm="direct"),
                 naive.conv_input_grad(x.shape, w, go, s, p, d, C), dtype)
    assert_close(fc.grad.conv2d_weight(x, w.shape, go, s, p, d, C, algorithm="direct"),
                 naive.conv_weight_grad(x, w.shape, go, s, p, d, C), dtype)


def test_planes_whose_buffer_does_not_fit_stay_on_the_stencil():
    """Depthwise planes run on the lanes at any width whose task buffer fits; larger ones
    keep the stencil (unit stride); grouped layers of several channels per group and
    integer dtypes run neither."""
    L = depthwise.lanes(4)
    side = int((depthwise.MAX_BUFFER_BYTES // (L * 4)) ** 0.5)       # buffer just fits
    args = (8, 1, 1, (1, 3, 3))
    one = ((1, 1, 1),) * 2
    assert direct.runs_lanes(*args, (1, side - 2, side - 2), *one, (1, side, side), np.float32)
    big = side + 2
    assert not direct.runs_lanes(*args, (1, big - 2, big - 2), *one, (1, big, big), np.float32)
    assert direct.runs_stencil(*args, (1, big - 2, big - 2), *one, (1, big, big), np.float32)
    assert not direct.runs_lanes(8, 2, 2, (1, 3, 3), (1, 5, 5), *one, (1, 7, 7), np.float32)
    assert not direct.runs_lanes(*args, (1, 5, 5), *one, (1, 7, 7), np.int64)


def test_layer_reads_its_padding_in_place():
    """nn.Conv2d on a depthwise layer the lanes run keeps its input unpadded for the
    backward (no padded copy per step: the weight gradient reads the padding in place,
    it does not reuse cpu/minor.py's transposes) and its gradients match the definition."""
    rng = np.random.default_rng(5)
    N, C = 8, 32
    m = fc.nn.Conv2d(C, C, 3, padding=1, groups=C)
    assert not dispatch.lanes_weight_grad(conv_spec("t", 2, np.empty((N, C, 7, 7), np.float32),
                                                    m.weight.data, None, 1, 1, 1, C,
                                                    "zeros")[0])
    x = rng.standard_normal((N, C, 7, 7)).astype(np.float32)
    y = m(x)
    assert m._ctx["unpadded"] and m._ctx["xp5"].shape[-2:] == (7, 7)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = m.backward(gy)
    w = m.weight.data
    assert_close(gx, naive.conv_input_grad(x.shape, w, gy, 1, 1, 1, C), np.float32)
    assert_close(m.weight.grad, naive.conv_weight_grad(x, w.shape, gy, 1, 1, 1, C), np.float32)


def test_kernels_refuse_inconsistent_extents():
    """The kernels read without bounds: an output whose windows leave the padded input, or
    an input outside it, is refused rather than read past."""
    x = np.zeros((1, 8, 5, 5), np.float32)
    w = np.zeros((8, 3, 3), np.float32)
    b = np.zeros(8, np.float32)
    with pytest.raises(AssertionError):
        depthwise.depthwise(np.empty((1, 8, 5, 5), np.float32), x, w, b, (1, 1), (1, 1))
    with pytest.raises(AssertionError):
        depthwise.depthwise(np.empty((1, 8, 3, 3), np.float32), x, w, b, (1, 1), (1, 1),
                            (1, 1), (5, 5))
    with pytest.raises(AssertionError):
        depthwise.weight_grad(x, np.zeros((1, 8, 4, 4), np.float32), (3, 3), (1, 1), (1, 1))
    with pytest.raises(AssertionError):
        depthwise.input_grad(np.zeros((1, 8, 4, 4), np.float32), w, (1, 1), (1, 1), (5, 5))
