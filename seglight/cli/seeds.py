"""`seglight seeds`: one experiment with several seeds, and the mean ± std of its test metrics.

    python -m seglight seeds --seeds 0 1 2 --config configs/quickstart.yaml [fit flags...]

Each seed runs `fit` with `--seed_everything=<seed>`, then `test` on its best checkpoint (the
ModelCheckpoint's monitor; `--test_ckpt last` for the last one), in this process, one after
another. Checkpoints of seed s go to `<the config's checkpoint dir>/seed_<s>`; each run logs as
a new logger version. The table (the task's headline metric: mIoU, binary fg_IoU) and the
summary of every test metric (sample std, n-1) are printed / written to
`<default_root_dir>/seeds_summary.json`.
"""

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from seglight.cli.lightning import build_cli
from seglight.cli.parser import one_line_errors
from seglight.errors import ConfigError


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints its whole usage before an error; seglight's errors are one line."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"seglight: error: seeds: {message} (`seglight seeds --help`)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="seglight seeds",
        description="Run fit + test once per seed and report mean ± std of the test metrics. "
        "Every other flag (--config, --model.*, --data.*, --trainer.*) goes to `fit`.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds to run.")
    parser.add_argument(
        "--test_ckpt",
        choices=["best", "last"],
        default="best",
        help="Checkpoint each seed is tested with (best = the ModelCheckpoint's monitor).",
    )
    parser.add_argument(
        "--summary",
        default=None,
        help="JSON file for the results (default: <root>/seeds_summary.json).",
    )
    return parser


def run_seeds(argv: Sequence[str]) -> int:
    args, fit_args = build_parser().parse_known_args(list(argv))
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds: each seed once, got {args.seeds}")
    if any(a in ("fit", "validate", "test", "predict") for a in fit_args[:1]):
        fit_args = fit_args[1:]  # `seglight seeds fit --config ...` reads naturally too
    rows, root = [], Path(".")
    for seed in args.seeds:
        with one_line_errors():
            cli = build_cli([*fit_args, f"--seed_everything={seed}"], run=False)
        trainer = cli.trainer
        root = Path(trainer.default_root_dir)
        for callback in trainer.checkpoint_callbacks:
            if callback.dirpath:  # a fixed folder in the config: one subfolder per seed
                callback.dirpath = str(Path(callback.dirpath) / f"seed_{seed}")
        trainer.fit(cli.model, datamodule=cli.datamodule)
        checkpoint = trainer.checkpoint_callback
        ckpt_path = None
        if checkpoint is not None:
            ckpt_path = (
                checkpoint.best_model_path
                if args.test_ckpt == "best"
                else checkpoint.last_model_path
            )
            if not ckpt_path:
                raise ConfigError(
                    f"--test_ckpt {args.test_ckpt}: seed {seed} wrote no such checkpoint "
                    "(does the ModelCheckpoint monitor a metric / save_last?)"
                )
        results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)[0]
        row = {"seed": seed, "checkpoint": ckpt_path}
        if checkpoint is not None and checkpoint.best_model_score is not None:
            row[f"best {checkpoint.monitor}"] = float(checkpoint.best_model_score)
        row.update({k: float(v) for k, v in results.items() if "/" in k and k.count("/") == 1})
        rows.append(row)
        _finish_wandb()
    summary = summarize(rows)
    headline = getattr(getattr(cli.model, "spec", None), "headline", "mIoU")  # binary: fg_IoU
    path = Path(args.summary) if args.summary else root / "seeds_summary.json"
    if _is_rank_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"runs": rows, "summary": summary}, indent=2))
        print(format_summary(rows, summary, headline))
        print(f"seeds summary: {path}")
    return 0


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n}} over the runs; std is the sample standard deviation (n-1), NaN
    for a single run."""
    metrics = [k for k in rows[0] if k not in ("seed", "checkpoint")]
    out = {}
    for name in metrics:
        values = [r[name] for r in rows if name in r]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        out[name] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return out


def format_summary(
    rows: list[dict], summary: dict[str, dict[str, float]], headline: str = "mIoU"
) -> str:
    """The table of the task's `headline` metric (mIoU; binary: fg_IoU) and pixel_acc: each
    seed's, then mean ± std. Every metric is in the JSON."""
    shown = [m for m in summary if m.split("/")[-1] in (headline, "pixel_acc")]
    width = max(len(m) for m in shown)
    lines = [f"{'seed':>6}  " + "  ".join(f"{m:>{width}}" for m in shown)]
    for row in rows:
        lines.append(f"{row['seed']:>6}  " + "  ".join(f"{row[m]:>{width}.4f}" for m in shown))
    lines.append("mean ± std over seeds (sample std, n-1):")
    for m in shown:
        s = summary[m]
        lines.append(f"  {m}: {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
    return "\n".join(lines)


def _finish_wandb() -> None:
    """A W&B logger reuses the process's active run: end it, so the next seed gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0
