"""SegmentationModule: any smp (or torchvision) network + loss + mIoU metrics + injected optimizer.

    python -m seglight fit --config configs/quickstart.yaml --model.arch=FPN --model.loss.dice=0.5

Batches are dicts: "image" float (B, 3, H, W), "mask" long (B, H, W) with ignore_index where
unlabelled. Subclass and override `compute_loss` or `shared_step` to change what a step does;
select the subclass with `--model path.to.MyModule`.
"""

import math
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from seglight.callbacks import ClassReport
from seglight.checkpointing import check_seglight_checkpoint, read_checkpoint
from seglight.compat import _restricted_classmethod
from seglight.errors import ConfigError, NonFiniteLossError
from seglight.inference import EvalProtocol, predict_logits, split_images
from seglight.input_check import forward_checked
from seglight.losses import LossConfig, build_loss
from seglight.metrics import SegmentationMetrics
from seglight.models import build_model, output_stride
from seglight.preemption import PreemptionCheckpoint
from seglight.resume import RngState
from seglight.schedulers import _TrainerLengthLR

Stage = Literal["train", "val", "test"]
NonFiniteLoss = Literal["stop", "skip", "off"]


class SegmentationModule(L.LightningModule):
    """Semantic segmentation with any segmentation-models-pytorch architecture and encoder.

    Args:
        arch: smp architecture (Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Segformer, ...) or a
            torchvision model as "torchvision.<name>" (e.g. torchvision.fcn_resnet50).
        encoder_name: smp encoder (resnet18, mobilenet_v2, efficientnet-b0, tu-<timm name>, ...);
            ignored by torchvision models, whose backbone is part of `arch`.
        encoder_weights: "imagenet" (needs the network or a local cache), null for random
            init, or the path of a local state-dict file for the encoder.
        in_channels: channels of the input images.
        num_classes: number of classes; linked from the data module by the CLI.
        ignore_index: mask value of unlabelled pixels; linked from the data module.
        class_names: one name per class, used in metric names; linked from the data module.
        loss: weights and options of the loss terms, e.g. {ce: 1.0, dice: 0.5}; null =
            cross-entropy alone.
        model_kwargs: extra keyword arguments for the architecture (e.g. decoder_channels).
        optimizer: optimizer class and its arguments (e.g. `--model.optimizer=SGD
            --model.optimizer.lr=0.01`); null = AdamW with torch's defaults (lr 1e-3).
        lr_scheduler: learning-rate scheduler, e.g. seglight.schedulers.PolyLR; null = constant.
        lr_scheduler_interval: step the scheduler every optimizer "step" or every "epoch".
        lr_scheduler_monitor: metric a ReduceLROnPlateau-style scheduler watches.
        eval_protocol: how validation, test and predict compute logits: whole image or sliding
            window, flip / multi-scale test-time augmentation (see seglight.inference.
            EvalProtocol), e.g. `--model.eval_protocol.mode=slide
            --model.eval_protocol.window=[512,512]`; null = whole image. Training is unaffected;
            val/test losses are computed on the protocol's output. Recorded in the hyper-
            parameters and printed at the start of validate/test/predict.
        nonfinite_loss: what a nan/inf training loss does, checked at every step: "stop" raises
            seglight.errors.NonFiniteLossError naming the loss terms, epoch, global step and the
            batch's files (the CLI prints it as one line and exits with status 1); "skip" drops
            the batch (no optimizer step, BatchNorm statistics restored), warns with the same
            details and counts it in `train/skipped_nonfinite`; "off" checks nothing (saves the
            one host sync per step the check costs).
        nonfinite_batch_dir: folder where a batch with a non-finite loss is saved with
            torch.save (its image, mask, name, ... plus epoch, step, batch_idx, rank, losses),
            to reproduce it; null = not saved.
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        ignore_index: int = 255,
        class_names: list[str] | None = None,
        loss: LossConfig | None = None,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scheduler_monitor: str = "val/loss",
        eval_protocol: EvalProtocol | None = None,
        nonfinite_loss: NonFiniteLoss = "stop",
        nonfinite_batch_dir: str | None = None,
    ) -> None:
        super().__init__()
        # Callables are not hyper-parameters a checkpoint can rebuild; LightningCLI records the
        # full config (optimizer included) beside the logs.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if loss is None:
            loss = LossConfig()
        elif isinstance(loss, dict):  # hparams keep the dataclass as a dict: load_from_checkpoint
            loss = LossConfig(**loss)
        if eval_protocol is None:
            eval_protocol = EvalProtocol()
        elif isinstance(eval_protocol, dict):  # as `loss`: hparams keep a dict
            eval_protocol = EvalProtocol(**eval_protocol)
        self.eval_protocol = eval_protocol
        self.protocol_description = eval_protocol.describe()
        self._protocol_announced = False
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ConfigError(
                f"model.class_names: {len(class_names)} names for num_classes={num_classes}"
            )
        self.class_names = list(class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        if nonfinite_loss not in ("stop", "skip", "off"):
            raise ConfigError(
                f"model.nonfinite_loss: expected 'stop', 'skip' or 'off', got {nonfinite_loss!r}"
            )
        self.nonfinite_loss = nonfinite_loss
        self.nonfinite_batch_dir = nonfinite_batch_dir
        self.skipped_nonfinite = 0  # batches skipped in this run (nonfinite_loss="skip")
        self._window_has_update = True  # skip mode: a finite batch in this accumulation window
        self.net = build_model(
            arch, encoder_name, encoder_weights, in_channels, num_classes, model_kwargs
        )
        self.stride = output_stride(self.net)
        self.criterion = build_loss(loss, num_classes, ignore_index)
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.test_metrics = SegmentationMetrics(num_classes, ignore_index)
        # The last computed metrics per stage, as plain tensors, for reports and callbacks.
        self.last_metrics: dict[str, dict[str, torch.Tensor]] = {}
        # Running loss sums of the current validation/test epoch (see _evaluate).
        self._eval_loss_sums: dict[str, dict[str, torch.Tensor]] = {}
        self._eval_loss_counts: dict[str, torch.Tensor | float] = {}

    # --- hooks a subclass overrides ---------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W) for images (B, in_channels, H, W) of any H, W; images
        the network cannot take (channels, too small) raise a one-line ConfigError."""
        return forward_checked(self.net, images, self.stride)

    def compute_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"loss": total, <term>: unweighted term...} for logits (B, K, H, W), masks (B, H, W)."""
        return self.criterion(logits, masks)

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> dict[str, torch.Tensor]:
        """One step of any stage: {"logits": (B, K, H, W), "loss": scalar, <loss terms>...}."""
        images = batch["image"]
        logits = self(images) if stage == "train" else self.evaluation_logits(images)
        return {"logits": logits, **self.compute_loss(logits, batch["mask"])}

    def evaluation_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) under `eval_protocol`, for validation, test and predict: `forward`
        itself for the plain whole image, else seglight.inference.predict_logits over `forward`
        (with TTA views: the log of the averaged probabilities)."""
        if self.eval_protocol.is_plain:
            return self(images)
        return predict_logits(self, images, self.stride, self.eval_protocol, self.num_classes)

    # --- Lightning steps ------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        skip = self.nonfinite_loss == "skip"
        if skip and batch_idx % self.trainer.accumulate_grad_batches == 0:
            self._window_has_update = False  # a new gradient-accumulation window starts
        # The forward updates BatchNorm running statistics; a skipped batch's update is undone
        # from this copy (buffers only, not weights: ~10k floats for a resnet18 Unet).
        saved_buffers = [b.detach().clone() for b in self.buffers()] if skip else []
        out = self.shared_step(batch, "train")
        size = batch["image"].shape[0]
        if self.nonfinite_loss != "off":
            bad_ranks = self._nonfinite_ranks(out["loss"])
            if bad_ranks:
                message = self._nonfinite_report(out, batch, batch_idx, bad_ranks)
                if not skip:
                    raise NonFiniteLossError(message)
                with torch.no_grad():
                    for buffer, saved in zip(self.buffers(), saved_buffers, strict=True):
                        buffer.copy_(saved)
                self.skipped_nonfinite += 1
                warnings.warn(f"skipping the batch: {message}", RuntimeWarning, stacklevel=1)
                self._log_skipped(size)
                return self._skipped_step_loss()
        if skip:
            self._window_has_update = True
            self._log_skipped(size)
        self._log_losses(out, "train", size)
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Class indices (B, H, W) int64 at the batch's size. Each image is predicted alone at its
        own size batch["size"] (seglight.inference.split_images); pixels outside it (batches of
        unequal images are padded) hold ignore_index."""
        images = batch["image"]  # (B, C, H, W)
        masks = torch.full((images.shape[0], *images.shape[-2:]), self.ignore_index,
                           dtype=torch.long, device=images.device)  # fmt: skip
        for i, one in enumerate(split_images(batch)):
            h, w = one["image"].shape[-2:]
            masks[i, :h, :w] = self.evaluation_logits(one["image"]).argmax(1)[0]
        return masks

    def on_validation_start(self) -> None:
        self._announce_protocol()

    def on_test_start(self) -> None:
        self._announce_protocol()

    def on_predict_start(self) -> None:
        self._announce_protocol()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def configure_callbacks(self) -> list[L.Callback]:
        return [ClassReport(), PreemptionCheckpoint(), RngState()]

    def configure_optimizers(self) -> Any:
        # A class as the signature default would be clearer, but jsonargparse then loses it when
        # `--model` switches to a subclass; so null stands for AdamW.
        make_optimizer = self.optimizer or torch.optim.AdamW
        optimizer = make_optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if isinstance(scheduler, _TrainerLengthLR) and scheduler.total_steps is None:
            scheduler.total_steps = int(self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.hparams.lr_scheduler_interval,
                "monitor": self.hparams.lr_scheduler_monitor,
            },
        }

    # --- non-finite loss guard (nonfinite_loss, nonfinite_batch_dir) --------------------

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Skip mode: a window of only skipped batches holds zero gradients (_skipped_step_loss);
        # None instead makes the optimizer leave every parameter alone (no weight decay, no
        # momentum, no step count), as after a training_step returning None. A window with some
        # finite batches steps on their gradients (each still divided by accumulate_grad_batches).
        if self.nonfinite_loss == "skip" and not self._window_has_update:
            optimizer.zero_grad(set_to_none=True)

    def _nonfinite_ranks(self, loss: torch.Tensor) -> list[int]:
        """The ranks whose loss is nan/inf at this step, the same list on every process.

        Cost: one host sync per step (a GPU run waits for the forward before queueing the
        backward) and, under DDP, one all-reduce of world_size ints: all processes must stop or
        skip together, else the others would wait forever in the next gradient all-reduce."""
        flags = torch.zeros(self.trainer.world_size, dtype=torch.int32, device=loss.device)
        flags[self.global_rank] = (~torch.isfinite(loss.detach())).int()
        flags = self.trainer.strategy.reduce(flags, reduce_op="sum")  # identity on one process
        return flags.nonzero().flatten().tolist()

    def _nonfinite_report(
        self, out: dict[str, torch.Tensor], batch: dict[str, Any], batch_idx: int, ranks: list[int]
    ) -> str:
        """One line: the loss and its non-finite terms, where, the batch's files, and the file
        the batch was saved to. Runs only when a loss was non-finite."""
        where = f"epoch {self.current_epoch}, global step {self.global_step}, batch {batch_idx}"
        world = self.trainer.world_size
        if self.global_rank not in ranks:  # this process's loss is finite; another's is not
            return f"non-finite training loss on process rank(s) {ranks} of {world} at {where}"
        losses = {k: float(v.detach()) for k, v in out.items() if k != "logits"}
        terms = [f"{k}={v}" for k, v in losses.items() if k != "loss" and not math.isfinite(v)]
        names = [str(n) for n in batch.get("name", [])]
        finite_images = torch.isfinite(batch["image"]).flatten(1).all(1).tolist()  # (B,)
        bad_images = [n for n, ok in zip(names, finite_images, strict=False) if not ok]
        text = f"non-finite training loss {losses['loss']} at {where}"
        if terms:
            text += f" (non-finite terms: {', '.join(terms)})"
        if world > 1:
            text += f" on process rank {self.global_rank} of {world}"
        text += f"; batch files: {', '.join(names) if names else '(no batch[name])'}"
        if bad_images:
            text += f" (non-finite input image: {', '.join(bad_images)})"
        if self.nonfinite_batch_dir is not None:
            text += f"; batch saved to {self._save_nonfinite_batch(batch, batch_idx, losses)}"
        return text

    def _save_nonfinite_batch(
        self, batch: dict[str, Any], batch_idx: int, losses: dict[str, float]
    ) -> Path:
        """torch.save the batch (tensors on the CPU) and where it happened; returns the path."""
        folder = Path(self.nonfinite_batch_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        step, rank = self.global_step, self.global_rank
        path = folder / f"nonfinite_epoch{self.current_epoch}_step{step}_rank{rank}.pt"
        record = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
        record.update(epoch=self.current_epoch, step=step, batch_idx=batch_idx, rank=rank,
                      losses=losses)  # fmt: skip
        torch.save(record, path)
        return path

    def _skipped_step_loss(self) -> torch.Tensor:
        """0, with a zero gradient for every trainable parameter: under DDP every process then
        runs the same gradient all-reduce (Lightning refuses a None loss with several
        processes), and fp16 AMP's GradScaler has gradients to check."""
        params = [p for p in self.parameters() if p.requires_grad]
        return sum(p.sum() for p in params) * 0.0  # python's sum: parameters of mixed dtypes

    def _log_skipped(self, batch_size: int) -> None:
        """Batches skipped so far in this run, logged once per epoch (the same on every rank)."""
        self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), on_step=False,
                 on_epoch=True, reduce_fx="max", sync_dist=True, batch_size=batch_size)  # fmt: skip

    # --- helpers --------------------------------------------------------------------------

    def _evaluate(self, batch: dict[str, Any], stage: Stage, metrics: SegmentationMetrics) -> None:
        """Metrics and losses of a validation/test batch, one image at a time at its own size
        (seglight.inference.split_images): a score is a function of the checkpoint, the data and
        the protocol, never of the batch size or of how many processes split the set."""
        sums = self._eval_loss_sums.setdefault(stage, {})
        for one in split_images(batch):
            out = self.shared_step(one, stage)
            # The split's loss is the mean over its labelled images of each image's loss, summed
            # here and reduced over processes at epoch end (Lightning's sync_dist would average
            # the processes' means). A tensor weight: no host sync.
            labelled = (one["mask"] != self.ignore_index).any().double()  # 0. or 1.
            for key, value in out.items():
                if key != "logits":
                    sums[key] = sums.get(key, 0.0) + value.detach().double() * labelled
            count = self._eval_loss_counts.get(stage, 0.0)
            self._eval_loss_counts[stage] = count + labelled
            metrics.update(out["logits"].argmax(1), one["mask"])

    def _announce_protocol(self) -> None:
        """Print the evaluation protocol once per run, so every result says how it was made."""
        if not self._protocol_announced:
            rank_zero_info(f"seglight: evaluation protocol: {self.protocol_description}")
            self._protocol_announced = True

    def _log_losses(self, out: dict[str, torch.Tensor], stage: Stage, batch_size: int) -> None:
        """Training losses: per step and per-epoch mean (per process, as Lightning does)."""
        for key, value in out.items():
            if key == "logits":
                continue
            name = f"{stage}/loss" if key == "loss" else f"{stage}/loss_{key}"
            self.log(name, value, on_step=True, on_epoch=True, prog_bar=key == "loss",
                     batch_size=batch_size)  # fmt: skip

    def _log_eval_losses(self, stage: Stage) -> None:
        """Mean loss over the labelled images of the split, on all processes together."""
        sums = self._eval_loss_sums.pop(stage, {})
        count = self._eval_loss_counts.pop(stage, 0)
        reduce = self.trainer.strategy.reduce
        count = torch.as_tensor(count, dtype=torch.float64, device=self.device)
        total = reduce(count, reduce_op="sum")
        for key, value in sums.items():
            name = f"{stage}/loss" if key == "loss" else f"{stage}/loss_{key}"
            mean = reduce(value.to(self.device), reduce_op="sum") / total.clamp(min=1)
            self.log(name, mean.float(), prog_bar=key == "loss")

    def _log_metrics(self, stage: Stage, metrics: SegmentationMetrics) -> None:
        """Compute over the whole split (synced across processes) and log under `stage/`."""
        self._log_eval_losses(stage)
        result = {k: v.detach().cpu() for k, v in metrics.compute().items()}
        metrics.reset()
        if int(result["confmat"].sum()) == 0 and not self.trainer.sanity_checking:
            rank_zero_warn(
                f"{stage}: no labelled pixel in the whole split, so every metric is NaN. "
                f"Is it a split without public labels (e.g. a benchmark's test set)?"
            )
        self.last_metrics[stage] = result
        # Values are already reduced over all processes by torchmetrics: no sync_dist.
        self.log(f"{stage}/mIoU", result["mIoU"].float(), prog_bar=True)
        logged = {f"{stage}/{k}": result[k].float() for k in ("pixel_acc", "mAcc")}
        pixels = result["confmat"].sum(1).float()  # (C,) ground-truth pixels per class
        for i, name in enumerate(self.class_names):
            logged[f"{stage}/IoU/{name}"] = result["IoU"][i].float()
            logged[f"{stage}/acc/{name}"] = result["acc"][i].float()
            if stage == "test":  # the report's pixel counts, for loggers without files
                logged[f"{stage}/pixels/{name}"] = pixels[i]
        self.log_dict(logged)

    @_restricted_classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, *args: Any, weights_only: bool | None = True, **kwargs: Any
    ) -> "SegmentationModule":
        """Lightning's load_from_checkpoint, with weights_only=True by default and a local file
        checked first: a truncated, empty or foreign file is a one-line ConfigError naming it
        (seglight.checkpointing.read_checkpoint)."""
        if isinstance(checkpoint_path, str | Path) and "://" not in str(checkpoint_path):
            checkpoint = read_checkpoint(checkpoint_path, what="load_from_checkpoint")
            check_seglight_checkpoint(checkpoint_path, checkpoint, what="load_from_checkpoint")
        return super().load_from_checkpoint(
            checkpoint_path, *args, weights_only=weights_only, **kwargs
        )
