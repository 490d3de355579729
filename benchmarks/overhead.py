"""What does seglight + Lightning cost per training step over a plain PyTorch loop?

    .venv/bin/python benchmarks/overhead.py [--steps 40] [--warmup 5] [--repeats 4]

Both train the quickstart network (smp Unet, resnet18 encoder, random init) with AdamW and
cross-entropy on the same in-memory batches (16 x 3 x 64 x 64), from the same initial weights, on
the CPU. Step time = time between the starts of consecutive steps, so everything the framework does
between steps (hooks, logging, batch transfer) is counted. Prints both medians, their ratio
(seglight / plain; target <= 1.03) and whether the weights after the run are bit-identical.
Runs alternate (plain, seglight, plain, ...) so machine drift hits both alike.
"""

import argparse
import copy
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F

from seglight import SegmentationModule

KWARGS = dict(
    arch="Unet",
    encoder_name="resnet18",
    num_classes=5,
    model_kwargs={"decoder_channels": [128, 64, 32, 16, 8]},
)
LR, WEIGHT_DECAY = 2e-3, 1e-4


def make_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.randint(0, 5, (16, 64, 64), generator=g)
        mask[torch.rand(mask.shape, generator=g) < 0.1] = 255
        out.append({"image": torch.randn(16, 3, 64, 64, generator=g), "mask": mask})
    return out


def plain_loop(net: torch.nn.Module, batches) -> list[float]:
    """The baseline every researcher writes: zero_grad, forward, loss, backward, step."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    net.train()
    starts = []
    for batch in batches:
        starts.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(batch["image"]), batch["mask"], ignore_index=255)
        loss.backward()
        optimizer.step()
    starts.append(time.perf_counter())
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args) -> None:
        self.starts.append(time.perf_counter())


def lightning_loop(module: SegmentationModule, batches) -> list[float]:
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # batches are pre-made
    trainer.fit(module, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.starts, timer.starts[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(0)
    batches = make_batches(args.steps + args.warmup)
    template = SegmentationModule(
        **KWARGS,
        optimizer=lambda p: torch.optim.AdamW(p, lr=LR, weight_decay=WEIGHT_DECAY),
    )
    initial = copy.deepcopy(template.net.state_dict())

    plain_times, seglight_times, identical = [], [], True
    for _ in range(args.repeats):
        net = copy.deepcopy(template.net)
        net.load_state_dict(initial)
        plain_times += plain_loop(net, batches)[args.warmup :]

        module = copy.deepcopy(template)
        module.net.load_state_dict(initial)
        seglight_times += lightning_loop(module, batches)[args.warmup :]

        ours = module.net.state_dict()
        identical &= all(torch.equal(ours[k], v) for k, v in net.state_dict().items())

    plain, ours = statistics.median(plain_times), statistics.median(seglight_times)
    print(
        f"threads={torch.get_num_threads()} steps={args.steps} x {args.repeats} repeats "
        f"(after {args.warmup} warm-up), batch 16x3x64x64, CPU"
    )
    print(f"plain PyTorch loop  median step: {plain * 1000:8.2f} ms")
    print(f"seglight+Lightning  median step: {ours * 1000:8.2f} ms")
    print(f"ratio seglight/plain: {ours / plain:.3f}  (target <= 1.03)")
    print(f"weights identical after training: {identical}")


if __name__ == "__main__":
    main()
