"""Moved to seglight.cli.audit (`seglight audit`); this name keeps old imports working."""

import sys
import warnings

from seglight.cli import audit as _moved

warnings.warn(
    "seglight.audit moved to seglight.cli.audit; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: attributes set on one are on the other
