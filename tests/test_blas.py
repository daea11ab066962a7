"""fastconv.cpu._blas: NumPy's BLAS single-threaded inside im2col's tiled path, through
threadpoolctl (issue 15). The im2col results themselves are checked in test_conv.py."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import threadpoolctl

from fastconv.cpu import _blas


@pytest.fixture
def api():
    api = _blas._api()
    if not api:
        pytest.skip("NumPy's BLAS cannot be set through threadpoolctl here")
    return api


def _threads_of(lib):
    return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}[lib.filepath]


def test_single_threaded_inside_restored_after(api):
    before = [_threads_of(lib) for lib in api.libs]
    with _blas.single_threaded() as ok:
        assert ok
        assert [_threads_of(lib) for lib in api.libs] == [1] * len(api.libs)
        with _blas.single_threaded() as ok2:               # nested: one shared switch
            assert ok2 and _blas._state["users"] == 2
        assert [_threads_of(lib) for lib in api.libs] == [1] * len(api.libs)
    assert [_threads_of(lib) for lib in api.libs] == before
    assert _blas._state["users"] == 0


def test_only_numpys_blas_is_set(api):
    import numpy as np
    numpy_dirs = ("numpy.libs", "numpy")
    for lib in api.libs:
        assert "scipy.libs" not in lib.filepath and "torch" not in lib.filepath
    found = [lib for lib in api.libs if any(d in lib.filepath for d in numpy_dirs)]
    if "scipy-openblas" in str(np.show_config(mode="dicts")).lower():
        assert found


def test_concurrent_users_first_sets_last_restores(api):
    """Threads enter and leave in overlapping order; the count is restored by whichever
    leaves last, even when that is not the thread that set it."""
    before = api.get()
    inside = threading.Barrier(4)

    def user(_):
        with _blas.single_threaded() as ok:
            inside.wait(timeout=30)
            assert ok and api.get() == 1
            inside.wait(timeout=30)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            list(pool.map(user, range(4)))
            assert api.get() == before and _blas._state["users"] == 0


def test_threadpool_limits_still_works_after_us_in_another_thread(api):
    """threadpoolctl >= 3.8 lets only one thread change a pthreads OpenBLAS; our changes
    from a worker thread must not keep that role from the user's main thread."""
    before = api.get()
    with ThreadPoolExecutor(max_workers=1) as pool:            # that thread stays alive
        pool.submit(_enter_and_leave).result()
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert api.get() == 1
    assert api.get() == before


def _enter_and_leave():
    with _blas.single_threaded() as ok:
        assert ok


def test_controller_looked_up_once(api, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("threadpoolctl lookup per call")
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", boom)
    for _ in range(3):
        with _blas.single_threaded() as ok:
            assert ok


def test_no_settable_blas_yields_false(monkeypatch):
    monkeypatch.setitem(_blas._state, "api", ())
    with _blas.single_threaded() as ok:
        assert ok is False
    assert _blas.libraries() == []
