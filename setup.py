"""Builds virlogd's one optional extension, ``virlogd._speedups`` (the per-record data work).

Everything else is in pyproject.toml. The extension is ``optional``: a machine without a
compiler still installs virlogd and runs the pure-Python code (``virlogd/core/speedups.py``
chooses); the test suite fails in CI if it was not built.
"""
from setuptools import Extension, setup

# an undeclared function is an error, never a warning: on an older Python it would be called
# with the wrong types (a pointer cut to an int) instead of failing the build
_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
          "-Werror=implicit-function-declaration"]

setup(ext_modules=[
    Extension("virlogd._speedups", ["virlogd/_speedups.c"], optional=True,
              extra_compile_args=_FLAGS),
])
