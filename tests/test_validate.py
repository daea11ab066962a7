"""Issue-13 classes owned by validation and the planner: layers validate exactly as the
functions do, errors name the parameter at fault, a corrupt or unwritable autotune cache
is never fatal and leaves nothing behind, and a layer's cached plan keeps NaN/inf local."""
import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from fastconv import _config, dispatch, nn

from conftest import PROPERTY

BAD_PADDINGS = [((2.9, 0), (0, 0)), True, "1", ((1, 1), (1,)), 1.5, (1, 2, 3), -1,
                ((True, 0), (0, 0)), ((1, 1), (1, -1)), (np.float64(1.0), 1), None]


@pytest.mark.parametrize("padding", BAD_PADDINGS, ids=repr)
def test_conv2d_layer_rejects_what_conv2d_rejects(padding):
    x = np.ones((1, 1, 6, 6), np.float32)
    with pytest.raises((TypeError, ValueError)) as fn_err:
        fc.conv2d(x, np.ones((1, 1, 3, 3), np.float32), padding=padding)
    with pytest.raises(type(fn_err.value)) as layer_err:
        nn.Conv2d(1, 1, 3, padding=padding)
    assert "padding" in str(layer_err.value)
    # the same message, but for the function's name
    assert str(layer_err.value).split(": ", 1)[1] == str(fn_err.value).split(": ", 1)[1]


@given(padding=st.one_of(
    st.integers(-2, 3), st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
    st.tuples(*[st.tuples(st.integers(-1, 3), st.integers(-1, 3))] * 2),
    st.sampled_from(["same", "valid", "full", 2.0, (1.0, 1), True])))
@PROPERTY
def test_layer_and_function_agree_on_every_padding(padding):
    x = np.arange(2 * 7 * 7, dtype=np.float64).reshape(1, 2, 7, 7)
    try:
        want = fc.conv2d(x, np.ones((3, 2, 3, 3)), padding=padding)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            nn.Conv2d(2, 3, 3, padding=padding, bias=False, dtype=np.float64)(x)
        return
    layer = nn.Conv2d(2, 3, 3, padding=padding, bias=False, dtype=np.float64)
    layer.weight.data[...] = 1.0
    np.testing.assert_allclose(layer(x), want, rtol=1e-12)


@pytest.mark.parametrize("call,name", [
    (lambda c: fc.conv2d(np.ones((1, 1, 4, 4), c), np.ones((1, 1, 2, 2))), "input"),
    (lambda c: fc.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2), c)), "weight"),
    (lambda c: fc.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), np.ones(1, c)), "bias"),
    (lambda c: fc.conv_transpose2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)),
                                   np.ones(1, c)), "bias"),
    (lambda c: fc.conv_transpose2d(np.ones((1, 1, 3, 3), c), np.ones((1, 1, 2, 2))), "input"),
    (lambda c: fc.grad.conv2d_input((1, 1, 4, 4), np.ones((1, 1, 2, 2)),
                                    np.ones((1, 1, 3, 3), c)), "grad_output"),
    (lambda c: fc.grad.conv2d_input((1, 1, 4, 4), np.ones((1, 1, 2, 2), c),
                                    np.ones((1, 1, 3, 3))), "weight"),
    (lambda c: fc.grad.conv2d_weight(np.ones((1, 1, 4, 4), c), (1, 1, 2, 2),
                                     np.ones((1, 1, 3, 3))), "input"),
    (lambda c: fc.grad.conv2d_weight(np.ones((1, 1, 4, 4)), (1, 1, 2, 2),
                                     np.ones((1, 1, 3, 3), c)), "grad_output"),
])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_errors_name_the_parameter(call, name, dtype):
    with pytest.raises(TypeError, match=rf"\b{name} is complex"):
        call(dtype)


@pytest.mark.parametrize("size", [(3, 6), (1, 3, 6, 6, 6), (), (1, 3, 6, 6, 6, 6)])
def test_input_size_of_the_wrong_length_is_named(size):
    w = np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"input_size must have 4 or 3 entries"):
        fc.grad.conv2d_input(size, w, np.ones((1, 2, 4, 4)))


@pytest.mark.parametrize("size,go_shape", [((3, 6, 6), (1, 2, 4, 4)), ((1, 3, 6), (1, 2, 4, 4)),
                                           ((1, 3, 6, 6), (2, 4, 4))])
def test_input_size_batched_unlike_grad_output_is_named(size, go_shape):
    with pytest.raises(ValueError, match=r"input_size .* entries but grad_output"):
        fc.grad.conv2d_input(size, np.ones((2, 3, 3, 3)), np.ones(go_shape))


# --- the autotune cache ----------------------------------------------------------------------
@pytest.fixture
def tuning(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dispatch, "_memory", {})
    monkeypatch.setattr(dispatch, "_loaded", set())
    monkeypatch.setattr(_config, "AUTOTUNE", True)
    return tmp_path


