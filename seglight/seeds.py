"""Moved to seglight.cli.seeds (`seglight seeds`); this name keeps old imports working."""

import sys
import warnings

from seglight.cli import seeds as _moved

warnings.warn(
    "seglight.seeds moved to seglight.cli.seeds; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: attributes set on one are on the other
