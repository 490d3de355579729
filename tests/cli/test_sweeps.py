"""W&B sweeps in configs/sweeps/: well-formed, and every command line a W&B agent would start is
one that seglight parses into the sampled values, builds, and (for one quickstart sample) trains.

The command lines come from wandb's own agent code (wandb/wandb_agent.py, Agent._command_run) with
the process it would start replaced by a recorder: `${args}` becomes `--<name>=<str(value)>`,
`${env}` /usr/bin/env and `${interpreter}` python, exactly as installed wandb does it. Values are
sampled here: W&B samples on its server, and the offline sampler (the `sweeps` package,
`pip install wandb[sweeps]`) is not installed, so each distribution the files use is drawn below.
"""

import itertools
import json
import math
import random
import re

import pytest
import torch
import yaml
from wandb import env as wandb_env
from wandb import wandb_agent

from seglight.cli import main

from seglight_testing import ROOT, TINY
from seglight_testing.datasets import make_voc

SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
LOGGER = "configs/logger/wandb.yaml"
PREFIX = ["/usr/bin/env", "python", "-m", "seglight", "fit"]  # what the agent starts, then args
# Writers of a tiny dataset in a real config's on-disk layout (from that dataset's tests).
WRITERS = {"configs/voc.yaml": make_voc}
SAMPLES = 4  # seeded samples parsed per sweep file (parsing only: milliseconds each)


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def base_config(sweep: dict) -> str:
    """The experiment config a sweep runs: the first --config of its command."""
    command = sweep["command"]
    return command[command.index("--config") + 1]


# --- sampling, as the W&B server does -----------------------------------------------------------


def distribution(spec: dict) -> str:
    """The distribution of a parameter, inferred as W&B does when the file names none."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform"


def sample_value(spec: dict, rng: random.Random):
    kind = distribution(spec)
    if kind == "constant":
        return spec["value"]
    if kind == "categorical":
        return rng.choice(spec["values"])
    if kind == "int_uniform":
        return rng.randint(spec["min"], spec["max"])
    if kind == "uniform":
        return rng.uniform(spec["min"], spec["max"])
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))
    raise AssertionError(
        f"no sampler for distribution {kind!r} in tests/cli/test_sweeps.py: add one"
    )


def sample(sweep: dict, rng: random.Random, **fixed) -> dict:
    """One run's parameter values; `fixed` overrides some (for the combination check)."""
    values = {name: sample_value(spec, rng) for name, spec in sweep["parameters"].items()}
    return {**values, **fixed}


# --- the agent ----------------------------------------------------------------------------------


def agent_command(sweep: dict, values: dict, monkeypatch, wandb_dir) -> list[str]:
    """The argument list a W&B agent starts for a run with these values (wandb's own code)."""
    started = []

    class Recorder:  # stands for wandb_agent.AgentProcess, which would start the subprocess
        def __init__(self, command=None, **kwargs):
            started.append(command)

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorder)
    # _command_run writes the run's parameters under $WANDB_DIR and sets the run id and that
    # file's path in os.environ: setting them here first makes monkeypatch restore them after.
    monkeypatch.setenv(wandb_env.DIR, str(wandb_dir))
    for var in (wandb_env.SWEEP_ID, wandb_env.RUN_ID, wandb_env.SWEEP_PARAM_PATH):
        monkeypatch.setenv(var, "test")
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="test")
    agent._sweep_command = list(sweep["command"])  # what Agent.run reads from the sweep config
    # The server's "run" command, which reaches the agent as JSON.
    args = json.loads(json.dumps({name: {"value": value} for name, value in values.items()}))
    run = {"type": "run", "run_id": "run0", "program": sweep["program"], "args": args}
    agent._command_run(run)
    (command,) = started
    return command


def seglight_args(command: list[str]) -> list[str]:
    """The arguments after `python -m seglight fit`, for seglight.cli.main in this process."""
    assert command[: len(PREFIX)] == PREFIX, command
    return command[len(PREFIX) :]