@pytest.mark.parametrize("content", [b"[" * 100_000, b"{" * 100_000, b'{"a": ' * 50_000,
                                     b"\xff\xfe" * 100, b"null", b'"text"', b"3"])
def test_corrupt_cache_is_never_fatal(tuning, content, rng):
    path = tuning / "autotune.json"
    path.write_bytes(content)
    x, w = rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((3, 2, 3, 3))
    with pytest.warns(RuntimeWarning, match="autotune cache"):
        y = fc.conv2d(x, w)
    np.testing.assert_allclose(y, fc.conv2d(x, w, algorithm="direct"), rtol=1e-12)
    # the corrupt file was replaced by a valid cache holding this shape
    assert len(json.loads(path.read_text())) == 1


def test_unwritable_cache_leaves_no_temporary_files(tuning, monkeypatch, rng):
    target = tuning / "autotune.json"
    target.mkdir()                           # a directory where the cache file should be
    x, w = rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((3, 2, 3, 3))
    for _ in range(3):
        monkeypatch.setattr(dispatch, "_memory", {})
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            fc.conv2d(x, w)
        assert any("autotune cache" in str(r.message) for r in rec)
    assert sorted(os.listdir(tuning)) == ["autotune.json"]


# --- layers keep NaN/inf local (the planner's rule, cached plans included) -------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_layer_keeps_a_non_finite_pixel_local(bad, rng):
    x = rng.random((1, 3, 40, 40)).astype(np.float32)
    x[0, 1, 7, 30] = bad
    layer = nn.Conv2d(3, 1, 15)
    y0 = layer(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))   # plan cached on finite data
    assert np.isfinite(y0).all()
    y = layer(x)
    want = fc.conv2d(x, layer.weight.data, layer.bias.data, algorithm="direct")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    assert 0 < (~np.isfinite(want)).sum() < want.size
    layer.backward(np.ones_like(y))
    gw = fc.grad.conv2d_weight(x, layer.weight.shape, np.ones_like(want), algorithm="direct")
    np.testing.assert_array_equal(np.isnan(layer.weight.grad), np.isnan(gw))


@pytest.mark.parametrize("name, good, bad", [
    ("stride", 1, True), ("stride", 1, 1.0), ("stride", (1, 1), (1, True)),
    ("dilation", 1, np.float64(1)), ("groups", 1, True), ("padding", (0, 1), (0, 1.0))])
def test_checks_run_after_the_same_shape_was_cached(name, good, bad):
    # conv_spec caches its shape checks per plain arguments: a value equal to a cached one
    # (True == 1 == 1.0) must still be checked, not take the cached answer
    x, w = np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3))
    want = fc.conv2d(x, w, **{name: good})
    with pytest.raises(TypeError, match=name):
        fc.conv2d(x, w, **{name: bad})
    np.testing.assert_array_equal(fc.conv2d(x, w, **{name: good}), want)


def test_gradient_checks_cached_by_shape_give_the_uncached_answers():
    # fastconv._conv caches a gradient call's checks per shapes, dtypes and plain
    # parameters: lists and numpy ints take the uncached path, with the same results;
    # errors are raised on every call, and a new dtype is checked anew
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    go = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    gw = fc.grad.conv2d_weight(x, (4, 3, 3, 3), go)
    gx = fc.grad.conv2d_input((2, 3, 8, 8), w, go)
    for size in ([4, 3, 3, 3], (np.int64(4), 3, 3, 3)):
        np.testing.assert_array_equal(fc.grad.conv2d_weight(x, size, go, stride=[1, 1]), gw)
    np.testing.assert_array_equal(fc.grad.conv2d_input([2, 3, 8, 8], w, go), gx)
    np.testing.assert_allclose(fc.grad.conv2d_input((2, 3, 8, 8), w, go.tolist()), gx,
                               rtol=1e-5, atol=1e-5)          # (a list: float64)
    for _ in range(2):
        with pytest.raises(ValueError, match="grad_output"):
            fc.grad.conv2d_weight(x, (4, 3, 3, 3), go[:, :, :5])
        with pytest.raises(ValueError, match="grad_output"):
            fc.grad.conv2d_input((2, 3, 8, 8), w, go[:, :3])
        with pytest.raises(TypeError, match="complex"):
            fc.grad.conv2d_weight(x.astype(np.complex64), (4, 3, 3, 3), go)
        with pytest.raises(TypeError, match="stride"):
            fc.grad.conv2d_input((2, 3, 8, 8), w, go, stride=True)
    assert fc.grad.conv2d_weight(x.astype(np.float64), (4, 3, 3, 3), go).dtype == np.float64
    assert fc.grad.conv2d_input((3, 8, 8), w, go[0]).shape == (3, 8, 8)
