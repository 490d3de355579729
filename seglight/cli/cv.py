"""`seglight cv`: k-fold cross-validation of one experiment, mean ± std of its test metrics.

    python -m seglight cv --folds 5 --config configs/quickstart.yaml [fit flags...]

The training split of the data module is dealt into k seeded folds (`--seed`; stratified by
class presence for datasets read from files, seglight.data.folds). Fold f runs `fit` with
`--data.fold={k, index: f, ...}`: it trains on the other k-1 folds and is validated and tested
on fold f (`--test split`: tested on the dataset's own test split instead); then `test` on its
best checkpoint, as `seglight seeds` does a seed (seglight.cli.runs). Checkpoints of fold f go to
`<the config's checkpoint dir>/fold_<f>`. Printed and written to
`<default_root_dir>/cv_summary.json`: each fold's metrics, and their mean ± std over folds
(sample std, n-1), per class too. `--ensemble` then tests the k fold models together
(seglight.ensemble.Ensemble: their probabilities averaged) on the dataset's test split.
"""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from seglight.cli.runs import (
    OneLineParser,
    add_test_ckpt,
    fit_and_test,
    format_summary,
    headline_of,
    metrics_of,
    strip_subcommand,
    summarize,
    write_summary,
)
from seglight.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="seglight cv",
        description="k-fold cross-validation: fit + test once per fold of the training split, "
        "mean ± std of the test metrics (per class too). Every other flag (--config, --model.*, "
        "--data.*, --trainer.*) goes to `fit`.",
    )
    parser.add_argument("--folds", type=int, default=5, help="Number of folds k (>= 2).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the assignment to folds.")
    parser.add_argument(
        "--stratify",
        choices=["auto", "true", "false"],
        default="auto",
        help="Deal images by class presence (auto: for datasets read from files).",
    )
    parser.add_argument(
        "--test",
        choices=["fold", "split"],
        default="fold",
        help="Test each fold model on its held-out fold, or on the dataset's own test split.",
    )
    parser.add_argument(
        "--only",
        type=int,
        nargs="+",
        default=None,
        help="Run only these folds (e.g. one per job); the summary covers those run.",
    )
    add_test_ckpt(parser, "fold")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="Then test the fold models together (probabilities averaged) on the test split.",
    )
    parser.add_argument(
        "--summary", default=None, help="JSON file of the results (default: <root>/cv_summary.json)"
    )
    return parser


def run_cv(argv: Sequence[str]) -> int:
    args, fit_args = build_parser().parse_known_args(list(argv))
    if args.folds < 2:
        raise ConfigError(f"--folds: cross-validation needs at least 2 folds, got {args.folds}")
    folds = list(range(args.folds)) if args.only is None else args.only
    if any(not 0 <= f < args.folds for f in folds) or len(set(folds)) != len(folds):
        raise ConfigError(f"--only: distinct folds in 0..{args.folds - 1}, got {args.only}")
    fit_args = strip_subcommand(fit_args)
    stratify = {"auto": None, "true": True, "false": False}[args.stratify]
    rows = []
    for f in folds:
        fold = {"k": args.folds, "index": f, "seed": args.seed, "stratify": stratify,
                "test": args.test}  # fmt: skip
        row, cli = fit_and_test(
            fit_args, [f"--data.fold={json.dumps(fold)}"], f"fold_{f}", args.test_ckpt, True
        )
        rows.append({"fold": f, **row})
    summary = summarize(rows, drop_nan=True)  # a class absent from a fold: NaN there
    content = {"folds": args.folds, "seed": args.seed, "test": args.test, "runs": rows,
               "summary": summary}  # fmt: skip
    table = format_summary(rows, summary, headline_of(cli.model), "fold", "IoU")
    if args.ensemble:
        content["ensemble"] = test_ensemble(fit_args, [r["checkpoint"] for r in rows])
        table += "\nensemble of the fold models on the test split:\n" + "\n".join(
            f"  {k}: {v:.4f}" for k, v in content["ensemble"].items() if k.count("/") == 1
        )
    root = Path(cli.trainer.default_root_dir)
    path = Path(args.summary) if args.summary else root / "cv_summary.json"
    write_summary(path, content, table, "cv")
    return 0


def test_ensemble(fit_args: Sequence[str], checkpoints: list[str | None]) -> dict[str, float]:
    """Test metrics of seglight.ensemble.Ensemble over `checkpoints` on the data module's own
    test split (no fold)."""
    from seglight.cli.lightning import build_cli
    from seglight.cli.parser import one_line_errors

    if not all(checkpoints):
        raise ConfigError("--ensemble: every fold needs a checkpoint (a ModelCheckpoint)")
    with one_line_errors():
        cli = build_cli(
            [*fit_args, "--model=seglight.ensemble.Ensemble",
             f"--model.checkpoints={json.dumps(checkpoints)}"],
            run=False,
        )  # fmt: skip
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule)[0]
    return metrics_of(results, cli.model)
