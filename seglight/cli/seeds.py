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
from collections.abc import Sequence
from pathlib import Path

from seglight.cli.runs import (
    OneLineParser,
    add_test_ckpt,
    fit_and_test,
    format_summary,
    headline_of,
    strip_subcommand,
    summarize,
    write_summary,
)
from seglight.errors import ConfigError

_OneLineParser = OneLineParser  # its old name


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="seglight seeds",
        description="Run fit + test once per seed and report mean ± std of the test metrics. "
        "Every other flag (--config, --model.*, --data.*, --trainer.*) goes to `fit`.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds to run.")
    add_test_ckpt(parser, "seed")
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
    fit_args = strip_subcommand(fit_args)
    rows = []
    for seed in args.seeds:
        row, cli = fit_and_test(
            fit_args, [f"--seed_everything={seed}"], f"seed_{seed}", args.test_ckpt
        )
        rows.append({"seed": seed, **row})
    summary = summarize(rows)
    root = Path(cli.trainer.default_root_dir)
    path = Path(args.summary) if args.summary else root / "seeds_summary.json"
    table = format_summary(rows, summary, headline_of(cli.model))  # binary: fg_IoU
    write_summary(path, {"runs": rows, "summary": summary}, table, "seeds")
    return 0


__all__ = ["build_parser", "format_summary", "run_seeds", "summarize"]
