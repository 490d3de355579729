"""Encoder weights from a local file (`encoder_weights: path/to/file.pth`), for machines that
cannot download them."""

from pathlib import Path

import torch
from segmentation_models_pytorch.encoders import TimmUniversalEncoder, TimmViTEncoder
from torch import nn

from seglight.errors import ConfigError

OFFLINE_HINT = (
    "set `encoder_weights: null` to train from scratch, or set it to the path of a local "
    "state-dict file (.pth/.pt/.safetensors) holding the encoder's weights"
)


def local_weights(encoder_weights: str | None) -> Path | None:
    """A path-like `encoder_weights` means a local file; it must exist."""
    if encoder_weights is None or not any(s in encoder_weights for s in ("/", "\\", ".")):
        return None
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights: file not found: {path}")
    return path


def load_encoder_state(encoder: nn.Module, path: Path) -> None:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"model.encoder_weights: cannot read {path}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(
            f"model.encoder_weights: {path} holds a {type(state).__name__}, not a state dict"
        )
    # A timm encoder wraps the timm model as `.model`; timm's own files name its tensors bare.
    timm_encoder = isinstance(encoder, TimmUniversalEncoder | TimmViTEncoder)
    if timm_encoder and not any(k.startswith("model.") for k in state):
        encoder = encoder.model
    # Classification checkpoints carry a head the encoder does not have (e.g. fc.weight).
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(
            f"model.encoder_weights: {path} does not match the encoder: {len(missing)} of its "
            f"tensors are missing, e.g. {missing[:3]}"
        )
    for key, value in own.items():
        theirs = tuple(getattr(state[key], "shape", ()))
        if theirs != tuple(value.shape):
            raise ConfigError(
                f"model.encoder_weights: {path} does not match the encoder: '{key}' has shape "
                f"{list(theirs)} in the file, {list(value.shape)} in the model (the file is for "
                f"another encoder, or another model.in_channels)"
            )
    encoder.load_state_dict({k: state[k] for k in own})
