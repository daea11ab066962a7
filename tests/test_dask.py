"""Dask arrays in, lazy Dask arrays out, equal to the in-memory call (SPEC section 7).

Oracles: the in-memory fastconv call (value, shape and dtype) and, for the signal
functions, scipy.signal. Every check also asserts that the result is a lazy
``dask.array.Array`` whose declared shape and dtype equal the computed ones.
"""
import functools
import pickle
import re

import numpy as np
import pytest
import scipy.signal
from conftest import PROPERTY
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from fastconv import signal as fs

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

ND_FUNCS = ("convolve", "correlate", "fftconvolve", "oaconvolve")
FUNCS_2D = ("convolve2d", "correlate2d")
MODES = ("full", "same", "valid")
BOUNDARIES = ("fill", "wrap", "symm")


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):     # tiny tasks: no thread pool
        yield


def check_lazy(got, want):
    """``got`` is lazy and computes ``want``: value, shape and dtype (declared and computed)."""
    assert isinstance(got, da.Array), type(got)
    want = np.asarray(want)
    value = np.asarray(got.compute())
    assert got.shape == value.shape == want.shape, (got.shape, value.shape, want.shape)
    assert got.dtype == value.dtype == want.dtype, (got.dtype, value.dtype, want.dtype)
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(value, want)
    else:
        eps = {16: 2e-2, 32: 1e-4}.get(np.finfo(want.dtype).bits, 1e-10)
        scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
        np.testing.assert_allclose(value, want, rtol=eps, atol=eps * scale)
    return value


def call(fn, in1, in2, mode, **kw):
    return getattr(fs, fn)(in1, in2, mode=mode, **kw)


# --- the signal functions -------------------------------------------------------------
X = np.random.default_rng(0).standard_normal((6, 7))
K = np.random.default_rng(1).standard_normal((3, 4))
CHUNKINGS = [(4, 5), (1, 2), ((3, 1, 2), (2, 4, 1))]   # even, smaller than the halo, uneven


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn, kw", [(f, {}) for f in ND_FUNCS]
                         + [(f, dict(boundary=b, fillvalue=1.5)) for f in FUNCS_2D
                            for b in BOUNDARIES])
def test_signal_matches_in_memory_and_scipy(fn, kw, mode):
    want = call(fn, X, K, mode, **kw)
    np.testing.assert_allclose(want, getattr(scipy.signal, fn)(X, K, mode=mode, **kw),
                               rtol=1e-10, atol=1e-10)
    for chunks in CHUNKINGS:
        check_lazy(call(fn, da.from_array(X, chunks=chunks), K, mode, **kw), want)


@pytest.mark.parametrize("fn", ND_FUNCS + FUNCS_2D)
@pytest.mark.parametrize("dtypes", [("float32", "float32"), ("float64", "float32"),
                                    ("int64", "int64"), ("int8", "int16"), ("bool", "bool"),
                                    ("float16", "float16"), ("complex128", "complex128"),
                                    ("float32", "complex64"), ("int32", "float64")])
def test_signal_dtypes(fn, dtypes):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((9, 8)) * 3).astype(dtypes[0])
    b = (rng.standard_normal((3, 2)) * 3).astype(dtypes[1])
    if np.dtype(dtypes[0]).kind == "c":
        a = a + 1j * rng.standard_normal(a.shape)
    kw = dict(fillvalue=1) if fn in FUNCS_2D else {}
    check_lazy(call(fn, da.from_array(a, chunks=(4, 3)), b, "same", **kw),
               call(fn, a, b, "same", **kw))


@pytest.mark.parametrize("fn", ND_FUNCS + FUNCS_2D)
def test_signal_operand_roles(fn):
    """Kernel as dask, both dask, numpy in1 with a dask in2, in2 the larger one (the
    'valid' swap) and a kernel larger than in1 ('same'/'full', wrap and symm pads
    longer than in1)."""
    rng = np.random.default_rng(4)
    small, big = rng.standard_normal((3, 4)), rng.standard_normal((8, 9))
    i = 0
    for mode in MODES:
        for a, b in ((big, small), (small, big)):
            for da_a, da_b in ((False, True), (True, True), (True, False)):
                kw = dict(boundary=BOUNDARIES[i % 3]) if fn in FUNCS_2D else {}
                i += 1
                A = da.from_array(a, chunks=3) if da_a else a
                B = da.from_array(b, chunks=2) if da_b else b
                check_lazy(call(fn, A, B, mode, **kw), call(fn, a, b, mode, **kw))


