"""Builds the Cython hot paths in switchboard/core/_native.

The project needs them: there is no silent pure-Python fallback in production (tests keep a
reference twin to check the native code against). The session cimports picows (its .pxd comes
with the picows wheel, a build requirement in pyproject.toml).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

# module -> what it links besides Python: the SQLite batch commit uses the process's own
# libsqlite3 (the one Python's sqlite3 module loads), by its soname: no development package.
NATIVE = {
    "timerwheel": [],
    "ring": [],
    "wire": [],
    "session": [],
    "sqlitebatch": ["-l:libsqlite3.so.0"],
}

extensions = [
    Extension(f"switchboard.core._native.{name}", [f"switchboard/core/_native/{name}.pyx"],
              extra_compile_args=["-O2"], extra_link_args=link)
    for name, link in NATIVE.items()
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
