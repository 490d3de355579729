"""`seglight benchmark` and seglight.profiling: counts checked against hand counts, the CLI's
report and JSON on the tiny quickstart, one-line errors. Timings are printed, never asserted."""

import json

import pytest
import torch
from torch import nn

from seglight import profiling
from seglight.cli import main
from seglight.cli.lightning import build_cli
from seglight.profiling.report import loading_warning

from seglight_testing import QUICKSTART, TINY, one_error_line


def test_parameters_are_the_sum_of_numel():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1, bias=False))
    net[2].weight.requires_grad_(False)
    counted = profiling.count_parameters(net)
    assert counted["total"] == sum(p.numel() for p in net.parameters()) == 3 * 8 * 9 + 8 + 16 + 32
    assert counted["trainable"] == counted["total"] - 32


def test_flops_of_a_plain_conv_net_equal_a_hand_count():
    # Convention: FLOPs = 2 x multiply-accumulates; a conv layer does Cin x Cout x k x k of them
    # per output position (bias, ReLU: element-wise, not counted).
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 32, 32)
    by_hand = 2 * 3 * 8 * 3 * 3 * 32 * 32 + 2 * 8 * 4 * 1 * 1 * 32 * 32  # 507,904
    assert profiling.count_flops(net, x) == by_hand
    assert profiling.count_conv_flops(net, x) == by_hand
    assert profiling.count_flops(net, torch.randn(2, 3, 32, 32)) == 2 * by_hand  # per batch


def test_conv_count_agrees_with_torch_on_strided_grouped_transposed_and_linear():
    net = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # 16x16 -> 8x8
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # 8x8 -> 16x16
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 10),
    )
    x = torch.randn(3, 4, 16, 16)
    by_hand = 3 * (2 * (4 // 2) * 8 * 9 * 8 * 8 + 2 * 8 * 4 * 4 * 8 * 8 + 2 * 1024 * 10)
    assert profiling.count_conv_flops(net, x) == by_hand
    assert profiling.count_flops(net, x) == by_hand


def test_spread_is_median_and_quartiles_in_ms():
    s = profiling.spread([0.004, 0.001, 0.003, 0.002, 0.010])
    assert s["median_ms"] == pytest.approx(3.0)
    assert (s["min_ms"], s["max_ms"], s["n"]) == (pytest.approx(1.0), pytest.approx(10.0), 5)
    assert s["iqr_ms"] == pytest.approx(s["q3_ms"] - s["q1_ms"]) and s["iqr_ms"] > 0


def test_loading_warning_names_the_fix_only_when_data_waits():
    def training(wait_ms: float, step_ms: float) -> dict:
        fraction = wait_ms / (wait_ms + step_ms)
        return {"data_wait": {"median_ms": wait_ms}, "step": {"median_ms": step_ms},
                "data_fraction": fraction, "num_workers": 1}  # fmt: skip

    line = loading_warning(training(50.0, 100.0))
    assert line.startswith("warning: loading limits training") and "data.num_workers" in line
    assert "\n" not in line
    assert loading_warning(training(1.0, 100.0)) is None
    assert loading_warning(None) is None


def test_cli_prints_and_writes_the_row(in_tmp, capsys):
    args = ["--config", QUICKSTART, *TINY, "--repeats", "3", "--warmup", "1"]
    args += ["--modes", "fp32,bf16,fp16", "--train_steps", "2", "--batch_size", "2"]
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", *args])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for field in ("parameters:", "FLOPs:", "GMACs", "latency ms", "images/s", "peak memory",
                  "training (", "| fp32 |", "fp16           skipped"):  # fmt: skip
        assert field in out, out
    result = json.loads((in_tmp / "outputs/quickstart/benchmark.json").read_text())
    assert (in_tmp / "outputs/quickstart/benchmark.md").read_text().startswith("| model |")
    assert {"parameters", "flops", "inference", "training", "environment", "settings"} <= set(
        result
    )
    assert set(result["inference"]) == {"fp32", "bf16"}  # fp16: CPU, skipped with the reason
    assert "GPU" in result["skipped_modes"]["fp16"]
    fp32 = result["inference"]["fp32"]
    assert fp32["latency"]["n"] == 3 and fp32["latency"]["median_ms"] > 0
    assert fp32["peak_memory"]["kind"] == "process_peak_rss"
    assert result["training"]["steps"] == 2 and result["training"]["images_per_s"] > 0
    assert result["settings"]["input_size"] == [32, 32]
    assert result["settings"]["input_size_from"] == "data.image_size"
    for key in ("torch", "lightning", "segmentation_models_pytorch", "device_name", "date"):
        assert result["environment"][key], key
    # The same config's model, built as `fit` builds it: sum(p.numel()) and an equal FLOP check.
    model = build_cli(["--config", QUICKSTART, *TINY], run=False).model
    assert result["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert result["flops"]["per_image"] == result["flops"]["conv_linear_count"] > 0


@pytest.mark.parametrize(
    "bad, expected",
    [
        (["--modes", "fp64"], "--modes 'fp64'"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--input_size", "32"], "--input_size"),
    ],
)
def test_bad_option_is_one_line(in_tmp, capsys, bad, expected):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--config", QUICKSTART, *TINY, *bad])
    assert exit_.value.code == 2
    assert expected in one_error_line(capsys)


@pytest.fixture
def fake_gpu(monkeypatch) -> list[str]:
    """torch.cuda as on a GPU machine without bf16 (this machine has none): the calls made."""
    calls: list[str] = []
    cuda = torch.cuda
    props = type("Props", (), {"total_memory": 80 * 2**30, "major": 9, "minor": 0})()
    fakes = {
        "synchronize": lambda device=None: calls.append("sync"),
        "get_device_name": lambda device=None: "NVIDIA Fake 80GB",
        "get_device_properties": lambda device=None: props,
        "device_count": lambda: 2,
        "is_bf16_supported": lambda *a, **k: False,
        "reset_peak_memory_stats": lambda device=None: calls.append("reset"),
        "memory_allocated": lambda device=None: 1000,
        "max_memory_allocated": lambda device=None: 5000,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(cuda, name, fake)
    return calls


def test_on_a_gpu_each_timed_call_is_synchronized_and_the_gpu_is_named(fake_gpu):
    """The GPU branches, on fakes: the real GPU run is still to be done (no GPU here)."""
    gpu = torch.device("cuda", 0)
    x = type("OnGpu", (), {"device": gpu})()  # time_forward only asks for x.device

    def forward(_):
        fake_gpu.append("call")

    timing = profiling.time_forward(forward, x, repeats=3, warmup=2)
    # the warm-up's queued kernels waited for once, then every timed call waited for alone
    assert fake_gpu == ["call", "call", "sync"] + ["call", "sync"] * 3 and timing["n"] == 3
    fake_gpu.clear()
    with profiling.peak_memory(gpu) as memory:
        fake_gpu.append("work")
    assert fake_gpu == ["sync", "reset", "work", "sync"]
    assert memory == {"kind": "cuda_max_memory_allocated", "peak_bytes": 5000,
                      "growth_bytes": 4000}  # fmt: skip
    env = profiling.environment(gpu)
    assert env["device_name"] == "NVIDIA Fake 80GB" and env["gpu_count"] == 2
    assert env["gpu_memory_bytes"] == 80 * 2**30 and "cuda" in env and "cudnn" in env
    assert profiling.default_modes(gpu) == ["fp32", "fp16", "channels_last", "compile"]
    assert profiling.mode_support("bf16", gpu) == "NVIDIA Fake 80GB has no bf16"
