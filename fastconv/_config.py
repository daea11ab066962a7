"""Defaults and environment switches, in one place."""
import os
from pathlib import Path

# numba's OpenMP workers spin after every parallel region by default; on a machine with
# few cores they then starve numpy's BLAS threads (im2col's GEMMs) and vice versa --
# measured on 2 cores: MNIST training 2.9x slower, the resnet layer 1.9x slower. Passive
# waiting costs a few microseconds per region. Set OMP_WAIT_POLICY yourself to override.
# (It must be set before the OpenMP runtime starts, i.e. before numba's first parallel call.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: time candidates on first use of a shape (``fastconv.set_autotune`` / FASTCONV_AUTOTUNE=1)
AUTOTUNE = os.environ.get("FASTCONV_AUTOTUNE", "0").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """``$FASTCONV_CACHE_DIR``, else the user cache dir (``$XDG_CACHE_HOME/fastconv``,
    ``~/.cache/fastconv``; ``%LOCALAPPDATA%\\fastconv`` on Windows)."""
    env = os.environ.get("FASTCONV_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "fastconv"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastconv"


def data_dir():
    """``$FASTCONV_DATA_DIR`` or None."""
    env = os.environ.get("FASTCONV_DATA_DIR")
    return Path(env).expanduser() if env else None


# --- precision level (fastconv.set_precision / FASTCONV_PRECISION) -------------------------
#: what algorithm="auto" may choose: "highest" (direct-sum error only), "high" (default:
#: also FFT and Winograd), "medium" (anything faster with a documented error)
PRECISION = os.environ.get("FASTCONV_PRECISION", "high").strip().lower() or "high"
if PRECISION not in ("highest", "high", "medium"):
    import warnings
    warnings.warn(f"fastconv: ignoring FASTCONV_PRECISION={PRECISION!r}: precision must be one "
                  f"of ('highest', 'high', 'medium'); using 'high'", RuntimeWarning)
    PRECISION = "high"
