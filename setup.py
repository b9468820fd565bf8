"""Builds the optional C twins of the daemon's hottest pure-Python functions.

Everything else is in pyproject.toml. Each extension is ``optional``: a machine without a
compiler still installs virlogd and runs the pure-Python code (``virlogd/native.py`` decides
which one is used); the test suite fails in CI if they were not built.
"""
from setuptools import Extension, setup

# an undeclared function is an error, never a warning: on an older Python it would be called
# with the wrong types (a pointer cut to an int) instead of failing the build
_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
          "-Werror=implicit-function-declaration"]

setup(ext_modules=[
    Extension(f"virlogd._c{name}", [f"virlogd/_c{name}.c"], optional=True,
              depends=["virlogd/_ccompat.h"], extra_compile_args=_FLAGS)
    for name in ("ring", "wire", "text", "queue", "route")
])
