"""Moved to seglight.networks; old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "TorchvisionSegmentation": "seglight.networks",
        "smp_architectures": "seglight.networks",
        "available_architectures": "seglight.networks",
        "output_stride": "seglight.networks",
        "build_model": "seglight.networks",
        "TIMM_PREFIX": "seglight.networks",
        "HIERARCHICAL_EXAMPLES": "seglight.networks",
        "DPT_EXAMPLES": "seglight.networks",
        "TORCHVISION_PREFIX": "seglight.networks",
        "TORCHVISION_ARCHS": "seglight.networks",
        "OFFLINE_HINT": "seglight.networks",
    },
)
