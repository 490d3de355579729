"""SegmentationModule: any smp (or torchvision) network + loss + mIoU metrics + injected optimizer.

    python -m seglight fit --config configs/quickstart.yaml --model.arch=FPN --model.loss.dice=0.5

Batches are dicts: "image" float (B, C, H, W), "mask" long (B, H, W) (multilabel: (B, L, H, W)
0/1 per label) with ignore_index where unlabelled. The module is built from one hook per
concern, so a subclass changes one thing: `configure_models` (self.net), `configure_losses`
(self.criterion), `configure_metrics` (self.val_metrics, self.test_metrics, the evaluation-
loss means); a step is `shared_step` -> `compute_loss`. Select a subclass with
`--model path.to.MyModule`.
"""

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics.aggregation import MeanMetric

from seglight.checkpoints import load_module
from seglight.compat import _restricted_classmethod
from seglight.errors import ConfigError
from seglight.evaluation import EvalProtocol, predict_logits, split_images
from seglight.image_scores import ImageScores
from seglight.input_check import forward_checked
from seglight.losses import LossConfig, build_loss
from seglight.metrics import SegmentationMetrics
from seglight.networks import build_model, output_stride
from seglight.networks.compiled import CompileSetting, as_contiguous, speed_up, to_channels_last
from seglight.networks.parts import encoder_lr_groups, scale_group_lrs
from seglight.nonfinite import NonFiniteGuard, NonFiniteLoss
from seglight.schedulers import _TrainerLengthLR
from seglight.tasks import Task, task_spec

