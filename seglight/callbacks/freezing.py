"""FreezeEncoder: train the decoder and head on a frozen encoder (optionally a frozen decoder
too), and optionally unfreeze everything at a given epoch. Built on Lightning's BaseFinetuning.

    python -m seglight fit --config configs/quickstart.yaml --config <the add-on below>
    (the add-on: configs/callbacks/freeze_encoder.yaml)

Frozen means: `requires_grad=False` on the weights (no gradient, so neither the optimizer nor
weight decay moves them), and, unless `train_bn`, the frozen part's BatchNorm layers kept in
eval mode during training: they normalise with their running statistics, which don't move.
(Lightning's own `freeze(train_bn=False)` only stops the statistics from updating; the layers
would still normalise with each batch's statistics.)

All parameters stay in the optimizer the module builds; a frozen one has no gradient, so the
optimizer skips it. Unfreezing turns its gradient back on: it then trains with the schedule of
the rest, at `model.encoder_lr_factor` times their learning rate (1 by default; e.g. 0.1 to
fine-tune a pretrained encoder gently).
"""

from collections.abc import Iterable

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from seglight.errors import ConfigError
from seglight.networks import parts


def network_parts(pl_module: L.LightningModule) -> tuple[nn.Module, nn.Module | None]:
    """(encoder, decoder) of the module's network (seglight.networks.parts.network_parts)."""
    arch = pl_module.hparams.get("arch")
    return parts.network_parts(getattr(pl_module, "net", None), arch, "FreezeEncoder")


class FreezeEncoder(BaseFinetuning):
    """Freezes the network's encoder (smp `net.encoder`, torchvision `backbone`) and optionally
    its decoder for training; the segmentation head always trains.

    Args:
        unfreeze_at_epoch: epoch (zero-based) at whose start the frozen parts become trainable;
            null: frozen for the whole run.
        freeze_decoder: freeze the decoder too (smp models only), training only the head.
        train_bn: let the frozen parts' BatchNorm layers train (weights and running statistics);
            false: they stay in eval mode and unchanged.
    """

    def __init__(
        self, unfreeze_at_epoch: int | None = None, freeze_decoder: bool = False,
        train_bn: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 1:
            raise ConfigError(
                f"FreezeEncoder.unfreeze_at_epoch: must be >= 1 or null; got {unfreeze_at_epoch}"
            )
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.freeze_decoder = freeze_decoder
        self.train_bn = train_bn
        self._frozen: list[nn.Module] = []

    def frozen_modules(self, pl_module: L.LightningModule) -> list[nn.Module]:
        """The parts this callback freezes: [encoder] or [encoder, decoder]."""
        encoder, decoder = network_parts(pl_module)
        if not self.freeze_decoder:
            return [encoder]
        if decoder is None:
            raise ConfigError(
                f"FreezeEncoder.freeze_decoder: model.arch {pl_module.hparams.get('arch')!r} has "
                "no decoder separate from its head; use freeze_decoder: false"
            )
        return [encoder, decoder]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.unfreeze_at_epoch is not None and trainer.world_size > 1:
            # DDP registers the parameters that require a gradient when it wraps the model:
            # ones unfrozen later would never be all-reduced, and the processes would diverge.
            raise ConfigError(
                "FreezeEncoder.unfreeze_at_epoch: not supported with several processes (DDP "
                "only synchronises parameters trainable at the start); fit frozen, then start "
                "a new fit from that checkpoint without FreezeEncoder"
            )
        super().setup(trainer, pl_module, stage)  # -> freeze_before_training

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self._frozen = self.frozen_modules(pl_module)
        for module in self._frozen:
            for param in module.parameters():
                param.requires_grad = False
            if self.train_bn:
                for bn in _batchnorms(module):
                    bn.requires_grad_(True)

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if self._frozen and self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch:
            for module in self._frozen:
                module.requires_grad_(True)
                module.train()  # its BatchNorm layers normalise with batch statistics again
            self._frozen = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # BaseFinetuning's also records the optimizer's param groups, to rebuild groups it added
        # on resume; this adds none (and a rebuilt group would take back an old learning rate).
        self.finetune_function(pl_module, trainer.current_epoch, trainer.optimizers[0])

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        # model.train() (Lightning's, or a user's hook) puts every layer in training mode;
        # the frozen BatchNorm layers are put back in eval mode before each step.
        if not self.train_bn:
            for bn in _batchnorms(self._frozen):
                bn.eval()


def _batchnorms(modules: nn.Module | Iterable[nn.Module]) -> list[_BatchNorm]:
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    return [m for module in modules for m in module.modules() if isinstance(m, _BatchNorm)]
