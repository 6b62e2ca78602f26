"""Builds the Cython hot paths in switchboard/core/_native, and records the git commit the
package is built from (switchboard/_commit.txt in the build: switchboard_build_info).

The project needs the native code: there is no silent pure-Python fallback in production
(tests keep a reference twin to check the native code against). The session cimports picows (its
.pxd comes with the picows wheel, a build requirement in pyproject.toml).
"""
import subprocess
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithCommit(build_py):
    """Also writes the checkout's commit into the built package; none outside a checkout."""

    def run(self) -> None:
        super().run()
        try:
            done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return
        if done.returncode == 0 and not self.dry_run:
            target = Path(self.build_lib) / "switchboard" / "_commit.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(done.stdout.strip() + "\n")

# module -> what it links besides Python: the SQLite batch commit uses the process's own
# libsqlite3 (the one Python's sqlite3 module loads), by its soname: no development package.
NATIVE = {
    "timerwheel": [],
    "ring": [],
    "wire": [],
    "acks": [],
    "rollup": [],
    "session": [],
    "sqlitebatch": ["-l:libsqlite3.so.0"],
}

extensions = [
    Extension(f"switchboard.core._native.{name}", [f"switchboard/core/_native/{name}.pyx"],
              extra_compile_args=["-O2"], extra_link_args=link)
    for name, link in NATIVE.items()
]

setup(
    cmdclass={"build_py": BuildWithCommit},
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