def lookup(config, key: str):
    """The parsed value of a dotted CLI key: `model.arch` is stored at model.init_args.arch
    (jsonargparse accepts keys of the selected class without `init_args`)."""
    node = config
    for part in key.split("."):
        if part not in node and "init_args" in node:
            node = node["init_args"]
        node = node[part]
    return node


def assert_parsed(config, values: dict, args: list[str]) -> None:
    for name, value in values.items():
        assert lookup(config, name) == value, f"{name}: parsed {lookup(config, name)!r} from {args}"


def key_of(arg: str) -> str:
    return re.match(r"--([^=]+)=", arg).group(1)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A working directory holding configs/ as the repository does (the agent runs in the repo
    root): links to the real files, so the commands' relative paths resolve and outputs land in
    tmp_path. WANDB_MODE=offline: seglight's WandbLogger then never probes the network."""
    work = tmp_path / "work"
    for path in (ROOT / "configs").rglob("*.yaml"):
        link = work / path.relative_to(ROOT)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("sys.argv", ["seglight"])
    return work


# --- the tests ----------------------------------------------------------------------------------


def test_there_are_sweeps():
    names = {p.name for p in SWEEPS}
    assert {"quickstart_random.yaml", "quickstart_bayes.yaml"} <= names
    bases = {base_config(load(p)) for p in SWEEPS}
    assert bases & {"configs/voc.yaml", "configs/cityscapes.yaml"}, "no real-dataset sweep"


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_sweep_is_well_formed(path):
    sweep = load(path)
    assert sweep["method"] in ("random", "bayes", "grid")
    assert sweep["metric"] == {"name": "val/mIoU", "goal": "maximize"}
    assert sweep["early_terminate"]["type"] == "hyperband"
    assert sweep["early_terminate"]["min_iter"] >= 1
    command = sweep["command"]
    assert command[:5] == ["${env}", "${interpreter}", "-m", "seglight", "fit"]
    assert command[-1] == "${args}"  # overrides the configs before it
    config = base_config(sweep)
    for name in (config, LOGGER, sweep["program"]):
        assert (ROOT / name).is_file(), f"{path.name}: {name} does not exist"
    assert command[5:9] == ["--config", config, "--config", LOGGER]
    assert all(re.match(r"--[\w.]+=", a) for a in command[9:-1]), "fixed flags: --key=value"
    params = sweep["parameters"]
    for name in ("model.optimizer.lr", "model.optimizer.weight_decay", "model.arch",
                 "model.encoder_name", "data.batch_size"):  # fmt: skip
        assert name in params, f"{path.name}: {name} is not searched"
    assert distribution(params["model.optimizer.lr"]) == "log_uniform_values"
    assert any(name.startswith("model.loss.") for name in params)
    for name, spec in params.items():
        # The agent writes `--name=None` for null, which seglight reads as the text "None".
        assert None not in spec.get("values", []), f"{path.name}: {name}: null is passed as text"
        if "min" in spec:  # a number, not a string: YAML 1.1 reads `3e-4` (no dot) as text
            assert isinstance(spec["min"], int | float) and isinstance(spec["max"], int | float)
            assert 0 <= spec["min"] < spec["max"], f"{path.name}: {name}"
    # seglight refuses a loss whose weights are all 0: cross-entropy's weight never reaches 0.
    ce = params.get("model.loss.ce", {"value": 1.0})
    assert min([ce[k] for k in ("value", "min") if k in ce] + ce.get("values", [])) > 0