@pytest.mark.parametrize("fn", ["fftconvolve", "oaconvolve"])
@pytest.mark.parametrize("mode", MODES)
def test_freq_axes(fn, mode):
    """``axes``: kernels varying along the other axes (sliced per chunk), broadcasting
    (in1 or in2 of length 1) and no convolved axis left (the broadcast product)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 13))
    cases = [(x, rng.standard_normal((4, 1, 3)), -1), (x, rng.standard_normal((4, 3, 5)), 2),
             (x, rng.standard_normal((1, 3, 2)), [2, 0]), (x, rng.standard_normal((4, 3, 1)), 2),
             (x[:1], rng.standard_normal((4, 3, 3)), 2),
             (x, rng.standard_normal((1, 2, 3)), (1, 2)),
             (x[:, :1], rng.standard_normal((4, 2, 20)), 2)]
    for a, b, axes in cases:
        want = call(fn, a, b, mode, axes=axes)
        np.testing.assert_allclose(want, getattr(scipy.signal, fn)(a, b, mode=mode, axes=axes),
                                   rtol=1e-10, atol=1e-10)
        check_lazy(call(fn, da.from_array(a, chunks=(3, 2, 5)), b, mode, axes=axes), want)


@st.composite
def signal_problems(draw):
    fn = draw(st.sampled_from(ND_FUNCS + FUNCS_2D))
    nd = 2 if fn in FUNCS_2D else draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(nd))
    mode = draw(st.sampled_from(MODES))
    kshape = [draw(st.integers(1, 5)) for _ in range(nd)]
    kw = {}
    if mode == "valid":
        kshape = [min(k, n) for k, n in zip(kshape, shape)]
    if fn in FUNCS_2D:
        kw = dict(boundary=draw(st.sampled_from(BOUNDARIES)),
                  fillvalue=draw(st.sampled_from([0, -2.5])))
    elif fn in ("fftconvolve", "oaconvolve"):
        axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, unique=True))
        kw = dict(axes=axes)
        kshape = [k if a in axes else draw(st.sampled_from([1, n]))
                  for a, (k, n) in enumerate(zip(kshape, shape))]
    chunks = []
    for n in shape:
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
        edges = [0] + cuts + [n]
        chunks.append(tuple(b - a for a, b in zip(edges[:-1], edges[1:])))
    seed = draw(st.integers(0, 2 ** 16))
    return fn, shape, tuple(kshape), tuple(chunks), mode, kw, seed


@PROPERTY
@given(signal_problems())
def test_signal_random_chunkings(problem):
    fn, shape, kshape, chunks, mode, kw, seed = problem
    rng = np.random.default_rng(seed)
    x, k = rng.standard_normal(shape), rng.standard_normal(kshape)
    check_lazy(call(fn, da.from_array(x, chunks=chunks), k, mode, **kw),
               call(fn, x, k, mode, **kw))


def test_signal_degenerate_inputs():
    for fn in ND_FUNCS + FUNCS_2D:                      # 0-d (ND) and empty inputs
        pairs = [(np.zeros((0, 3)), np.ones((2, 2)), "same"),
                 (np.ones((4, 3)), np.zeros((0, 2)), "full")]
        if fn in ND_FUNCS:
            pairs.append((np.array(2.5), np.array(3), "full"))
        for a, b, mode in pairs:
            try:
                want = call(fn, a, b, mode)
            except ValueError as exc:
                with pytest.raises(ValueError, match=re.escape(str(exc))):
                    call(fn, da.from_array(a), b, mode)
                continue
            check_lazy(call(fn, da.from_array(a), b, mode), want)


def _boom(*args):
    raise AssertionError("a dask input was computed while building the graph")


def poisoned(shape, dtype=float, chunks=4):
    """A dask array that fails if anything computes it."""
    return da.map_blocks(_boom, da.zeros(shape, chunks=chunks), dtype=dtype)


@pytest.mark.parametrize("fn", ND_FUNCS + FUNCS_2D)
def test_signal_builds_lazily(fn):
    assert set(fs.__all__) == set(ND_FUNCS + FUNCS_2D) | {"choose_conv_method"}   # all covered
    for mode in MODES:
        y = call(fn, poisoned((12, 10)), np.ones((3, 3)), mode)
        assert isinstance(y, da.Array)
        assert y.shape == call(fn, np.ones((12, 10)), np.ones((3, 3)), mode).shape
    assert fs.choose_conv_method(poisoned((12, 10)), np.ones((3, 3))) in ("direct", "fft", "oa")


@pytest.mark.parametrize("fn, args, kw", [
    ("convolve", ((5, 6), (5,)), {}),                    # dimensionality
    ("correlate", ((5, 6), (2, 2)), dict(mode="bad")),
    ("convolve", ((5, 6), (2, 2)), dict(method="bad")),
    ("convolve", ((5, 2), (3, 4)), dict(mode="valid")),  # neither fits
    ("fftconvolve", ((5, 2), (3, 4)), dict(mode="valid")),
    ("fftconvolve", ((5, 6), (4, 2)), dict(axes=1)),     # incompatible shapes
    ("oaconvolve", ((5, 6), (4, 2)), dict(axes=3)),
    ("convolve2d", ((5, 6, 1), (2, 2, 1)), {}),
    ("correlate2d", ((5, 6), (2, 2)), dict(boundary="bad")),
    ("convolve2d", ((5, 6), (2, 2)), dict(fillvalue=[1, 2])),
    ("convolve2d", ((5, 6), (2, 2)), dict(fillvalue=1j)),
])
def test_signal_errors_as_in_memory(fn, args, kw):
    a, b = (np.ones(s) for s in args)
    with pytest.raises(Exception) as want:
        getattr(fs, fn)(a, b, **kw)
    with pytest.raises(want.type) as got:
        getattr(fs, fn)(poisoned(a.shape, chunks=2), b, **kw)
    assert str(got.value) == str(want.value)


def _unknown_chunks():
    x = da.ones((4, 6, 6), chunks=2)
    return x[x[:, 0, 0] > 0]                             # shape (nan, 6, 6)


@pytest.mark.parametrize("fn", ND_FUNCS + FUNCS_2D + ("choose_conv_method", "conv2d"))
def test_unknown_chunk_sizes_raise_clearly(fn):
    x = _unknown_chunks()
    if fn == "conv2d":
        calls = [("input", lambda: fc.conv2d(x[:, None], np.ones((1, 1, 3, 3))))]
    elif fn in FUNCS_2D:
        calls = [("in1", lambda: getattr(fs, fn)(x[:, 0], np.ones((3, 3)))),
                 ("in2", lambda: getattr(fs, fn)(np.ones((9, 9)), x[:, 0]))]
    else:
        calls = [("in1", lambda: getattr(fs, fn)(x, np.ones((2, 3, 3)))),
                 ("in2", lambda: getattr(fs, fn)(np.ones((2, 3, 3)), x))]
    for name, f in calls:
        with pytest.raises(ValueError, match=rf"{fn}: {name} .*unknown chunk sizes.*"
                                             rf"{name}\.compute_chunk_sizes\(\)"):
            f()


def test_graph_pickles():
    """No closures, lambdas or huge captured arrays: graphs travel to other processes."""
    ys = [fs.fftconvolve(da.ones((8, 8), chunks=3), np.ones((8, 3)), axes=1),
          fs.correlate2d(da.ones((8, 8), chunks=3), np.ones((3, 3)), boundary="symm"),
          fc.conv2d(da.ones((2, 1, 8, 8), chunks=3), np.ones((1, 1, 3, 3)))]
    for y in ys:
        assert len(pickle.dumps(dict(y.__dask_graph__()))) < 100_000
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(y)).compute(), y.compute())


def _counted(x, chunks, log):
    """``x`` as a dask array whose blocks append their location to ``log`` when
    computed (a graph-time computation shows up before ``compute`` is called)."""
    return da.map_blocks(functools.partial(_count_block, log=log),
                         da.from_array(x, chunks=chunks), dtype=x.dtype)


def _count_block(block, log, block_info=None):
    log.append(tuple(tuple(r) for r in block_info[0]["array-location"]))
    return block


@pytest.mark.parametrize("fn, in1_dask, mode, kw", [
    ("convolve2d", False, "full", {}),
    ("correlate2d", False, "full", {}),
    ("correlate2d", True, "full", dict(boundary="fill", fillvalue=0.0)),
    ("convolve", True, "full", {}),
    ("correlate", True, "full", {}),
    ("fftconvolve", False, "full", {}),
    ("oaconvolve", True, "full", {}),
    ("fftconvolve", False, "same", {}),
    ("convolve", True, "same", {}),
    ("correlate", False, "same", {}),
    ("convolve2d", True, "same", {}),
    ("correlate2d", False, "same", {}),
])
def test_larger_dask_in2_stays_lazy_and_chunked(fn, in1_dask, mode, kw):
    """A larger dask in2 is the data: never computed while the graph is built, the
    'full' result chunked like it; only in1 (the smaller) is computed. Values equal the
    in-memory call's (complex: correlate's conjugate on the right operand)."""
    big_poison = poisoned((40, 36), chunks=(10, 12))
    small = np.ones((3, 4))
    y = call(fn, da.from_array(small) if in1_dask else small, big_poison, mode, **kw)
    assert isinstance(y, da.Array)
    assert y.shape == call(fn, small, np.ones((40, 36)), mode, **kw).shape
    if mode == "full":
        assert y.numblocks == big_poison.numblocks
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    b = rng.standard_normal((13, 11)) + 1j * rng.standard_normal((13, 11))
    log = []
    B = _counted(b, (5, 4), log)
    y = call(fn, da.from_array(a, chunks=2) if in1_dask else a, B, mode, **kw)
    assert log == []                                          # in2 not computed yet
    check_lazy(y, call(fn, a, b, mode, **kw))


def test_same_mode_larger_dask_in2_reads_only_the_window():
    """'same' with a larger dask in2 reads only the in2 blocks under in1's window."""
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((40, 40))
    log = []
    y = fs.convolve(a, _counted(b, 10, log), mode="same")
    assert log == [] and y.shape == (3, 3)
    check_lazy(y, fs.convolve(a, b, mode="same"))
    assert set(log) == {((10, 20), (10, 20)), ((10, 20), (20, 30)),
                        ((20, 30), (10, 20)), ((20, 30), (20, 30))}


