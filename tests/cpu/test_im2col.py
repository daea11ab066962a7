"""cpu/im2col.py and cpu/_blas.py internals: blocked and tiled paths, worker pools,
BLAS threading under concurrency and fork (and the FFT's memory-bounded blocks)."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv as fc
import naive
from conftest import CONV, assert_close


@pytest.mark.parametrize("algorithm", ["im2col", "fft", "auto"])
def test_memory_bounded_blocking(algorithm, monkeypatch, rng):
    """The column matrix / FFT buffers are built in blocks of images or rows when they
    exceed a memory budget: force the smallest budget so every blocked path runs."""
    from fastconv.cpu import fft, im2col
    monkeypatch.setattr(im2col, "COL_BUDGET_BYTES", 64, raising=False)
    monkeypatch.setattr(fft, "FFT_BUDGET_BYTES", 64, raising=False)
    for nd, xs, ws in ((2, (3, 4, 7, 6), (6, 2, 3, 2)), (1, (3, 4, 11), (6, 2, 3)),
                       (3, (2, 4, 4, 5, 4), (6, 2, 2, 3, 2))):
        x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
        kw = dict(stride=2 if nd != 2 else (2, 1), padding=1, dilation=1 if nd != 2 else (1, 2),
                  groups=2)
        want = naive.conv(x, w, b, **kw)
        assert_close(CONV[nd](x, w, b, **kw, algorithm=algorithm), want)
        gy = rng.standard_normal(want.shape)
        gin = getattr(fc.grad, f"conv{nd}d_input")
        gwt = getattr(fc.grad, f"conv{nd}d_weight")
        assert_close(gin(x.shape, w, gy, **kw, algorithm=algorithm),
                     naive.conv_input_grad(x.shape, w, gy, **kw))
        assert_close(gwt(x, w.shape, gy, **kw, algorithm=algorithm),
                     naive.conv_weight_grad(x, w.shape, gy, **kw))


@pytest.mark.parametrize("groups", [1, 2])
def test_im2col_stacked_blocks_and_reused_scratch(groups, monkeypatch, rng):
    """Large images without a controllable BLAS: blocks of images, one column matrix each,
    multiplied by stacked GEMMs straight into the output (forced here with small budgets);
    the scratch memory they reuse between calls never leaks into earlier results."""
    from fastconv.cpu import _blas, im2col
    monkeypatch.setitem(_blas._state, "api", ())          # as if NumPy's BLAS were not OpenBLAS
    monkeypatch.setattr(im2col, "BATCH_BELOW_BYTES", 1)
    x, w, b = rng.standard_normal((5, 4, 9, 8)), rng.standard_normal((6, 4 // groups, 3, 2)), \
        rng.standard_normal(6)
    per_image = 4 * 3 * 2 * 7 * 7 * 8             # column matrix of one image, bytes
    monkeypatch.setattr(im2col, "COL_BUDGET_BYTES", int(2.5 * per_image))   # 2 + 2 + 1
    kw = dict(groups=groups, dilation=(1, 1))
    want = naive.conv(x, w, b, **kw)
    got = fc.conv2d(x, w, b, **kw, algorithm="im2col")
    assert_close(got, want)
    kept = got.copy()
    fc.conv2d(rng.standard_normal((3, 4, 12, 11)), w, b, **kw, algorithm="im2col")
    np.testing.assert_array_equal(got, kept)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("n_images", [1, 3])
@pytest.mark.parametrize("tile_rows", [1, 2, 100])
def test_im2col_tiles_per_thread(groups, n_images, tile_rows, monkeypatch, rng):
    """Large images with OpenBLAS: our threads take tiles of output rows (here 1 or 2 rows,
    or whole images), each gathered and multiplied by a single-threaded GEMM; 3-D, strided,
    dilated and grouped, checked against the naive reference. BLAS gets its thread count
    back afterwards."""
    import numba

    from fastconv.cpu import _blas, im2col
    monkeypatch.setattr(im2col, "BATCH_BELOW_BYTES", 1)
    x = rng.standard_normal((n_images, 4, 5, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4 // groups, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=(1, 2, 1), padding=(0, 1, 2), dilation=(2, 1, 2), groups=groups)
    OW = 8 + 4 - 2 - 1 + 1
    monkeypatch.setattr(im2col, "CHUNK_BYTES", tile_rows * 4 // groups * 12 * OW * groups * 4)
    want = naive.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    calls = []
    for name in ("_fwd_image_per_thread", "_wgrad_image_per_thread"):
        tiled = getattr(im2col, name)
        monkeypatch.setattr(im2col, name, lambda *a, f=tiled, n=name: calls.append(n) or f(*a))
    api = _blas._api()
    before = api[1]() if api else None
    got = fc.conv3d(x, w, b, **kw, algorithm="im2col")
    assert_close(got, want)
    # the weight gradient: the same tiles, each thread's GEMMs summed into its own part
    gy = rng.standard_normal(got.shape)
    want_gw = naive.conv_weight_grad(x.astype(np.float64), w.shape, gy, **kw)
    gw = fc.grad.conv3d_weight(x, w.shape, gy.astype(np.float32), **kw, algorithm="im2col")
    assert_close(gw, want_gw)
    # the tiles are dealt out statically: the same sums in the same order every call
    for _ in range(3):
        np.testing.assert_array_equal(
            fc.grad.conv3d_weight(x, w.shape, gy.astype(np.float32), **kw, algorithm="im2col"), gw)
    if api and numba.get_num_threads() > 1:
        assert calls == ["_fwd_image_per_thread"] + ["_wgrad_image_per_thread"] * 4
        assert api[1]() == before


def _im2col_tiles_in_child(queue):
    from fastconv.cpu import im2col
    im2col.BATCH_BELOW_BYTES = 1
    x = np.arange(2 * 3 * 9 * 8, dtype=np.float64).reshape(2, 3, 9, 8)
    queue.put(fc.conv2d(x, np.ones((4, 3, 2, 2)), algorithm="im2col"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_im2col_tiles_after_fork(monkeypatch):
    """A child forked after im2col's worker pool started gets a pool of its own (a copy of
    the parent's would have no threads and hang)."""
    import multiprocessing

    from fastconv.cpu import im2col
    monkeypatch.setattr(im2col, "BATCH_BELOW_BYTES", 1)
    x = np.arange(2 * 3 * 9 * 8, dtype=np.float64).reshape(2, 3, 9, 8)
    want = fc.conv2d(x, np.ones((4, 3, 2, 2)), algorithm="im2col")     # starts the pool
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_im2col_tiles_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(got, want)


