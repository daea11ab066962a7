"""fastconv's threads do not depend on import order or on what else is loaded (issue 17):
each case runs in a fresh interpreter, since the threading layer and the OpenMP runtime
are chosen once per process. No timings here: the configuration is asserted."""
import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv import _config

ROOT = str(Path(__file__).resolve().parent.parent)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs PyTorch")

_CHILD = """
import json, os, sys
for name in {first!r}:
    __import__(name)
import numpy as np
import fastconv
from fastconv import _config
assert fastconv.__file__.startswith({root!r}), fastconv.__file__
for name in {between!r}:
    __import__(name)
fastconv.conv2d(np.ones((64, 1, 28, 28), np.float32), np.ones((10, 1, 5, 5), np.float32))
for name in {after!r}:
    __import__(name)
print(json.dumps({{"info": _config.threading_info(),
                  "env": {{k: os.environ.get(k) for k in _config._WAIT_VARS}}}}))
"""


def _child(first=(), between=(), after=(), env=None):
    """threading_info() of a fresh interpreter that imports ``first``, fastconv,
    ``between``, runs one parallel conv2d, then imports ``after``."""
    code = _CHILD.format(first=list(first), between=list(between), after=list(after),
                         root=ROOT)
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                          "KMP_BLOCKTIME")}
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    res = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_threading_info_alone():
    out = _child()
    info = out["info"]
    assert info["numba_threading_layer"] == "omp" and info["numba_threads"] >= 1
    assert info["note"] is None
    assert info["openmp_runtime"] and info["openmp_wait_policy"] == ", ".join(
        f"{k}={v}" for k, v in _config.WAIT_ENV.items())
    assert info["openmp_private"] == hasattr(os, "RTLD_DEEPBIND")
    # the wait policy went to fastconv's own runtime only: the process environment,
    # read by every OpenMP library loaded later, is left as it was
    assert out["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None}


@needs_torch
def test_same_threading_with_torch_imported_first_or_after():
    alone = _child()
    assert _child(first=["torch"]) == alone
    assert _child(between=["torch"]) == alone
    assert _child(after=["torch"]) == alone     # (torch then shares fastconv's runtime)


@needs_torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libgomp on Linux")
def test_torch_keeps_its_own_runtime_in_both_orders():
    """fastconv loads its OpenMP runtime when numba starts its threads, not at import:
    torch imported after fastconv (before its first parallel call) still gets its own
    libgomp with the environment's wait policy, as when it is imported first."""
    code = ("import {0}, {1}, numpy as np, fastconv, threadpoolctl\n"
            "fastconv.conv2d(np.ones((8, 1, 28, 28)), np.ones((4, 1, 5, 5)))\n"
            "print(sorted(l.filepath for l in threadpoolctl.ThreadpoolController()"
            ".select(user_api='openmp').lib_controllers))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    libs = [subprocess.run([sys.executable, "-c", code.format(*order)], env=env, text=True,
                           capture_output=True, timeout=600).stdout.strip()
            for order in (("torch", "fastconv"), ("fastconv", "torch"))]
    assert libs[0] == libs[1] and libs[0].count("libgomp") == 2, libs


def test_user_choices_are_kept():
    active = _child(env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert active["info"]["openmp_wait_policy"] == "OMP_WAIT_POLICY=ACTIVE"
    assert active["env"]["OMP_WAIT_POLICY"] == "ACTIVE"
    wq = _child(env={"NUMBA_THREADING_LAYER": "workqueue"})["info"]
    assert wq["numba_threading_layer"] == "workqueue" and wq["openmp_runtime"] is None
    assert "chosen by the user" in wq["note"]


@needs_torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's LD_DEBUG")
def test_numba_calls_its_own_openmp_runtime_not_torchs(tmp_path):
    """The dynamic linker's own record: numba's OpenMP pool calls GOMP_parallel in the
    same library whether torch (which puts its libgomp in the global scope) was imported
    before or after fastconv."""
    targets = {}
    for order in ("first", "between"):
        out = tmp_path / order
        _child(**{order: ["torch"]}, env={"LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(out)})
        lines = [line for f in glob.glob(f"{out}.*") for line in open(f, errors="replace")
                 if "omppool" in line.split(" to ")[0] and "`GOMP_parallel'" in line]
        if not lines:
            pytest.skip("LD_DEBUG output not available")
        targets[order] = {line.split(" to ")[1].split(" [")[0] for line in lines}
    assert targets["first"] == targets["between"]
    assert not any("torch" in t for t in targets["first"]), targets


# --- configuration paths --------------------------------------------------------------
def test_cache_dir_env_override_and_platform_default(monkeypatch, tmp_path):
    import platformdirs

    from fastconv import _config
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "x"))
    assert _config.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("FASTCONV_CACHE_DIR")
    assert _config.cache_dir() == Path(platformdirs.user_cache_dir("fastconv", appauthor=False))
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert _config.cache_dir() == tmp_path / "xdg" / "fastconv"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert _config.cache_dir() == Path.home() / ".cache" / "fastconv"
