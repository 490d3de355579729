"""Size of a model for a paper table: parameters, and FLOPs by torch's flop_counter checked
against a count from Conv/Linear shapes (2 FLOPs per multiply-accumulate)."""

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# --- size ----------------------------------------------------------------------------------------


def count_parameters(module: nn.Module) -> dict[str, int]:
    """{"total": every parameter's numel, "trainable": those with requires_grad}; a parameter
    shared between submodules counts once (nn.Module.parameters() yields it once)."""
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


@torch.no_grad()
def count_flops(net: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward of `net` on `example` (its whole batch), as torch.utils.flop_counter
    counts them: 2 per multiply-accumulate of convolutions and matrix products."""
    with FlopCounterMode(display=False) as counter:
        net(example)
    return int(counter.get_total_flops())


@torch.no_grad()
def count_conv_flops(net: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of the nn.Conv*/ConvTranspose*/Linear modules of `net` on `example`, from their
    weight and output shapes (2 x Cin/groups x Cout x kernel x output positions): a count that
    shares no code with torch's. Functional convolutions (F.conv2d outside a module) are missed."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        x, y = inputs[0], output
        if isinstance(module, nn.Linear):
            total += 2 * x.numel() // x.shape[-1] * module.in_features * module.out_features
            return
        kernel = module.weight.shape[2:].numel()
        per_position = module.in_channels // module.groups * module.out_channels * kernel
        if isinstance(module, nn.modules.conv._ConvTransposeNd):  # each input position scatters
            positions = x.shape[0] * x.shape[2:].numel()
        else:  # each output position gathers
            positions = y.shape[0] * y.shape[2:].numel()
        total += 2 * per_position * positions

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    try:
        net(example)
    finally:
        for handle in handles:
            handle.remove()
    return total
