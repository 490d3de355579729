"""SaveConfig: LightningCLI's config.yaml beside the logs, also put into the W&B run config (and
TensorBoard as text); with a W&B logger it attaches WandbClassMetrics."""

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from seglight.callbacks.wandb_tables import WandbClassMetrics, wandb_loggers


class SaveConfig(SaveConfigCallback):
    """LightningCLI's config saving (config.yaml in trainer.log_dir), plus: the same resolved
    config in the W&B run config (nested: model.init_args.arch, ...) and as text in TensorBoard;
    with a W&B logger, attaches WandbClassMetrics unless the config lists it already."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if wandb_loggers(trainer) and not any(
            isinstance(c, WandbClassMetrics) for c in trainer.callbacks
        ):
            trainer.callbacks.append(WandbClassMetrics())
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)  # the YAML of config.yaml
        for logger in trainer.loggers:
            if isinstance(logger, LightningWandbLogger):
                logger.experiment.config.update(yaml.safe_load(text), allow_val_change=True)
            elif isinstance(logger, TensorBoardLogger):
                # Markdown: four-space indent keeps the YAML's layout.
                indented = "\n".join("    " + line for line in text.splitlines())
                logger.experiment.add_text("config", indented, global_step=0)
