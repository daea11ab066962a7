"""``fastconv.show_config()``: what fastconv runs on, for bug reports and tuning.

Every probe is defensive: a missing optional package, an absent GPU, an unreadable
cache or a module that moved prints as such and never raises. Nothing here is imported
by ``import fastconv`` until ``show_config`` is called.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

_ISA_LEVELS = (  # (label, features that must all be present), best first
    ("AVX-512", ("avx512f",)),
    ("AVX2+FMA", ("avx2", "fma")),
    ("AVX2", ("avx2",)),
    ("AVX", ("avx",)),
    ("SSE4.2", ("sse4.2",)),
    ("NEON", ("neon",)),
    ("SVE", ("sve",)),
)
_ENV_VARS = ("FASTCONV_CACHE_DIR", "FASTCONV_DATA_DIR", "FASTCONV_AUTOTUNE",
             "FASTCONV_PRECISION", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER",
             "NUMBA_CACHE_DIR", "NUMBA_ENABLE_CUDASIM", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
             "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def show_config(mode="stdout", file=None):
    """Print (or return) the versions, hardware and settings fastconv runs with.

    Sections: fastconv and Python; dependency versions (numba, llvmlite, NumPy, SciPy and
    the optional packages); the CPU as numba/LLVM sees it (model, cores, vector ISA);
    numba's threads and threading layer; the BLAS libraries and their threads; the cache
    directories and the autotune cache's size; the cost model file and the machine it
    was fitted on; CUDA; Dask; the environment variables that change fastconv's
    behaviour. Also ``python -m fastconv``.

    Parameters
    ----------
    mode : {"stdout", "dicts"}, optional
        ``"stdout"`` (default) prints a readable report; ``"dicts"`` returns it as a
        dict of sections (each a dict) and prints nothing.
    file : file-like, optional
        Where ``"stdout"`` mode writes (default: ``sys.stdout``).

    Returns
    -------
    dict or None
        The report when ``mode="dicts"``, else None.

    Examples
    --------
    >>> import fastconv as fc
    >>> info = fc.show_config(mode="dicts")
    >>> info["fastconv"]["version"] == fc.__version__
    True
    >>> sorted(info)[:4]
    ['BLAS', 'CPU', 'CUDA', 'Caches']
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts', got {mode!r}")
    info = config_dict()
    if mode == "dicts":
        return info
    print(format_config(info), file=file if file is not None else sys.stdout)
    return None


def config_dict() -> dict:
    """The report as a dict of sections; every probe guarded."""
    sections = {}
    for name, probe in (("fastconv", _fastconv), ("Python", _python),
                        ("Dependencies", _dependencies), ("CPU", _cpu),
                        ("Threading", _threading), ("BLAS", _blas), ("Caches", _caches),
                        ("Cost model", _cost_model), ("CUDA", _cuda), ("Dask", _dask),
                        ("Environment", _environment)):
        try:
            sections[name] = probe()
        except Exception as exc:   # a diagnostic must not fail on what it diagnoses
            sections[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return sections


def format_config(info: dict) -> str:
    """The report as text: one heading per section, ``key: value`` lines below it."""
    lines = []
    for section, body in info.items():
        lines.append(f"{section}:")
        lines.extend(_format_value(body, 1) if body else ["  (none)"])
    return "\n".join(lines)


def _format_value(value, depth):
    pad = "  " * depth
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:")
                out.extend(_format_value(v, depth + 1))
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                sub = _format_value(item, depth + 1)
                out.append(f"{pad}- {sub[0].strip()}" if sub else f"{pad}-")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_scalar(item)}")
    else:
        out.append(f"{pad}{_scalar(value)}")
    return out


def _scalar(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, dict)):
        return "none"
    return str(v)


# --- probes ---------------------------------------------------------------------------
def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _fastconv():
    from ._version import __version__
    return {"version": __version__, "location": str(Path(__file__).resolve().parent)}


