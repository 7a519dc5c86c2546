"""Sphinx configuration of the API reference (built by ``.ci/run`` with warnings as errors).

Build it with ``python3 -m sphinx -W --keep-going -b html docs/api <outdir>`` after
``pip install -e '.[docs]'``.
"""

from __future__ import annotations

import importlib.metadata

project = "dk_vector_plugins"
author = "dk_vector_plugins developers"
release = importlib.metadata.version("dk_vector_plugins")
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# the facade's operations are descriptors (one definition serves the sync and async APIs)
autodoc_inherit_docstrings = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
suppress_warnings = ["ref.python"]
