"""numba.cuda for the GPU test modules: the real GPU when one is present (and no simulator
variable is set), else numba's CUDA simulator, switched on before numba.cuda is first
imported. Importing this module skips the importing test module when neither is usable.

    from cudasim import SIM, cuda, hardware_launch_rules, rt

``hardware_launch_rules`` is an autouse fixture: importing it into a test module makes the
simulator reject, in that module, the launches and reshapes that real CUDA rejects.
"""
import ctypes
import os
import sys

import numpy as np
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


def _launch_dims(d):
    return tuple(int(v) for v in d) if isinstance(d, (tuple, list)) else (int(d),)


@pytest.fixture(autouse=True)
def hardware_launch_rules(monkeypatch):
    """Under the simulator, reject what real CUDA rejects but the simulator runs: a zero
    (or oversized) grid or block dimension (CUDA_ERROR_INVALID_VALUE on hardware), and a
    reshape of a device array that needs a copy (DeviceNDArray raises NotImplementedError;
    the simulator copies, losing in-place writes)."""
    if not SIM:
        return
    from numba.cuda.simulator import kernel as simkernel
    from numba.cuda.simulator.cudadrv import devicearray as simarray
    launch = simkernel.FakeCUDAKernel.__getitem__
    reshape = simarray.FakeCUDAArray.reshape

    def getitem(self, config):
        grid, block = _launch_dims(config[0]), _launch_dims(config[1])
        name = getattr(self.fn, "__name__", self.fn)
        assert all(g >= 1 for g in grid) and all(b >= 1 for b in block), \
            f"{name}: launch with a zero dimension, grid {grid} block {block}"
        assert grid[0] < 2**31 and all(g <= 65535 for g in grid[1:]), f"{name}: grid {grid}"
        assert int(np.prod(block)) <= 1024, f"{name}: block {block}"
        return launch(self, config)

    def faithful_reshape(self, *shape, **kwargs):
        # numba.cuda's DeviceNDArray.reshape: any new shape of an array that is neither C-
        # nor F-contiguous raises, even where NumPy could make a view
        new = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if (tuple(new) != tuple(self.shape) and self.size
                and not (self.is_c_contiguous() or self.is_f_contiguous())):
            raise NotImplementedError("operation requires copying")
        return reshape(self, *shape, **kwargs)

    monkeypatch.setattr(simkernel.FakeCUDAKernel, "__getitem__", getitem)
    monkeypatch.setattr(simarray.FakeCUDAArray, "reshape", faithful_reshape)