@pytest.mark.parametrize(
    "config", sorted({base_config(load(p)) for p in SWEEPS}), ids=lambda c: c.split("/")[-1]
)
def test_every_choice_builds_and_every_sample_parses(config, repo, tmp_path, monkeypatch):
    """Every combination of the categorical model parameters (arch x encoder x ...) of the
    sweeps over `config` is built and run forward; the other categoricals (batch size) take
    each of their values at least once. Then seeded samples of each file are parsed."""
    sweeps = {p.name: load(p) for p in SWEEPS if base_config(load(p)) == config}
    # No logger, CPU precision, no worker processes: none of them is searched (checked below).
    extra = ["--data.num_workers=0", "--trainer.logger=false", "--trainer.precision=32-true"]
    if config != "configs/quickstart.yaml":  # a tiny tree in the official layout, no download
        assert config in WRITERS, f"{config}: add a writer of its data layout to WRITERS"
        WRITERS[config](tmp_path / "data")
        extra += [f"--data.root={tmp_path / 'data'}", "--model.encoder_weights=null"]
    categorical = {}  # name -> values, over all sweeps of this config
    for sweep in sweeps.values():
        for name, spec in sweep["parameters"].items():
            if distribution(spec) == "categorical":
                categorical.setdefault(name, [])
                categorical[name] += [v for v in spec["values"] if v not in categorical[name]]
    model_keys = [k for k in categorical if k.startswith("model.")]
    other_keys = [k for k in categorical if not k.startswith("model.")]
    combos = list(itertools.product(*(categorical[k] for k in model_keys)))
    rng = random.Random(0)
    cli = None
    for i, combo in enumerate(combos):
        name, sweep = list(sweeps.items())[i % len(sweeps)]
        fixed = dict(zip(model_keys, combo, strict=True))
        fixed |= {k: categorical[k][i % len(categorical[k])] for k in other_keys}
        values = sample(sweep, rng, **fixed)
        args = seglight_args(agent_command(sweep, values, monkeypatch, tmp_path))
        assert not {key_of(a) for a in extra} & set(values), "an override hides a sampled value"
        cli = main(args + extra, run=False)
        assert_parsed(cli.config, values, args)
        with torch.no_grad():  # (2, 3, 32, 32) -> logits (2, K, 32, 32), loss finite
            logits = cli.model.eval()(torch.rand(2, 3, 32, 32))
            masks = torch.randint(0, cli.model.num_classes, (2, 32, 32))
            assert torch.isfinite(cli.model.compute_loss(logits, masks)["loss"]), (name, values)
        assert logits.shape == (2, cli.model.num_classes, 32, 32)
    for k in other_keys:  # cycled above: each value was built if there are enough combinations
        assert len(combos) >= len(categorical[k]), f"{config}: {k} has values never built"
    # Parsing alone (LightningCLI.parse_arguments calls this parser) for more samples.
    for name, sweep in sweeps.items():
        rng = random.Random(name)
        for _ in range(SAMPLES):
            values = sample(sweep, rng)
            args = seglight_args(agent_command(sweep, values, monkeypatch, tmp_path))
            assert_parsed(cli.parser.parse_args(args + extra), values, args)


def test_a_quickstart_sample_trains(repo, tmp_path, monkeypatch):
    """One run exactly as the agent starts it, plus the TINY overrides of what it does not
    search (so it takes seconds), for one batch of fit and validation (fast_dev_run)."""
    sweep = load(ROOT / "configs" / "sweeps" / "quickstart_bayes.yaml")
    values = sample(sweep, random.Random(1))
    args = seglight_args(agent_command(sweep, values, monkeypatch, tmp_path))
    tiny = [a for a in TINY if key_of(a) not in values]  # the sampled batch size stays
    cli = main(["fit", *args, *tiny, "--trainer.fast_dev_run=true"])
    assert cli.trainer.state.finished
    assert cli.config.fit.trainer.logger.class_path.endswith("WandbLogger")
    assert type(cli.model.net).__name__ == values["model.arch"]
    assert cli.model.hparams.encoder_name == values["model.encoder_name"]
    assert cli.datamodule.batch_size == values["data.batch_size"]
    optimizer = cli.trainer.optimizers[0]
    assert optimizer.defaults["lr"] == values["model.optimizer.lr"]
    assert optimizer.defaults["weight_decay"] == values["model.optimizer.weight_decay"]
    weights = cli.model.criterion.weights  # the terms the loss sums, with their weights
    assert weights == {k: values[f"model.loss.{k}"] for k in ("ce", "dice", "lovasz")}
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