@pytest.mark.parametrize("bnd, a_shape, k_shape", [("wrap", (3, 3), (91, 91)),
                                                   ("symm", (2, 3), (71, 5)),
                                                   ("wrap", (4, 40), (30, 39))])
def test_periodic_pad_longer_than_the_input_has_a_small_graph(bnd, a_shape, k_shape):
    """A 'wrap'/'symm' extension many times the input's length: one gather per block,
    not one slice per period."""
    rng = np.random.default_rng(9)
    a, k = rng.standard_normal(a_shape), rng.standard_normal(k_shape)
    for mode in ("full", "same"):
        y = fs.convolve2d(da.from_array(a, chunks=1), k, mode=mode, boundary=bnd)
        blocks = int(np.prod(da.from_array(a, chunks=1).numblocks))
        assert len(y.__dask_graph__()) <= 40 * blocks + 200, len(y.__dask_graph__())
        check_lazy(y, fs.convolve2d(a, k, mode=mode, boundary=bnd))


def test_fft_nan_stays_in_its_blocks_as_documented():
    """The documented exception: with the FFT methods a NaN spreads over the whole
    in-memory result but only over the dask blocks that read it; finite inputs match."""
    assert "NaN or inf input spreads" in " ".join(fs.__doc__.split())
    x = np.ones((40, 40))
    check_lazy(fs.fftconvolve(da.from_array(x, chunks=10), np.ones((3, 3))),
               fs.fftconvolve(x, np.ones((3, 3))))
    x[2, 2] = np.nan
    want = fs.fftconvolve(x, np.ones((3, 3)))
    assert np.isnan(want).all()
    got = fs.fftconvolve(da.from_array(x, chunks=10), np.ones((3, 3))).compute()
    assert np.isnan(got[:5, :5]).all() and np.isfinite(got[20:, 20:]).all()


