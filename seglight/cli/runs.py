"""Repeated runs of one experiment, shared by `seglight seeds` and `seglight cv`.

fit_and_test     one run: the CLI built from the fit flags plus this run's own, `fit`, then
                 `test` on its best (or last) checkpoint, kept in a subfolder of its own
summarize        {metric: {mean, std, n}} over the runs (sample std, n-1)
format_summary   the printed table: the headline metric per run, then mean ± std
write_summary    the JSON {"runs": [...], "summary": {...}} and the printed table, on rank 0
"""

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seglight.cli.lightning import build_cli
from seglight.cli.parser import one_line_errors
from seglight.errors import ConfigError

RUN_KEYS = ("seed", "fold", "checkpoint")  # what a row names, not a metric


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its whole usage before an error; seglight's errors are one line."""

    def error(self, message: str):  # type: ignore[override]
        name = self.prog.split()[-1]
        sys.stderr.write(f"seglight: error: {name}: {message} (`{self.prog} --help`)\n")
        sys.exit(2)


def add_test_ckpt(parser: argparse.ArgumentParser, each: str) -> None:
    """The --test_ckpt option seeds and cv share: which checkpoint of each run is tested."""
    parser.add_argument(
        "--test_ckpt",
        choices=["best", "last"],
        default="best",
        help=f"Checkpoint each {each} is tested with (best = the ModelCheckpoint's monitor).",
    )


def strip_subcommand(fit_args: list[str]) -> list[str]:
    """`seglight seeds fit --config ...` reads naturally too: drop a leading Lightning verb."""
    if any(a in ("fit", "validate", "test", "predict") for a in fit_args[:1]):
        return fit_args[1:]
    return fit_args


def fit_and_test(
    fit_args: Sequence[str],
    run_args: Sequence[str],
    subdir: str,
    test_ckpt: str = "best",
    per_class: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Fit with `fit_args` + `run_args` (this run's own flags), checkpoints in `<the config's
    checkpoint dir>/<subdir>`, then test `test_ckpt` ("best": the ModelCheckpoint's monitor, or
    "last"). Returns ({"checkpoint", "best <monitor>", "test/<metric>": value, ...}, the CLI);
    `per_class`: with "test/<IoU|acc|...>/<class>" too (the task's per-class metrics)."""
    with one_line_errors():
        cli = build_cli([*fit_args, *run_args], run=False)
    trainer = cli.trainer
    for callback in trainer.checkpoint_callbacks:
        if callback.dirpath:  # a fixed folder in the config: one subfolder per run
            callback.dirpath = str(Path(callback.dirpath) / subdir)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    checkpoint = trainer.checkpoint_callback
    ckpt_path = None
    if checkpoint is not None:
        ckpt_path = (
            checkpoint.best_model_path if test_ckpt == "best" else checkpoint.last_model_path
        )
        if not ckpt_path:
            raise ConfigError(
                f"--test_ckpt {test_ckpt}: {subdir.replace('_', ' ')} wrote no such checkpoint "
                "(does the ModelCheckpoint monitor a metric / save_last?)"
            )
    results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)[0]
    row: dict[str, Any] = {"checkpoint": ckpt_path}
    if checkpoint is not None and checkpoint.best_model_score is not None:
        row[f"best {checkpoint.monitor}"] = float(checkpoint.best_model_score)
    row.update(metrics_of(results, cli.model if per_class else None))
    finish_wandb()
    return row, cli


def metrics_of(results: dict[str, Any], model: Any = None) -> dict[str, float]:
    """The "<stage>/<metric>" values of a test's results; with `model`, also its task's
    per-class ones, "<stage>/<IoU|acc|...>/<class>" (not the pixel counts)."""
    kinds = getattr(getattr(model, "spec", None), "per_class", ()) if model is not None else ()
    out = {}
    for key, value in results.items():
        parts = key.split("/")
        if len(parts) == 2 or (len(parts) == 3 and parts[1] in kinds):
            out[key] = float(value)
    return out


def headline_of(model: Any) -> str:
    """The task's headline metric: mIoU, binary fg_IoU."""
    return getattr(getattr(model, "spec", None), "headline", "mIoU")


def summarize(rows: list[dict], drop_nan: bool = False) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n}} over the runs; std is the sample standard deviation (n-1), NaN
    for a single run. `drop_nan`: a NaN value (a class absent from a fold) is left out of n."""
    metrics = [k for k in rows[0] if k not in RUN_KEYS]
    metrics += [k for row in rows[1:] for k in row if k not in RUN_KEYS and k not in metrics]
    out = {}
    for name in metrics:
        values = [r[name] for r in rows if name in r]
        if drop_nan:
            values = [v for v in values if not math.isnan(v)]
        if not values:
            out[name] = {"mean": math.nan, "std": math.nan, "n": 0}
            continue
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        out[name] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return out


def format_summary(
    rows: list[dict],
    summary: dict[str, dict[str, float]],
    headline: str = "mIoU",
    label: str = "seed",
    per_class: str | None = None,
) -> str:
    """The table of the task's `headline` metric (mIoU; binary: fg_IoU) and pixel_acc: each
    run's (named by its `label` key), then mean ± std; `per_class` (e.g. "IoU"): the mean ± std
    of "test/<per_class>/<class>" too. Every metric is in the JSON."""
    names = (headline, "pixel_acc")
    shown = [m for m in summary if m.count("/") <= 1 and m.split("/")[-1] in names]
    width = max(len(m) for m in shown)
    lines = [f"{label:>6}  " + "  ".join(f"{m:>{width}}" for m in shown)]
    for row in rows:
        lines.append(f"{row[label]:>6}  " + "  ".join(f"{row[m]:>{width}.4f}" for m in shown))
    lines.append(f"mean ± std over {label}s (sample std, n-1):")
    for m in shown:
        s = summary[m]
        lines.append(f"  {m}: {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
    classes = [m for m in summary if per_class and m.startswith(f"test/{per_class}/")]
    if classes:
        lines.append(f"per class ({per_class}):")
        for m in classes:
            s = summary[m]
            lines.append(f"  {m}: {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
    return "\n".join(lines)


def write_summary(path: Path, content: dict[str, Any], table: str, what: str) -> None:
    """`content` as JSON at `path`, and the table printed (rank 0 only)."""
    if not is_rank_zero():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))
    print(table)
    print(f"{what} summary: {path}")


def finish_wandb() -> None:
    """A W&B logger reuses the process's active run: end it, so the next run gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0
