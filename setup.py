"""Builds the optional C twins of the daemon's hottest pure-Python functions.

Everything else is in pyproject.toml. Each extension is ``optional``: a machine without a
compiler still installs virlogd and runs the pure-Python code (``virlogd/native.py`` decides
which one is used); the test suite fails in CI if they were not built.
"""
import glob
import os

from setuptools import Extension, setup

# an undeclared function is an error, never a warning: on an older Python it would be called
# with the wrong types (a pointer cut to an int) instead of failing the build
_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
          "-Werror=implicit-function-declaration"]

# every virlogd/_c<name>.c is a twin (native.TWINS names them at run time), and every
# virlogd/_c*.h a header they share: a changed header rebuilds them all
_HEADERS = sorted(glob.glob("virlogd/_c*.h"))

setup(ext_modules=[
    Extension(f"virlogd.{os.path.basename(src)[:-2]}", [src], optional=True,
              depends=_HEADERS, extra_compile_args=_FLAGS)
    for src in sorted(glob.glob("virlogd/_c*.c"))
])
