"""The command line: one table of subcommands, Lightning's and seglight's.

python -m seglight fit --config configs/quickstart.yaml
python -m seglight audit --config configs/voc.yaml --split train

Lightning's subcommands (target None) are run by SeglightCLI (seglight/cli/lightning.py); each
other one is a `run(argv) -> exit status` function, imported only when it is asked for. Every
subcommand builds on seglight/cli/parser.py (the parser and one-line errors), which imports none
of them: there is no import cycle (tests/test_imports.py).
"""

import importlib
import os
import sys
from dataclasses import dataclass

# Lightning's own calls into jsonargparse are deprecated there; the warnings are not the user's.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

from seglight.cli.lightning import SeglightCLI, build_cli  # noqa: E402
from seglight.cli.parser import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_MODEL,
    SeglightArgumentParser,
    condense_error,
    default_logger_save_dirs,
    one_line_errors,
)


@dataclass(frozen=True)
class Subcommand:
    help: str  # one line, for the top-level --help
    target: str | None = None  # "module:function" taking argv, returning the exit status


SUBCOMMANDS: dict[str, Subcommand] = {
    "fit": Subcommand("train; checkpoints and logs go under trainer.default_root_dir"),
    "validate": Subcommand("evaluate a checkpoint on the validation split"),
    "test": Subcommand("evaluate a checkpoint on the test split (per-class report)"),
    "predict": Subcommand("write masks for a folder of images (MaskWriter)"),
    "audit": Subcommand(
        "check a dataset split: sizes, class frequencies, bad labels and files; exit 1 on problems",
        "seglight.cli.audit:run_audit",
    ),
    "export": Subcommand(
        "write ONNX or TorchScript with dynamic shapes, checked against PyTorch",
        "seglight.cli.export:run_export",
    ),
    "seeds": Subcommand(
        "run fit + test once per seed and report mean ± std", "seglight.cli.seeds:run_seeds"
    ),
    "cv": Subcommand(
        "k-fold cross-validation: fit + test per fold, mean ± std per metric and class",
        "seglight.cli.cv:run_cv",
    ),
    "convert": Subcommand(
        "write a dataset split as LitData chunks + manifest (folder or s3://) for streaming",
        "seglight.cli.convert:run_convert",
    ),
    "benchmark": Subcommand(
        "params, FLOPs, latency, throughput and peak memory of a model, as a JSON and a row",
        "seglight.cli.benchmark:run_benchmark",
    ),
}


def describe(subcommands: dict[str, Subcommand] = SUBCOMMANDS) -> str:
    """The top-level --help description, from the table."""
    width = max(len(name) for name in subcommands)
    listed = [f"  {name:<{width}}  {s.help}" for name, s in subcommands.items()]
    return "\n".join(
        [
            "seglight: semantic segmentation on PyTorch Lightning.",
            "Subcommands (each has --help):",
            *listed,
        ]
    )


def main(args: list[str] | None = None, run: bool = True) -> SeglightCLI | None:
    """Entry point of `seglight` and `python -m seglight`; `args` lets tests drive it.
    Lightning's subcommands return the SeglightCLI (`run=False`: built, not run); the others
    exit with their status (audit 1 when it found problems, export 2 when the file is not
    usable). Errors the user can fix are one line (seglight.cli.parser.one_line_errors)."""
    argv = sys.argv[1:] if args is None else args
    with one_line_errors():
        name = argv[0] if isinstance(argv, list | tuple) and argv else None
        target = SUBCOMMANDS[name].target if name in SUBCOMMANDS else None
        if target is not None:
            module, _, function = target.partition(":")
            sys.exit(getattr(importlib.import_module(module), function)(argv[1:]))
        return build_cli(args, run=run, description=describe())


def console_main() -> None:
    """The `seglight` console script: exit status 0 on success (main() returns the CLI object,
    which `sys.exit` would print and turn into status 1)."""
    main()


__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_MODEL",
    "SUBCOMMANDS",
    "SeglightArgumentParser",
    "SeglightCLI",
    "Subcommand",
    "condense_error",
    "console_main",
    "default_logger_save_dirs",
    "main",
]
