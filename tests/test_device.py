"""Devices (issue 16, item 6): ``auto`` picks what this machine has, an explicit GPU it lacks is a one-line
error from the API and the CLI, ``device="cpu"`` trains exactly as the default did, checkpoints carry no
device, the local source's device stays out of its cache key and spec, and its batch size follows the device.

This machine has no GPU: what runs on one (``docs/operations.md``, "GPUs") is not measured here."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from llmcomp.app.sources import parse_advanced
from llmcomp.attention import make_source
from llmcomp.attention.local_llm import LocalLLMError, LocalLLMSource
from llmcomp.cli import main
from llmcomp.devices import DeviceError, precision_error, resolve_device
from llmcomp.model import GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import load_corpus
from llmcomp.training import TrainConfig, Trainer, load_checkpoint
from llmcomp.training.config import TrainConfigError

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="about a machine without a CUDA GPU")
SMALL = GPTConfig(n_layer=1, n_embd=32, dropout=0.2)  # dropout: the per-step seeding must hold too


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(EXAMPLE_CORPUS)


def _losses(corpus, tmp_path=None, **cfg) -> tuple[list[float], Trainer]:
    trainer = Trainer(corpus, make_source("gaussian", n_heads=2), SMALL, TrainConfig(steps=12, eval_every=6,
                      log_every=1, seed=3, patience=0, **cfg), run_dir=tmp_path)  # fmt: skip
    result = trainer.run()
    return [m["train_loss"] for m in result.metrics] + [result.final_val_loss], trainer


def test_auto_picks_what_this_machine_has(corpus):
    want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert TrainConfig().device == "auto" and LocalLLMSource().device.type == want
    trainer = Trainer(corpus, make_source("uniform"), SMALL, TrainConfig(steps=1))
    assert trainer.device.type == want and next(trainer.model.parameters()).device.type == want


@NO_GPU
def test_explicit_cuda_without_a_gpu_is_one_line_naming_cpu_and_auto(corpus):
    with pytest.raises(DeviceError) as e:
        Trainer(corpus, make_source("uniform"), SMALL, TrainConfig(device="cuda"))
    assert "\n" not in str(e.value) and "no CUDA GPU" in str(e.value)
    assert "--device cpu" in str(e.value) and "--device auto" in str(e.value)
    with pytest.raises(LocalLLMError) as e:
        LocalLLMSource(device="cuda:1")
    assert "\n" not in str(e.value) and "--llm-device cpu" in str(e.value)
    with pytest.raises(TrainConfigError, match="unknown device 'tpu'"):
        TrainConfig(device="tpu")


@NO_GPU
def test_the_cli_says_so_in_one_line(capsys):
    common = ["--corpus", str(EXAMPLE_CORPUS), "--no-cache", "--steps", "1"]
    assert main(["train", *common, "--attention", "uniform", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no CUDA GPU" in err and "--device cpu" in err
    assert main(["train", *common, "--attention", "uniform", "--device", "gpu"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err
    assert main(["score", "--corpus", str(EXAMPLE_CORPUS), "--attention", "local", "--llm-device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--llm-device cpu" in err


def test_device_cpu_trains_exactly_as_the_default(corpus, tmp_path):
    default, _ = _losses(corpus)
    cpu, trainer = _losses(corpus, tmp_path, device="cpu")
    if not torch.cuda.is_available():
        assert cpu == default  # same seed, same losses, bit for bit
    assert cpu == _losses(corpus, device="cpu")[0]
    # the checkpoint carries no device: a run trained on a GPU resumes on a laptop and vice versa
    ck = load_checkpoint(tmp_path / "checkpoint")
    assert "device" not in ck.train_config and ck.train_config["seed"] == 3
    assert all(t.device.type == "cpu" for t in ck.model.state_dict().values())


def test_a_resumed_cpu_run_ends_on_the_same_loss(corpus, tmp_path):
    whole, _ = _losses(corpus, device="cpu")
    cfg = TrainConfig(steps=12, eval_every=6, log_every=1, seed=3, patience=0, device="cpu")
    first = Trainer(corpus, make_source("gaussian", n_heads=2), SMALL, cfg, run_dir=tmp_path)
    first.run(stop_at=5)
    again = Trainer(corpus, make_source("gaussian", n_heads=2), SMALL, replace(cfg, device="auto"), run_dir=tmp_path,
                    resume_from=tmp_path / "checkpoint")  # fmt: skip
    assert again.run().final_val_loss == whole[-1]


def test_the_local_device_is_placement_not_identity():
    cpu, auto = LocalLLMSource(device="cpu"), LocalLLMSource()
    assert cpu.fingerprint() == auto.fingerprint()  # a cache scored on a GPU box serves this one
    assert "device" not in cpu.spec() and make_source(**cpu.spec()).config.device == "auto"
    half = LocalLLMSource(precision="bf16")
    assert half.fingerprint() == {**cpu.fingerprint(), "precision": "bf16"}  # more than float error apart


def test_the_local_batch_size_follows_the_device():
    aligned = {i: SimpleNamespace(ids=list(range(6))) for i in range(40)}
    src = LocalLLMSource(device="cpu")
    assert [len(b) for b in src._batches(list(aligned), aligned, 270)] == [16, 16, 8]
    src.device = torch.device("cuda")  # what a GPU box resolves; only the batching is asked here
    assert [len(b) for b in src._batches(list(aligned), aligned, 270)] == [40]
    src = LocalLLMSource(device="cpu", batch_size=7)
    assert [len(b) for b in src._batches(list(aligned), aligned, 270)] == [7] * 5 + [5]


def test_fp16_is_refused_off_a_cuda_gpu_and_bf16_runs_on_the_cpu():
    with pytest.raises(LocalLLMError) as e:
        LocalLLMSource(device="cpu", precision="fp16").score_many([["a", "cat"]])
    line = str(e.value)
    assert "\n" not in line and "fp16 runs on a CUDA GPU only" in line and "--llm-precision bf16 or fp32" in line
    (m,) = LocalLLMSource(device="cpu", precision="bf16").score_many([["a", "cat"]]).require_all()
    assert m.shape == (1, 2, 2)
    assert precision_error("bf16", "cpu") is None and precision_error("fp32", "mps") is None
    assert precision_error("bf16", "mps") == (
        "--llm-precision bf16 runs on the CPU or a CUDA GPU (the LLM runs on mps); use --llm-precision fp32"
    )


def test_the_web_form_has_fields_of_its_own_for_device_and_precision():
    from llmcomp.app.sources import SourceFormError, SourceSettings

    assert parse_advanced("local", "batch_size=32") == {"batch_size": 32}
    with pytest.raises(SourceFormError, match="set device in the form's 'LLM device' field"):
        parse_advanced("local", "device=cpu")
    with pytest.raises(SourceFormError, match="set precision in the form's 'LLM precision' field"):
        parse_advanced("local", "precision=bf16")
    d = SourceSettings(llm_device="cpu", llm_precision="bf16").description()
    assert (d["device"], d["precision"]) == ("cpu", "bf16")
    assert (SourceSettings().description()["device"], SourceSettings().description()["precision"]) == ("auto", "fp32")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"^LLM device 'cuda': this machine has no such device"):
            SourceSettings(llm_device="cuda").description()


@NO_GPU
def test_compare_and_the_suite_refuse_a_gpu_this_machine_lacks_in_one_line(capsys, tmp_path):
    common = ["--sources", "uniform", "--seeds", "1", "--steps", "2", "--no-cache"]
    for argv, flag in [
        (["compare", *common, "--device", "cuda", "--out", str(tmp_path / "a")], "--device"),
        (["compare", *common, "--llm-device", "cuda:1", "--out", str(tmp_path / "b")], "--llm-device"),
        (
            ["compare", "--suite", "--tasks", "ioi", *common, "--device", "cuda", "--out", str(tmp_path / "c")],
            "--device",
        ),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "no CUDA GPU" in err and f"{flag} cpu" in err, err
    assert main(["compare", *common, "--llm-precision", "fp16", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--llm-precision fp16 runs on a CUDA GPU only" in err
    from llmcomp.cli.device_flags import check_devices
    from llmcomp.experiments.compare import CompareConfig

    check_devices(CompareConfig(source_options={"local": {"device": "cpu", "precision": "bf16"}}))  # no error
    assert main(["compare", *common, "--llm-precision", "fp8"]) == 2
    assert "--llm-precision: " in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any folder was made


def test_compare_device_cpu_trains_there_and_moves_the_local_llm_too(tmp_path, capsys):
    from llmcomp.cli import build_parser
    from llmcomp.cli.compare import config_from_args

    out = tmp_path / "cmp"
    argv = ["compare", "--sources", "uniform", "--seeds", "1", "--steps", "2", "--no-cache", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert '"device": "cpu"' in (out / "compare.json").read_text()  # every run's TrainConfig
    parse = lambda *a: config_from_args(build_parser().parse_args(["compare", *a]))  # noqa: E731
    assert parse().train.device == TrainConfig.device and parse().source_options == {}
    assert parse("--device", "cpu").source_options == {"local": {"device": "cpu"}}  # one flag moves both
    both = parse("--device", "cpu", "--llm-device", "auto", "--llm-precision", "fp16")
    assert both.train.device == "cpu" and both.source_options == {"local": {"device": "auto", "precision": "fp16"}}


@NO_GPU
def test_a_comparison_hands_its_local_options_to_every_local_label(corpus):
    """Without the CLI's early check, the local source itself is built on the device asked for (and fails)."""
    from llmcomp.experiments.compare import CompareConfig, compare

    config = CompareConfig(
        sources=["local:layers=last-2"], seeds=[0], steps=1, source_options={"local": {"device": "cuda"}}
    )
    result = compare(corpus, config)
    assert "no CUDA GPU" in result.failures["local:layers=last-2"] and not result.runs


def test_a_form_offers_the_devices_this_machine_has_and_the_precisions_the_source_takes():
    import typing

    from llmcomp.attention.registry import user_options
    from llmcomp.devices import PRECISIONS, available_devices, check_available

    have = available_devices()
    assert have[:2] == ["auto", "cpu"] and ("cuda" in have) == torch.cuda.is_available()
    assert [check_available(d, "LLM device") for d in have] == have
    if not torch.cuda.is_available():
        with pytest.raises(
            DeviceError, match=r"^LLM device 'cuda': this machine has no such device; choose one of auto, cpu"
        ):
            check_available("cuda", "LLM device")
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        check_available("gpu", "Training device")
    assert typing.get_args(user_options("local")["precision"]) == PRECISIONS  # the Literal and the constant agree
