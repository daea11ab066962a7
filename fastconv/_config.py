"""Defaults and environment switches, in one place."""
import os
from pathlib import Path

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
