"""`model.compile` and `model.channels_last`: clean checkpoint names, loading and exporting a
compiled run's checkpoint as the plain network, channels_last parity, one-line errors.

torch.compile runs with backend="eager" (dynamo's graph capture, no code generation) so the tests
stay fast on a CPU. The inductor backend (torch.compile's default) is tested by one slow test: its
C++ kernels for even this small Unet take 40 s to 2 minutes to generate and compile here."""

import copy

import pytest
import torch

from seglight.cli import main
from seglight.cli.export import load_module
from seglight.errors import ConfigError
from seglight.module import SegmentationModule
from seglight.networks.compiled import is_compiled

from seglight_testing import QUICKSTART, TINY, one_error_line

# A shallow Unet: dynamo's graph capture costs in proportion to the layers it traces.
KWARGS = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
SMALL = {"num_classes": 3, "model_kwargs": KWARGS}
EAGER = "--model.compile={backend: eager}"
SHALLOW = "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}"


def build(seed: int = 0, **kwargs) -> SegmentationModule:
    torch.manual_seed(seed)
    return SegmentationModule(**SMALL, **kwargs).eval()


def images(*size: int) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(3))


def test_compiled_state_dict_keeps_the_plain_names():
    plain, compiled = build(), build(compile={"backend": "eager"})
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    assert is_compiled(compiled.net) and not is_compiled(plain.net)
    assert compiled.hparams.compile == {"backend": "eager"} and plain.hparams.compile is None


def test_channels_last_gives_the_plain_logits_in_the_default_format():
    plain, fast = build(), build(channels_last=True)
    assert fast.hparams.channels_last is True
    conv = fast.net.encoder.conv1.weight  # 4-D weights are stored channels_last
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = images(2, 3, 45, 50)  # not a multiple of the stride: padded, then cropped back
    with torch.no_grad():
        expected, got = plain(x), fast(x)
    assert got.is_contiguous() and got.shape == expected.shape == (2, 3, 45, 50)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"compile": {"backend": "nope"}}, "model.compile: {'backend': 'nope'}: InvalidBackend"),
        ({"compile": "fastest"}, "Unrecognized mode=fastest"),
        ({"compile": {"mode": "max-autotune", "speed": 2}}, "unexpected keyword argument 'speed'"),
        ({"compile": 3}, "model.compile: 3 is not null, true/false, a mode"),
        ({"channels_last": "yes"}, "model.channels_last: expected true or false, got 'yes'"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs, expected):
    with pytest.raises(ConfigError, match="^model\\.") as info:
        build(**kwargs)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_bad_compile_value_on_the_command_line_is_one_line(in_tmp, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", QUICKSTART, *TINY, "--model.compile={backend: nope}"])
    assert info.value.code == 2
    assert "model.compile" in one_error_line(capsys)


def test_a_deep_copy_of_a_compiled_module_runs_its_own_weights():
    """What weight averaging (EMA, SWA) does: the copy must not call the original's forward."""
    original = build(compile={"backend": "eager"})
    clone = copy.deepcopy(original)
    with torch.no_grad():
        for p in clone.net.segmentation_head.parameters():
            p.zero_()
        out = clone(images(1, 3, 32, 32))
    assert torch.count_nonzero(out) == 0


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    """`fit` with compile (backend eager) on the tiny quickstart: its folder and best.ckpt."""
    root = tmp_path_factory.mktemp("compiled")
    main(["fit", "--config", QUICKSTART, *TINY, SHALLOW, EAGER, "--trainer.max_epochs=1",
          f"--trainer.default_root_dir={root}"])  # fmt: skip
    return root, root / "checkpoints" / "best.ckpt"


def _test_metrics(root, ckpt, *more):
    cli = main(["test", "--config", QUICKSTART, *TINY, f"--ckpt_path={ckpt}",
                f"--trainer.default_root_dir={root}", *more])  # fmt: skip
    return cli.model, {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def test_a_compiled_run_fits_tests_and_tests_the_same_without_compile(compiled_run, in_tmp):
    root, ckpt = compiled_run
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=True)
    assert state["hyper_parameters"]["compile"] == {"backend": "eager"}
    assert not any("_orig_mod" in k for k in state["state_dict"])
    # compile is this run's setting, not the checkpoint's (the command line could not undo it)
    compiled, with_compile = _test_metrics(root, ckpt, EAGER)
    plain, without = _test_metrics(root, ckpt, "--model.compile=null")
    assert is_compiled(compiled.net) and not is_compiled(plain.net)
    assert with_compile.keys() == without.keys() and "test/mIoU" in without
    assert without == pytest.approx(with_compile, rel=1e-5, abs=1e-6, nan_ok=True)


def test_a_compiled_checkpoint_loads_without_compile_to_the_same_outputs(compiled_run):
    _, ckpt = compiled_run
    compiled = SegmentationModule.load_from_checkpoint(ckpt).eval()  # compiled, as it was saved
    plain = SegmentationModule.load_from_checkpoint(ckpt, compile=None).eval()
    assert is_compiled(compiled.net) and not is_compiled(plain.net)
    x = images(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), compiled(x), rtol=1e-5, atol=1e-6)


def test_export_of_a_compiled_checkpoint_exports_the_plain_network(compiled_run, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    _, ckpt = compiled_run
    assert not is_compiled(load_module(ckpt).net)  # export's loader: the plain network
    output = ckpt.with_name("compiled_best.onnx")
    with pytest.raises(SystemExit) as info:
        main(["export", f"--ckpt_path={ckpt}", f"--output={output}", "--example_size=71x77"])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    assert output.is_file() and out.out.count(" ok") == 2


@pytest.mark.slow
def test_inductor_gives_the_eager_logits_and_gradients():
    """model.compile: true (inductor, C++ kernels on a CPU): a training step's logits and
    gradients, and an eval forward, equal the uncompiled network's to float rounding."""
    plain, compiled = build().train(), build(compile=True).train()
    assert is_compiled(compiled.net)
    x = images(2, 3, 32, 32)
    logits = [m.net(x) for m in (plain, compiled)]
    for out in logits:
        out.square().mean().backward()
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-4)
    for p, q in zip(plain.net.parameters(), compiled.net.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled.eval().net(x), plain.eval().net(x), rtol=1e-4, atol=1e-4
        )