def test_choose_conv_method_reads_an_integer_dask_input_once():
    log = []
    x = _counted(np.arange(600, dtype=np.int64).reshape(20, 30), 10, log)
    assert fs.choose_conv_method(x, np.ones((3, 3), np.int64)) in ("direct", "fft", "oa")
    assert len(log) == len(set(log)) == 6, log                 # each block computed once


def test_distributed_client():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 12, 10))
    w = rng.standard_normal((4, 3, 3, 3))
    ys = {"conv2d": (fc.conv2d(da.from_array(x, chunks=(1, 3, 5, 4)), w, padding=1),
                     fc.conv2d(x, w, padding=1))}
    for fn in ND_FUNCS + FUNCS_2D:
        kw = dict(boundary="wrap") if fn in FUNCS_2D else {}
        ys[fn] = (call(fn, da.from_array(x[0, 0], chunks=4), w[0, 0], "same", **kw),
                  call(fn, x[0, 0], w[0, 0], "same", **kw))
    assert all(isinstance(y, da.Array) for y, _ in ys.values())
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        got = client.compute([y for y, _ in ys.values()], sync=True)
    for value, (y, want) in zip(got, ys.values()):
        assert value.dtype == y.dtype == want.dtype
        np.testing.assert_allclose(value, want, atol=1e-12)


