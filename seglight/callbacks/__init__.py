"""Every Lightning callback and plugin of seglight, one module per job."""

from seglight.callbacks.reports_writers_tmp import *  # noqa: F403
from seglight.callbacks.reports_writers_tmp import (  # noqa: F401
    ClassReport,
    MaskWriter,
    PredictionFailures,
    _flat_palette,
    _output_stem,
    build_report,
    confusion_image,
    format_class_table,
)
