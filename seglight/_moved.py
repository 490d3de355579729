"""Old import and class paths that keep working after a move, with a warning that says where to.

    # seglight/visual.py, after ValidationImages moved to seglight.callbacks:
    __getattr__ = moved(__name__, {"ValidationImages": "seglight.callbacks"})

A FutureWarning, not a DeprecationWarning: Python hides the latter outside __main__, and the
people who must act are users with the old path in a config, not library authors.
"""

import importlib
import warnings
from collections.abc import Callable
from typing import Any


class SeglightDeprecationWarning(FutureWarning):
    """An import or class path of seglight that moved; the message names the new one."""


def moved(old_module: str, targets: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__`: name -> the object of the same name in targets[name] (a module
    path, or "module:new_name" when it was renamed), after warning once per call site."""

    def __getattr__(name: str) -> Any:
        if name not in targets:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, new_name = targets[name].partition(":")
        new_name = new_name or name
        warnings.warn(
            f"{old_module}.{name} moved to {module}.{new_name}; update the import or class path "
            "(the old one will be removed in a later release)",
            SeglightDeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name)

    return __getattr__
