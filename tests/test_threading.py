"""fastconv's configuration helpers."""
import sys
from pathlib import Path


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
