"""Research ergonomics: seeds, the LR and batch-size finders from the CLI, `seglight seeds`."""

import csv
import json
import statistics

import pytest
import torch

from seglight.callbacks import FindLR
from seglight.cli import main
from seglight.module import SegmentationModule

from seglight_testing import QUICKSTART, TINY

FIT = [
    "fit",
    "--config",
    QUICKSTART,
    *TINY,
    "--trainer.logger=false",
    "--trainer.num_sanity_val_steps=0",
]


def finder(c) -> FindLR:
    return next(cb for cb in c.trainer.callbacks if isinstance(cb, FindLR))


def weights(c) -> list[torch.Tensor]:
    return [p.detach().clone() for p in c.model.parameters()]


def test_seed_everything_decides_the_run(in_tmp):
    quiet = [*FIT, "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]"]
    one = weights(main([*quiet, "--trainer.max_epochs=1", "--seed_everything=1"]))
    again = weights(main([*quiet, "--trainer.max_epochs=1", "--seed_everything=1"]))
    other = weights(main([*quiet, "--trainer.max_epochs=1", "--seed_everything=2"]))
    assert all(torch.equal(a, b) for a, b in zip(one, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(one, other, strict=True))


LR_FIND = [
    *FIT,
    "--trainer.enable_checkpointing=false",
    "--trainer.callbacks=[]",
    "--data.train_size=64",  # 16 steps per epoch: room for the range test
    "--trainer.callbacks+=seglight.callbacks.FindLR",
    "--trainer.callbacks.num_training_steps=16",  # Lightning skips 10 first, 1 last
    "--trainer.callbacks.early_stop_threshold=null",
    "--trainer.default_root_dir=run",
]


def curve(folder) -> list[dict]:
    return list(csv.DictReader(open(next(folder.rglob("lr_find.csv")))))


@pytest.mark.slow  # a subprocess or a second run; `make test-all`
def test_lr_finder_stop_reports_and_does_not_train(in_tmp, caplog):
    initial = weights(main([*FIT, "--trainer.max_epochs=0"]))  # seed 0: the weights fit starts from
    c = main([*LR_FIND, "--trainer.callbacks.stop=true", "--trainer.max_epochs=1"])
    rows = curve(in_tmp / "run")
    assert len(rows) == 16 and [r["suggested"] for r in rows].count("1") == 1
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs) and lrs[0] < 1e-6 and lrs[-1] <= 1.0
    suggested = finder(c).suggestion
    assert f"lr finder suggests lr={suggested:.3g}" in caplog.text
    assert c.trainer.global_step == 0  # the range test's steps are undone, nothing trained
    assert all(torch.equal(a, b) for a, b in zip(initial, weights(c), strict=True))


def test_lr_finder_applies_the_suggestion_through_the_scheduler(in_tmp):
    c = main([*LR_FIND, "--trainer.max_epochs=1", "--model.lr_scheduler.warmup_steps=0"])
    lr = finder(c).suggestion
    assert lr is not None and lr != 0.002
    scheduler = c.trainer.lr_scheduler_configs[0].scheduler
    # PolyLR restarts from the base rate at every step: the suggestion must be that base.
    assert scheduler.base_lrs == [pytest.approx(lr)]
    steps, total = c.trainer.global_step, scheduler.total_steps
    expected = lr * (1 - steps / total) ** 0.9
    assert c.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected)


def test_batch_size_finder_grows_the_data_modules_batch(in_tmp, caplog):
    c = main(
        [
            *FIT,
            "--trainer.enable_checkpointing=false",
            "--trainer.callbacks=[]",
            "--data.train_size=32",
            "--trainer.max_epochs=1",
            "--trainer.callbacks+=seglight.callbacks.FindBatchSize",
            "--trainer.callbacks.max_trials=3",
            "--trainer.callbacks.steps_per_trial=1",
        ]
    )
    # 2, 4, 8: three sizes tried (a CPU never runs out of memory), and training used the last.
    assert c.datamodule.batch_size == 8
    assert c.trainer.num_training_batches == 32 // 8
    assert "largest batch size 8" in caplog.text


SEEDS = [
    "--config",
    QUICKSTART,
    *TINY,
    "--trainer.max_epochs=2",
    "--trainer.num_sanity_val_steps=0",
]


def test_seeds_reports_mean_and_std_of_independent_runs(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["seeds", "--seeds", "3", "4", *SEEDS])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    summary = json.loads((in_tmp / "outputs/quickstart/seeds_summary.json").read_text())
    runs = summary["runs"]
    assert [r["seed"] for r in runs] == [3, 4]
    values = [r["test/mIoU"] for r in runs]
    assert values[0] != values[1]
    mean, std = statistics.fmean(values), statistics.stdev(values)
    assert summary["summary"]["test/mIoU"] == {"mean": pytest.approx(mean),
                                               "std": pytest.approx(std), "n": 2}  # fmt: skip
    assert f"test/mIoU: {mean:.4f} ± {std:.4f} (n=2)" in out
    # Each seed kept its own best checkpoint, and it holds what was tested: re-test seed 4's.
    best = in_tmp / "outputs/quickstart/checkpoints/seed_4/best.ckpt"
    assert runs[1]["checkpoint"] == str(best)
    retest = main(["test", "--config", QUICKSTART, *TINY, "--ckpt_path", str(best)])
    assert retest.trainer.callback_metrics["test/mIoU"].item() == pytest.approx(values[1])
    assert isinstance(SegmentationModule.load_from_checkpoint(best), SegmentationModule)


@pytest.mark.slow  # a subprocess or a second run; `make test-all`
def test_seeds_run_equals_a_plain_fit_with_that_seed(in_tmp):
    with pytest.raises(SystemExit):
        main(["seeds", "--seeds", "5", *SEEDS])
    seeds_best = torch.load(
        in_tmp / "outputs/quickstart/checkpoints/seed_5/best.ckpt", weights_only=True
    )["state_dict"]
    main(["fit", *SEEDS, "--seed_everything=5"])
    plain_best = torch.load(in_tmp / "outputs/quickstart/checkpoints/best.ckpt", weights_only=True)[
        "state_dict"
    ]
    assert seeds_best.keys() == plain_best.keys()
    assert all(torch.equal(seeds_best[k], plain_best[k]) for k in seeds_best)


def test_seeds_refuses_repeated_seeds(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["seeds", "--seeds", "1", "1", *SEEDS])
    assert exit_.value.code == 2
    assert "--seeds: each seed once" in capsys.readouterr().err
