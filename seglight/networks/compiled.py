"""Speed options of the network: torch.compile and the channels_last memory format.

    speed_up(net, compile={"backend": "inductor"}, channels_last=True)  # in place, or ConfigError
    logits = as_contiguous(net(to_channels_last(images, True)), True)

The network is compiled in place (nn.Module.compile): the module tree is unchanged, so the
state_dict keeps the plain network's names (no `_orig_mod.`), a checkpoint of a compiled run
loads into an uncompiled module, and `seglight export` rebuilds the plain network (PLAIN).
Only the network's forward (and its backward) is compiled: padding, loss, metrics stay eager.
"""

from typing import Any

import torch
from torch import nn

from seglight.errors import ConfigError

# `model.compile`: null / false = off; true = torch.compile's defaults; a mode string; or a dict
# of torch.compile's keyword arguments, e.g. {mode: max-autotune, backend: inductor, dynamic: true}
CompileSetting = bool | str | dict[str, Any] | None

# The hyper-parameters that build the plain network: export and parity checks trace it.
PLAIN: dict[str, Any] = {"compile": None, "channels_last": False}


def compile_options(value: CompileSetting) -> dict[str, Any] | None:
    """torch.compile's keyword arguments for `model.compile`, or None when it is off."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, dict):
        return dict(value)
    raise ConfigError(
        f"model.compile: {value!r} is not null, true/false, a mode (e.g. max-autotune) or a "
        f"dict of torch.compile arguments (e.g. {{backend: inductor, dynamic: true}})"
    )


def speed_up(net: nn.Module, compile: CompileSetting = None, channels_last: bool = False) -> None:
    """`net` in place: its 4-D weights in channels_last memory format, its forward compiled
    (lazily: compilation happens at the first call). A bad value is a one-line ConfigError."""
    if not isinstance(channels_last, bool):
        raise ConfigError(f"model.channels_last: expected true or false, got {channels_last!r}")
    options = compile_options(compile)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if options is None:
        return
    try:  # torch checks the backend, mode, options and argument names here, before any call
        net.compile(**options)
    except Exception as e:  # noqa: BLE001 - InvalidBackend, TypeError, AssertionError: one line
        raise ConfigError(f"model.compile: {compile!r}: {_first_line(e)}") from None


def is_compiled(net: nn.Module) -> bool:
    """Whether `net` was compiled in place (nn.Module.compile)."""
    return getattr(net, "_compiled_call_impl", None) is not None


def to_channels_last(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images (B, C, H, W) in channels_last memory format when asked (same values)."""
    if channels_last and images.ndim == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def as_contiguous(logits: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Logits back in the default (contiguous) memory format after a channels_last network."""
    return logits.contiguous() if channels_last else logits


def _first_line(error: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(error).__name__}: {line}".rstrip(": ")
