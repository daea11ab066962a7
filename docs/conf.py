"""Sphinx configuration for fastconv's documentation.

Build: ``python -m pip install -e '.[docs]' && python -m sphinx -W -b html docs build/docs``
(tests/test_docs.py runs the same build with warnings as errors). The guide, "How it
works" and the benchmark pages include README.md, so the README stays the one source;
the API pages are generated from the public modules' ``__all__`` and docstrings.
"""
import importlib
import inspect
import os
import re
import sys
import warnings

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
import fastconv  # noqa: E402

project = "fastconv"
author = "the fastconv developers"
copyright = "2026, the fastconv developers"
release = version = fastconv.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "precision_table.py"]

# the API pages are written by the public-api directive below: no stub files on disk
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"              # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False     # methods are documented by autodoc, not as tables
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()
nitpicky = False                        # docstrings name private modules in prose

myst_heading_anchors = 3
# the README's sections start at "##"; a page that includes one below its own "#" title
# may go from "#" to "###"
suppress_warnings = ["myst.header"]

html_theme = "pydata_sphinx_theme"
html_title = f"fastconv {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2,
                      "secondary_sidebar_items": ["page-toc"]}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False


# --- the API pages --------------------------------------------------------------------
def public_names(module):
    """``module.__all__`` without dunders, else the names defined in the module itself."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and getattr(obj, "__module__", None) == module.__name__]
    return [n for n in names if not (n.startswith("__") and n.endswith("__"))]


class PublicAPI(SphinxDirective):
    """``.. public-api:: fastconv.signal``: the module's docstring, a summary table of its
    public names and every one of them documented, read from ``__all__`` at build time so
    that the reference cannot miss a name."""

    required_arguments = 1

    def run(self):
        modname = self.arguments[0]
        module = importlib.import_module(modname)
        names = public_names(module)
        objects = [n for n in names if not inspect.ismodule(getattr(module, n))]
        submodules = [n for n in names if inspect.ismodule(getattr(module, n))]
        lines = [f".. automodule:: {modname}", ""]
        if objects:
            lines += [".. rubric:: Summary", "", ".. autosummary::", ""]
            lines += [f"   {n}" for n in objects] + [""]
        if submodules:
            lines += [".. rubric:: Submodules", ""]
            lines += [f"- :mod:`{getattr(module, n).__name__}`" for n in submodules] + [""]
        if objects:
            lines += [".. rubric:: Reference", ""]
        for n in objects:
            obj = getattr(module, n)
            if inspect.isclass(obj):
                lines += [f".. autoclass:: {modname}.{n}", "   :members:", ""]
            elif callable(obj):
                lines += [f".. autofunction:: {modname}.{n}", ""]
            else:
                lines += [f".. autodata:: {modname}.{n}", "   :no-value:", ""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"<public-api {modname}>"),
                                self.content_offset, container)
        return container.children


_STAR_SHAPE = re.compile(r"(?<![`\\])\(\*,")


def escape_star_shapes(app, what, name, obj, options, lines):
    """PyTorch's shape notation ``(*, H_in)`` in a parameter type reads as the start of
    rst emphasis; escape the star (docstrings may write it plainly)."""
    lines[:] = [_STAR_SHAPE.sub(r"(\\*,", line) for line in lines]


def _numpydoc_warnings_to_sphinx():
    """numpydoc reports a malformed docstring (an unknown section, say) with Python's
    warnings.warn, which ``sphinx-build -W`` does not see; pass them to Sphinx's log."""
    log = logging.getLogger("numpydoc")
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "numpydoc" in str(filename):
            log.warning("numpydoc: %s", message)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.filterwarnings("always", category=UserWarning, module=r"numpydoc\.")
    warnings.showwarning = showwarning


def setup(app):
    _numpydoc_warnings_to_sphinx()
    app.add_directive("public-api", PublicAPI)
    app.connect("autodoc-process-docstring", escape_star_shapes, priority=400)
    return {"parallel_read_safe": True}
