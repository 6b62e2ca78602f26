"""Cython hot paths. `native(name)` imports one and fails loudly when it is not built: production
must not run on a slow stand-in (the tests keep pure-Python reference twins instead)."""
from __future__ import annotations

import importlib
from types import ModuleType


def native(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise ImportError(
            f"{__name__}.{name} is not built; run `pip install -e . --no-build-isolation` or "
            "`python setup.py build_ext --inplace`") from exc