def _python():
    return {"version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "platform": platform.platform()}


def _dependencies():
    import llvmlite
    import numba
    import numpy
    import scipy
    deps = {"numba": numba.__version__, "llvmlite": llvmlite.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__}
    for dist in ("numba-cuda", "dask", "distributed", "threadpoolctl", "torch", "matplotlib"):
        deps[dist] = _version(dist) or "not installed"
    return deps


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``, else :mod:`platform`)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Model")):   # x86 / ARM boards
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores():
    """Cores this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _isa(features):
    for label, need in _ISA_LEVELS:
        if all(features.get(f) for f in need):
            return label
    return "baseline"


def _cpu():
    import llvmlite.binding as ll
    import numba
    info = {"model": cpu_model(), "architecture": platform.machine(),
            "logical cores": os.cpu_count(), "usable cores": usable_cores()}
    feats = {}
    try:
        feats = {k: bool(v) for k, v in ll.get_host_cpu_features().items()}
    except Exception as exc:       # some platforms cannot report features
        info["features error"] = str(exc)
    host = ll.get_host_cpu_name()
    # numba compiles for NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when set, else the host
    info["LLVM target"] = numba.config.CPU_NAME or host
    if numba.config.CPU_FEATURES:
        feats = {f[1:]: f[0] == "+" for f in numba.config.CPU_FEATURES.split(",") if f}
        info["LLVM target"] += " (NUMBA_CPU_NAME/NUMBA_CPU_FEATURES override)"
    info["vector ISA"] = _isa(feats)
    simd = [f for f in ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                        "avx512vnni", "avx512bf16", "avx512fp16", "amx-tile", "neon", "sve")
            if feats.get(f)]
    info["SIMD features"] = " ".join(simd) or "-"
    return info


def _threading():
    import numba

    from ._config import threading_info
    t = threading_info()                   # starts numba's threads, as a parallel call would
    return {"numba threads": t["numba_threads"],
            "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS,
            "requested layer": numba.config.THREADING_LAYER,
            "threading layer": t["numba_threading_layer"],
            "OpenMP runtime": t["openmp_runtime"] or "-",
            "OpenMP wait policy": t["openmp_wait_policy"] or "-",
            "OpenMP runtime private": t["openmp_private"],
            "note": t["note"] or "-"}


def _blas():
    import numpy
    info = {}
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["NumPy built with"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:              # older NumPy: no dicts mode
        info["NumPy built with"] = "unknown"
    try:
        import threadpoolctl
    except ImportError:
        info["runtime libraries"] = ("install threadpoolctl to list the loaded BLAS/OpenMP "
                                     "libraries and their threads")
        return info
    libs = []
    for lib in threadpoolctl.threadpool_info():
        entry = {"api": f"{lib.get('user_api')} ({lib.get('internal_api')})",
                 "version": lib.get("version"), "threads": lib.get("num_threads"),
                 "threading layer": lib.get("threading_layer"),
                 "architecture": lib.get("architecture"), "file": lib.get("filepath")}
        libs.append({k: v for k, v in entry.items() if v is not None})
    info["runtime libraries"] = libs or "none loaded"
    return info


def _read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh), None
    except FileNotFoundError:
        return None, "absent"
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def _caches():
    import numba

    from . import _config
    info = {}
    cache_dir = getattr(_config, "cache_dir", None)
    if cache_dir is not None:
        d = Path(cache_dir())
        info["fastconv cache dir"] = f"{d}" + ("" if d.is_dir() else " (not created yet)")
    data_dir = getattr(_config, "data_dir", None)
    if data_dir is not None:
        info["data dir ($FASTCONV_DATA_DIR)"] = str(data_dir() or "unset")
    info["autotune"] = "on" if getattr(_config, "AUTOTUNE", False) else "off"
    from . import dispatch
    path = Path(dispatch.cache_path())
    data, err = _read_json(path)
    if err:
        info["autotune cache"] = f"{path} ({err})"
    else:
        n = sum(len(v) for v in data.values() if isinstance(v, dict)) \
            if isinstance(data, dict) else 0
        info["autotune cache"] = (f"{path} ({path.stat().st_size} bytes, {n} shapes, "
                                  f"{len(data) if isinstance(data, dict) else 0} "
                                  f"machine/version keys)")
    info["numba cache dir"] = (numba.config.CACHE_DIR or
                               "__pycache__ next to each module (NUMBA_CACHE_DIR unset)")
    return info


def _cost_model():
    from . import dispatch
    path = Path(dispatch._MODEL_FILE).resolve()
    data, err = _read_json(path)
    info = {"file": str(path)}
    if err:
        info["status"] = err
        return info
    if not isinstance(data, dict):
        info["status"] = "unreadable (not a JSON object)"
        return info
    cls, section = dispatch._model_section(data)
    info["host class"] = (f"{dispatch.HOST_CLASS} (reads the {cls} section)" if cls else
                          f"{dispatch.HOST_CLASS} (no section fitted: built-in defaults)")
    info["algorithms"] = ", ".join(k for k, v in section.items()
                                   if isinstance(v, dict) and not k.startswith("_"))
    meta = {k: v for k, v in section.items()
            if (not isinstance(v, dict) or k.startswith("_")) and k != "_fitted_on"}
    for k, v in meta.items():
        info[k.lstrip("_")] = v if not isinstance(v, (dict, list)) else json.dumps(v)
    fitted_on = _fitted_on(section)
    if fitted_on:
        here = cpu_model()
        same = all(w.lower() in here.lower() for w in fitted_on.split())
        info["fitted on"] = fitted_on
        info["this CPU"] = here + (" (same kind)" if same else
                                   " (differs: refit with python bench/fit_cost_model.py)")
    return info


def _fitted_on(data):
    """The machine a cost model was fitted on: an explicit key, else the comment's
    "... on <machine>"."""
    for key in ("_machine", "_fitted_on", "_cpu", "machine", "fitted_on", "cpu"):
        v = data.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
        if isinstance(v, dict):
            for sub in ("cpu", "cpu_model", "model", "machine"):
                if isinstance(v.get(sub), str):
                    return v[sub].strip()
    comment = data.get("_comment")
    if isinstance(comment, str) and " on " in comment:
        return comment.rsplit(" on ", 1)[1].strip(" .")
    return None


def _cuda():
    info = {"numba-cuda": _version("numba-cuda") or "not installed"}
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        info["simulator"] = "on (NUMBA_ENABLE_CUDASIM): kernels run on the CPU"
    try:
        from numba import cuda
    except Exception as exc:
        info["available"] = False
        info["why"] = f"numba.cuda does not import ({type(exc).__name__}: {exc})"
        return info
    try:
        available = bool(cuda.is_available())
    except Exception as exc:
        available = False
        info["why"] = f"{type(exc).__name__}: {exc}"
    info["available"] = available
    if not available:
        info.setdefault("why", "no usable GPU or driver (numba.cuda.is_available() is False)")
        return info
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        info["device"] = name
        info["compute capability"] = ".".join(map(str, dev.compute_capability))
        info["GPUs"] = len(cuda.gpus)
    except Exception as exc:
        info["device"] = f"unknown ({type(exc).__name__}: {exc})"
    try:
        info["driver"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
    except Exception:
        pass
    return info


def _dask():
    info = {"dask": _version("dask") or "not installed",
            "distributed": _version("distributed") or "not installed"}
    if info["dask"] != "not installed":
        try:
            import dask.array  # noqa: F401
            info["dask.array"] = "available: conv*d and fastconv.signal accept Dask arrays"
        except Exception as exc:
            info["dask.array"] = f"not importable ({type(exc).__name__}: {exc})"
    return info


def _environment():
    return {k: os.environ[k] for k in _ENV_VARS if k in os.environ}
