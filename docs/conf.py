"""Sphinx configuration: the API reference from rocmstreams' numpydoc docstrings."""
project = "rocmstreams"
author = "The rocmstreams developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