# --- conv1d / conv2d / conv3d ---------------------------------------------------------
CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=(1, 3), padding="same", dilation=2, groups=2, padding_mode="reflect"),
    dict(padding=((2, 1), (0, 3)), padding_mode="circular", algorithm="fft"),
    dict(padding=2, padding_mode="replicate", algorithm="im2col"),
]


@pytest.mark.parametrize("kw", CASES)
def test_conv2d_dask_matches_numpy(kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 23, 19))
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 4))
    b = rng.standard_normal(6)
    dx = da.from_array(x, chunks=(2, 4, 8, 7))         # batch and spatial chunks
    y = fc.conv2d(dx, w, b, **kw)
    assert isinstance(y, da.Array)
    expected = fc.conv2d(x, w, b, **kw)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert len(y.chunks[0]) == 3                          # batch chunks map one to one
    np.testing.assert_allclose(y.compute(), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_dtypes_and_small_chunks():
    """Declared dtype == computed dtype == in-memory dtype (float16 computes in float32
    and returns float16; integers return float64), for chunks smaller than the halo."""
    rng = np.random.default_rng(2)
    w16 = np.ones((1, 1, 3, 3), np.float16)
    y = fc.conv2d(da.ones((2, 1, 6, 6), dtype=np.float16, chunks=3), w16)     # the repro
    check_lazy(y, fc.conv2d(np.ones((2, 1, 6, 6), np.float16), w16))
    for dtype in (np.float16, np.float32, np.float64, np.int32):
        x = (rng.standard_normal((3, 2, 9, 8)) * 4).astype(dtype)
        w = (rng.standard_normal((4, 2, 4, 3)) * 4).astype(dtype)
        for kw in (dict(), dict(stride=3, padding=2, dilation=2, padding_mode="circular")):
            want = fc.conv2d(x, w, **kw)
            for chunks in ((2, 1, 3, 2), (3, 2, (4, 1, 4), (1, 6, 1))):
                check_lazy(fc.conv2d(da.from_array(x, chunks=chunks), w, **kw), want)


def test_conv1d_conv3d_and_unbatched():
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((3, 2, 40))
    w1 = rng.standard_normal((4, 2, 5))
    np.testing.assert_allclose(fc.conv1d(da.from_array(x1, chunks=(1, 2, 9)), w1, stride=3).compute(),
                               fc.conv1d(x1, w1, stride=3), atol=1e-12)
    x3 = rng.standard_normal((6, 7, 9, 9))                # unbatched conv3d: (C, D, H, W)
    w3 = rng.standard_normal((3, 6, 2, 3, 2))
    y3 = fc.conv3d(da.from_array(x3, chunks=(6, 4, 5, 5)), w3, padding=1)
    np.testing.assert_allclose(y3.compute(), fc.conv3d(x3, w3, padding=1), atol=1e-12)


def test_dask_is_lazy_and_validates_eagerly():
    x = da.zeros((2, 3, 8, 8), chunks=(1, 3, 8, 8))
    with pytest.raises(ValueError, match="weight has 2 input channels per group"):
        fc.conv2d(x, np.zeros((4, 2, 3, 3)))
    y = fc.conv2d(x, np.ones((4, 3, 3, 3), np.float32))
    assert y.dtype == np.float64 and y.shape == (2, 4, 6, 6)
    y = fc.conv2d(poisoned((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), padding=1)
    assert isinstance(y, da.Array) and y.shape == (2, 4, 8, 8)
