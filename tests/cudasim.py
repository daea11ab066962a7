"""numba.cuda for the GPU test modules: the real GPU when one is present (and no simulator
variable is set), else numba's CUDA simulator, switched on before numba.cuda is first
imported. Importing this module skips the importing test module when neither is usable.

    from cudasim import SIM, cuda, rt
"""
import ctypes
import os
import sys

import pytest


def _gpu_present() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        n = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0
    except (OSError, AttributeError):
        return False


_WANT_SIM = not _gpu_present()
if _WANT_SIM and "numba.cuda" not in sys.modules:
    _old = os.environ.get("NUMBA_ENABLE_CUDASIM")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        from numba.core import config as _config
        _config.reload_config()
        cuda = pytest.importorskip("numba.cuda")
    finally:
        # numba.cuda stays the simulator in this process; subprocesses see the old setting
        if _old is None:
            os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
        else:
            os.environ["NUMBA_ENABLE_CUDASIM"] = _old
else:
    cuda = pytest.importorskip("numba.cuda")

from fastconv.cuda import runtime as rt  # noqa: E402

SIM = rt.simulator()
if _WANT_SIM and not SIM:
    pytest.skip("numba.cuda was imported without the simulator and there is no GPU",
                allow_module_level=True)