Stage = Literal["train", "val", "test"]


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
            window, flip / multi-scale test-time augmentation (see seglight.evaluation.
            EvalProtocol), e.g. `--model.eval_protocol.mode=slide
            --model.eval_protocol.window=[512,512]`; null = whole image. Training is unaffected;
            val/test losses are computed on the protocol's output. Recorded in the hyper-
            parameters and printed at the start of validate/test/predict.
        nonfinite_loss: what a nan/inf training loss does, checked at every step: "stop" (a
            one-line error naming the terms, step and files; exit 1), "skip" (no optimizer
            step, counted in `train/skipped_nonfinite`) or "off" (no check, no host sync per
            step); see seglight.nonfinite.
        task: "multiclass" (softmax over num_classes), "binary" (background/foreground: one
            logit, sigmoid >= threshold) or "multilabel" (one sigmoid per label, num_classes
            labels); linked from the data module (data.task).
        threshold: probability from which a pixel is predicted foreground (binary) or to carry
            a label (multilabel); recorded in the hyper-parameters and the test report.
        nonfinite_batch_dir: folder where a batch with a non-finite loss is saved with
            torch.save (its image, mask, name, ... plus epoch, step, batch_idx, rank, losses),
            to reproduce it; null = not saved.
        compile: torch.compile the network (training and evaluation forward): null/false = off,
            true, a mode (e.g. max-autotune) or a dict of torch.compile arguments, e.g.
            {backend: inductor, dynamic: true}; checkpoints keep the plain network's names.
        channels_last: network weights and input batches in torch.channels_last memory format
            (faster convolutions on recent GPUs); logits come back in the default format.
        encoder_lr_factor: the encoder (smp `net.encoder`, torchvision `backbone`) trains at
            this times the optimizer's learning rate, under the same schedule (e.g. 0.1 to
            fine-tune a pretrained encoder gently); 1 = one learning rate for all.
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
        task: Task = "multiclass",
        threshold: float = 0.5,
        compile: CompileSetting = None,
        channels_last: bool = False,
        encoder_lr_factor: float = 1.0,
    ) -> None:
        super().__init__()
        # Callables are not hyper-parameters a checkpoint can rebuild; LightningCLI records the
        # full config (optimizer included) beside the logs.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if isinstance(loss, dict):  # hparams keep the dataclass as a dict: load_from_checkpoint
            loss = LossConfig(**loss)
        self.loss_config = loss or LossConfig()
        if isinstance(eval_protocol, dict):  # as `loss`: hparams keep a dict
            eval_protocol = EvalProtocol(**eval_protocol)
        self.eval_protocol = eval_protocol or EvalProtocol()
        self.protocol_description = self.eval_protocol.describe()
        self._protocol_announced = False
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ConfigError(
                f"model.class_names: {len(class_names)} names for num_classes={num_classes}"
            )
        self.spec = task_spec(task, num_classes, ignore_index, threshold, class_names)
        self.task, self.threshold = task, self.spec.threshold
        self.out_channels = self.spec.out_channels  # one per class or label; 1 for binary
        self.class_names = list(class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.nonfinite = NonFiniteGuard(nonfinite_loss, nonfinite_batch_dir)
        # The last computed metrics per stage, as plain tensors, for reports and callbacks.
        self.last_metrics: dict[str, dict[str, torch.Tensor]] = {}
        self.image_scores = ImageScores()  # test: each image's headline score, the worst kept
        self.configure_models()
        speed_up(self.net, compile, channels_last)  # in place: state_dict names stay the net's
        self.channels_last = channels_last
        self.encoder_lr_factor = encoder_lr_factor
        encoder_lr_groups([], self.net, arch, encoder_lr_factor)  # a bad value fails here
        self.configure_losses()
        self.configure_metrics()

    # --- hooks a subclass overrides (one concern each) -----------------------------------

    def configure_models(self) -> None:
        """self.net: images (B, in_channels, H, W) -> logits (B, num_classes, H, W), built by
        name (seglight.networks); self.stride: the side lengths the network needs a multiple of."""
        hp = self.hparams
        self.net = build_model(
            hp.arch, hp.encoder_name, hp.encoder_weights, hp.in_channels, self.out_channels,
            hp.model_kwargs,
        )  # fmt: skip
        self.stride = output_stride(self.net)

    def configure_losses(self) -> None:
        """self.criterion: (logits, mask) -> {"loss": total, <term>: unweighted term, ...}."""
        self.criterion = build_loss(
            self.loss_config, self.num_classes, self.ignore_index, task=self.task
        )

    def configure_metrics(self) -> None:
        """Metrics of the validation and test splits: one confusion matrix each (summed over
        processes), and the mean over labelled images of each loss term, weighted by torchmetrics'
        MeanMetric (exact across processes, no host sync per step)."""
        self.val_metrics, self.test_metrics = self.spec.metrics(), self.spec.metrics()
        terms = ["loss", *getattr(self.criterion, "weights", {})]
        self.eval_losses = nn.ModuleDict(
            {stage: nn.ModuleDict({t: _mean_metric() for t in terms}) for stage in ("val", "test")}
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, out_channels, H, W) for images (B, in_channels, H, W) of any H, W (one
        channel per class; one foreground logit for binary); images the network cannot take
        (channels, too small) raise a one-line ConfigError."""
        images = to_channels_last(images, self.channels_last)
        return as_contiguous(forward_checked(self.net, images, self.stride), self.channels_last)

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
        itself for the plain whole image, else seglight.evaluation.predict_logits over `forward`
        (with TTA views: the log of the averaged probabilities)."""
        if self.eval_protocol.is_plain:
            return self(images)
        return predict_logits(
            self, images, self.stride, self.eval_protocol, self.out_channels, self.spec.activation
        )

    def predict_masks(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices (B, H, W) int64 from logits (B, K, H, W): the argmax, or for binary
        sigmoid >= threshold (1 = foreground); multilabel: (B, L, H, W) 0/1 per label, sigmoid
        >= threshold; see seglight.tasks."""
        return self.spec.masks(logits)

    def metric_inputs(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics count from logits (B, K, H, W): class indices (B, H, W), or for
        binary the foreground probability (B, H, W), multilabel the probabilities (B, L, H, W)
        (the metric applies the threshold)."""
        return self.spec.metric_inputs(logits)

    # --- Lightning steps ------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        saved_buffers = self.nonfinite.begin(self, batch_idx)
        out = self.shared_step(batch, "train")
        replacement = self.nonfinite.check(self, out, batch, batch_idx, saved_buffers)
        if replacement is not None:  # a skipped non-finite batch
            return replacement
        self._log_losses(out, "train", batch["image"].shape[0])
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Class indices (B, H, W) int64 at the batch's size (multilabel: (B, L, H, W) 0/1 per
        label). Each image is predicted alone at its
        own size batch["size"] (seglight.evaluation.split_images); pixels outside it (batches of
        unequal images are padded) hold ignore_index."""
        images = batch["image"]  # (B, C, H, W)
        labels = (self.num_classes,) if self.spec.multilabel else ()  # (B, L, H, W) 0/1 masks
        masks = torch.full((images.shape[0], *labels, *images.shape[-2:]), self.ignore_index,
                           dtype=torch.long, device=images.device)  # fmt: skip
        for i, one in enumerate(split_images(batch)):
            h, w = one["image"].shape[-2:]
            masks[i, ..., :h, :w] = self.predict_masks(self.evaluation_logits(one["image"]))[0]
        return masks

    def on_validation_start(self) -> None:
        self._announce_protocol()

    def on_test_start(self) -> None:
        self._announce_protocol()
        self.image_scores = ImageScores()  # this process's test images: name, headline score

    def on_predict_start(self) -> None:
        self._announce_protocol()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def configure_optimizers(self) -> Any:
        # A class as the signature default would be clearer, but jsonargparse then loses it when
        # `--model` switches to a subclass; so null stands for AdamW.
        make_optimizer = self.optimizer or torch.optim.AdamW
        groups = encoder_lr_groups(
            list(self.named_parameters()), self.net, self.hparams.arch, self.encoder_lr_factor
        )
        optimizer = make_optimizer(groups)
        scale_group_lrs(optimizer)  # the encoder's group: lr * encoder_lr_factor
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

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.nonfinite.before_optimizer_step(optimizer)

    @property
    def nonfinite_loss(self) -> NonFiniteLoss:
        """The `nonfinite_loss` setting (seglight.nonfinite.NonFiniteGuard holds it)."""
        return self.nonfinite.mode

    @property
    def skipped_nonfinite(self) -> int:
        """Batches skipped in this run for a non-finite loss (nonfinite_loss="skip")."""
        return self.nonfinite.skipped

    # --- helpers --------------------------------------------------------------------------

    def _evaluate(self, batch: dict[str, Any], stage: Stage, metrics: SegmentationMetrics) -> None:
        """Metrics and losses of a validation/test batch, one image at a time at its own size
        (seglight.evaluation.split_images): a score is a function of the checkpoint, the data and
        the protocol, never of the batch size or of how many processes split the set."""
        losses = self.eval_losses[stage]
        for one in split_images(batch):
            out = self.shared_step(one, stage)
            # The split's loss is the mean over its labelled images of each image's loss: a
            # tensor weight (0. or 1.), so no host sync; reduced over processes by torchmetrics.
            labelled = (one["mask"] != self.ignore_index).any().double()
            for key, value in out.items():
                if key == "logits":
                    continue
                if key not in losses:  # a term a subclass's compute_loss adds
                    losses[key] = _mean_metric().to(value.device)
                losses[key].update(value.detach().double(), labelled)
            inputs = self.metric_inputs(out["logits"])
            metrics.update(inputs, one["mask"])
            if stage == "test":  # the per-image report (ClassReport): which images fail
                name = one["name"][0] if "name" in one else str(len(self.image_scores))
                score = self.spec.image_score(inputs, one["mask"])
                pred = self.spec.masks_of_inputs(inputs)  # no second argmax / sigmoid
                self.image_scores.add(name, score, one["image"], one["mask"], pred)

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
        """Mean loss over the labelled images of the split, on all processes together (NaN when
        no image is labelled, like the metrics)."""
        for key, mean in self.eval_losses[stage].items():
            name = f"{stage}/loss" if key == "loss" else f"{stage}/loss_{key}"
            self.log(name, mean.compute().float(), prog_bar=key == "loss")
            mean.reset()

    def _log_metrics(self, stage: Stage, metrics: SegmentationMetrics) -> None:
        """Compute over the whole split (synced across processes) and log under `stage/`:
        mIoU, mAcc, pixel_acc and per-class IoU/acc; binary: fg_IoU (the foreground's IoU),
        fg_dice, fg_precision, fg_recall and mIoU_2class (mean over both classes, the figure
        multiclass papers give) instead of mIoU; multilabel: mIoU, mF1, IoU_micro, F1_micro,
        pixel_acc and per-label IoU/F1/precision/recall (seglight.tasks)."""
        self._log_eval_losses(stage)
        result = {k: v.detach().cpu() for k, v in metrics.compute().items()}
        metrics.reset()
        result = self.spec.result(result)  # per-class view for tables/reports + the task's own
        if int(result["counted"]) == 0 and not self.trainer.sanity_checking:
            rank_zero_warn(
                f"{stage}: no labelled pixel in the whole split, so every metric is NaN. "
                f"Is it a split without public labels (e.g. a benchmark's test set)?"
            )
        self.last_metrics[stage] = result
        # Values are already reduced over all processes by torchmetrics: no sync_dist.
        headline = self.spec.headline
        self.log(f"{stage}/{headline}", result[headline].float(), prog_bar=True)
        logged = {f"{stage}/{k}": result[k].float() for k in self.spec.logged}
        pixels = result["pixels"].float()  # (C,) ground-truth pixels per class (or label)
        for i, name in enumerate(self.class_names):
            for key in self.spec.per_class:
                logged[f"{stage}/{key}/{name}"] = result[key][i].float()
            if stage == "test":  # the report's pixel counts, for loggers without files
                logged[f"{stage}/pixels/{name}"] = pixels[i]
        self.log_dict(logged)

    @_restricted_classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, *args: Any, weights_only: bool | None = True, **kwargs: Any
    ) -> "SegmentationModule":
        """Lightning's load_from_checkpoint, with weights_only=True by default; a local file is
        read once, checked (a truncated, empty or foreign file is a one-line ConfigError naming
        it) and built from that read (seglight.checkpoints.load_module)."""
        if isinstance(checkpoint_path, str | Path) and "://" not in str(checkpoint_path):
            return load_module(
                checkpoint_path, *args, cls=cls, weights_only=weights_only,
                what="load_from_checkpoint", **kwargs,
            )  # fmt: skip
        return super().load_from_checkpoint(  # remote files and streams: Lightning reads them
            checkpoint_path, *args, weights_only=weights_only, **kwargs
        )


def _mean_metric() -> MeanMetric:
    """A float64 weighted mean that keeps NaN (no per-update NaN check: no host sync)."""
    metric = MeanMetric(nan_strategy="disable")
    metric.set_dtype(torch.float64)
    return metric
