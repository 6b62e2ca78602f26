"""Builds the Cython hot paths in switchboard/core/_native.

The project needs them: there is no silent pure-Python fallback in production (tests keep a
reference twin to check the native code against). The session cimports picows (its .pxd comes
with the picows wheel, a build requirement in pyproject.toml).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE = ["timerwheel", "ring", "wire", "session"]

extensions = [
    Extension(f"switchboard.core._native.{name}", [f"switchboard/core/_native/{name}.pyx"],
              extra_compile_args=["-O2"])
    for name in NATIVE
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
