"""Sphinx configuration of the hcjax documentation (``make docs`` builds it into ``site/``)."""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(DOCS, "_ext"))
sys.path.insert(0, os.path.dirname(DOCS))

project = "hcjax"
author = "the hcjax authors"
copyright = "the hcjax authors, Apache-2.0"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "hcjax_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# API reference: Google-style docstrings with Sphinx roles, documented where each object is defined.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False
python_maximum_signature_line_length = 100

# Strict: every reference to an hcjax object must resolve (``-n`` in ``make docs``); references to other
# libraries' objects are not checked (no intersphinx, so the build needs no network).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!hcjax\b).*"), (r"py:.*", r"hcjax\._.*")]

html_theme = "furo"
html_title = "hcjax"
html_static_path = []
html_show_sourcelink = False
