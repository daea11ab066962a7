"""The documentation builds with warnings as errors, and documents every public name.

Skipped when the docs tools are absent (``pip install -e '.[docs]'``; the test extra
installs them, so CI runs it). The build goes to a temporary directory and writes
nothing into the source tree.
"""
import importlib
import inspect
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

for _tool in ("sphinx", "numpydoc", "myst_parser", "pydata_sphinx_theme"):
    pytest.importorskip(_tool, reason=f"docs tools not installed ({_tool}): "
                                      f"pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = ("fastconv", "fastconv.grad", "fastconv.signal", "fastconv.nn",
                  "fastconv.nn.functional", "fastconv.nn.init", "fastconv.optim",
                  "fastconv.datasets")


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out / "html"


def inventory(html):
    """The names in Sphinx's objects.inv (four header lines, then zlib-compressed)."""
    data = (html / "objects.inv").read_bytes()
    body = data.split(b"\n", 4)[4]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def public_names(modname):
    module = importlib.import_module(modname)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and getattr(obj, "__module__", None) == modname]
    return [f"{modname}.{n}" for n in names
            if not n.startswith("__") and not inspect.ismodule(getattr(module, n))]


def test_docs_build_with_warnings_as_errors(html):
    for page in ("index", "guide", "how_it_works", "benchmarks", "api/index"):
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_public_name_is_documented(html, modname):
    documented = inventory(html)
    assert modname in documented
    missing = [n for n in public_names(modname) if n not in documented]
    assert not missing, f"not in the API reference: {missing}"


def test_pages_carry_the_readme_and_the_charts(html):
    guide = (html / "guide.html").read_text()
    assert "SciPy-compatible signal processing" in guide and "show_config" in guide
    bench = (html / "benchmarks.html").read_text()
    assert "pytest-benchmark" in bench
    for png in ("report.png", "signal_report.png"):
        assert png in bench, png
        assert (html / "_images" / png).is_file(), png
    assert "vs own terms" in (html / "how_it_works.html").read_text()


@pytest.mark.parametrize("script", ["report", "signal_report"])
def test_committed_charts_replot_from_their_json(script, tmp_path):
    """The README's charts come from committed JSON; the documented replot command works."""
    pytest.importorskip("matplotlib")
    src = ROOT / "docs" / "_static" / f"{script}.json"
    out = tmp_path / f"{script}.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--from-json",
                           str(src), "--plot", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| " in proc.stdout                       # the table, printed from the JSON
