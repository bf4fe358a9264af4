"""Picks the engine: the Cython one unless told otherwise or unavailable.

``MEMSCAN_NO_EXTENSIONS=1`` (also honoured by setup.py) or an interpreter
other than CPython selects the pure-Python engine; so does a missing
extension. Both engines have the same functions with the same results.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from . import pure

NO_EXTENSIONS = bool(os.environ.get("MEMSCAN_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

engine: ModuleType
if TYPE_CHECKING or NO_EXTENSIONS:
    engine = pure
    IMPLEMENTATION = "python"
else:
    try:
        from .. import _fast as engine
    except ImportError:
        engine = pure
        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "cython"

ENGINES = {"python": pure}
if IMPLEMENTATION == "cython":
    ENGINES["cython"] = engine


def get_engine(name: "str | None") -> ModuleType:
    """The engine called ``name`` ("cython" or "python"), or the default one."""
    if name is None:
        return engine
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"engine {name!r} is not available here (have: {', '.join(ENGINES)})") from None


def engine_name(module: ModuleType) -> str:
    """The name of an engine module, as ``get_engine`` takes it."""
    return "cython" if module.__name__.endswith("_fast") else "python"
