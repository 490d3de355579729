"""Moved to seglight.cli.export (`seglight export`); this name keeps old imports working."""

import sys
import warnings

from seglight.cli import export as _moved

warnings.warn(
    "seglight.export moved to seglight.cli.export; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: attributes set on one are on the other
