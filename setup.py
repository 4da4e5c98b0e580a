"""The optional compiled layer (rocmstreams.backends.native_calls); everything else is in
pyproject.toml. Without a C compiler or Python's headers the build of the extension fails
quietly (``optional=True``) and rocmstreams makes the same calls from Python."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("rocmstreams.backends.native_calls",
                             ["rocmstreams/backends/native_calls.c"], optional=True)])