_MIXED_THREADS = """
import threading, numpy as np, numba, fastconv as fc
from fastconv.cpu import im2col
im2col.BATCH_BELOW_BYTES = 1
rng = np.random.default_rng(0)
x, w = rng.standard_normal((2, 4, 12, 11)), rng.standard_normal((6, 4, 3, 3))
ref = fc.conv2d(x, w, algorithm="direct")
errors = []
def run(threads):
    numba.set_num_threads(threads)
    for _ in range(30):
        try:
            np.testing.assert_allclose(fc.conv2d(x, w, algorithm="im2col"), ref, atol=1e-9)
        except Exception as exc:
            errors.append(repr(exc))
ts = [threading.Thread(target=run, args=(n,)) for n in (2, 3, 4, 2)]
[t.start() for t in ts]
[t.join() for t in ts]
assert not errors, errors[:3]
"""


def test_im2col_tiles_callers_with_different_thread_counts():
    """Python threads that set different numba thread counts share im2col's tiled path:
    each count has its own worker pool, none is shut down under another caller."""
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    res = subprocess.run([sys.executable, "-c", _MIXED_THREADS], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def _blas_state_in_child(queue):
    from fastconv.cpu import _blas
    api = _blas._api()
    queue.put((_blas._state["users"], api[1]() if api else None))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_inside_blas_single_threaded_section():
    """A child forked while another thread is in im2col's single-threaded-BLAS section
    gets BLAS's thread count back (no thread of the child would ever leave it)."""
    import multiprocessing

    from fastconv.cpu import _blas
    api = _blas._api()
    if not api:
        pytest.skip("NumPy's BLAS is not a recognised OpenBLAS")
    before = api[1]()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with _blas.single_threaded():
        child = ctx.Process(target=_blas_state_in_child, args=(queue,))
        child.start()
    try:
        users, threads = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
    assert users == 0 and threads == before
    assert api[1]() == before


def test_concurrent_im2col_tiles_restore_blas_threads(monkeypatch, rng):
    """Several threads in im2col's tiled path at once (it runs NumPy's BLAS single-threaded
    while any of them is inside): right results, and BLAS gets its thread count back."""
    from fastconv.cpu import _blas, im2col
    monkeypatch.setattr(im2col, "BATCH_BELOW_BYTES", 1)
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    problems = [(rng.standard_normal((3, 4, 10 + i, 9)), rng.standard_normal((5, 4, 3, 2)))
                for i in range(6)]
    want = [naive.conv(x, w, None, padding=1) for x, w in problems]
    api = _blas._api()
    before = api[1]() if api else None
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            futures = [pool.submit(fc.conv2d, x, w, padding=1, algorithm="im2col")
                       for x, w in problems]
            for fut, ref in zip(futures, want):
                assert_close(fut.result(), ref)
    if api:
        assert api[1]() == before and _blas._state["users"] == 0
