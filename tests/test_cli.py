"""The command line package: defaults from the dataclasses, a fast --help, train through the app layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from llmcomp.cli import build_parser, main
from llmcomp.cli.common import make_cli_source
from llmcomp.model.config import GPTConfig
from llmcomp.text.corpus import CorpusConfig
from llmcomp.training.config import TrainConfig
from llmcomp.training.run_folder import read_record
from llmcomp.training.run_summary import list_runs

#: flag -> (dataclass, field): every default the train command shows comes from here
TRAIN_DEFAULTS = {
    "steps": (TrainConfig, "steps"),
    "batch_size": (TrainConfig, "batch_size"),
    "lr": (TrainConfig, "lr"),
    "eval_every": (TrainConfig, "eval_every"),
    "checkpoint_every": (TrainConfig, "checkpoint_every"),
    "seed": (TrainConfig, "seed"),
    "n_layer": (GPTConfig, "n_layer"),
    "n_embd": (GPTConfig, "n_embd"),
    "learned_heads": (GPTConfig, "n_learned_heads"),
    "dropout": (GPTConfig, "dropout"),
    "split": (CorpusConfig, "split"),
    "max_words": (CorpusConfig, "max_words"),
    "val_fraction": (CorpusConfig, "val_fraction"),
}


def default_of(cls, name):
    return next(f.default for f in fields(cls) if f.name == name)


def test_train_and_score_defaults_are_the_dataclasses():
    train = build_parser().parse_args(["train"])
    for flag, (cls, name) in TRAIN_DEFAULTS.items():
        assert getattr(train, flag) == default_of(cls, name), flag
    assert train.dropout == 0.0  # one dropout default: the CLI used to say 0.1
    score = build_parser().parse_args(["score"])
    assert (score.max_words, score.val_fraction) == (CorpusConfig.max_words, CorpusConfig.val_fraction)


def test_help_and_the_parser_load_no_torch():
    code = "import sys; from llmcomp.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    r = subprocess.run(
        [sys.executable, "-m", "llmcomp", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "default: 2000" in r.stdout and "--layers" in r.stdout


def test_compare_takes_compare_config_defaults():
    from llmcomp.cli.compare import config_from_args
    from llmcomp.experiments import CompareConfig

    base, cfg = CompareConfig(), config_from_args(build_parser().parse_args(["compare", "--no-cache"]))
    assert (cfg.seeds, cfg.steps, cfg.model, cfg.train) == (base.seeds, base.steps, base.model, base.train)
    cfg = config_from_args(build_parser().parse_args(["compare", "--seeds", "2", "--dropout", "0", "--no-cache"]))
    assert cfg.seeds == [0, 1] and cfg.model.dropout == 0.0


@pytest.mark.parametrize("command", ["score", "train"])
def test_layers_and_heads_reach_the_local_source(command):
    args = build_parser().parse_args(
        [command, "--attention", "local", "--layers", "last-8", "--heads", "4", "--no-cache"]
    )
    source = make_cli_source(args)  # building it loads no LLM; scoring would
    assert (source.config.layers, source.n_heads) == ("last-8", 4)
    assert source.spec()["layers"] == "last-8"


def test_train_writes_a_named_recorded_run_and_resumes_it_in_place(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMCOMP_HOME", str(tmp_path))
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"the cat number {i} sat on the mat ." for i in range(30)), encoding="utf-8")
    common = ["--corpus", str(corpus), "--n-embd", "16", "--batch-size", "8", "--eval-every", "4", "--no-cache"]
    assert main(["train", *common, "--attention", "previous", "--steps", "8", "--stop-at", "4"]) == 0
    [run] = list_runs(tmp_path / "runs")
    rec = read_record(run.path)
    assert (run.steps, rec.status, rec.label) == (4, "stopped", "previous")
    assert rec.corpus.sentences == 30 and len(rec.corpus.sha256) == 64
    # resume: no --attention, the checkpoint's source; the same folder
    assert main(["train", *common, "--steps", "8", "--resume", str(run.path)]) == 0
    [again] = list_runs(tmp_path / "runs")
    assert again.path == run.path and again.steps == 8 and read_record(run.path).status == "finished"
    assert "checkpoint:" in capsys.readouterr().out
    # a finished run cannot be resumed to where it is: one line, exit 2
    assert main(["train", *common, "--steps", "8", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already at step 8" in err
    assert json.loads((run.path / "run.json").read_text())["source"]["spec"]["kind"] == "previous"
    assert os.listdir(tmp_path / "runs") == [run.path.name]


def test_a_too_long_sentence_names_the_flag_that_exists(tmp_path, monkeypatch, capsys):
    """The library cannot know where it is shown: the command line offers --max-words, and says so, on one line."""
    corpus = tmp_path / "long.txt"
    corpus.write_text("\n".join(["the cat sat on the mat."] * 12 + [" ".join(["word"] * 80)]))
    assert main(["train", "--corpus", str(corpus), "--attention", "uniform", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: long.txt line 13 has a sentence of 80 words; the limit is 64 (split it, or raise --max-words)"
    monkeypatch.setenv("LLMCOMP_HOME", str(tmp_path))
    tiny = ["--n-embd", "16", "--batch-size", "4", "--eval-every", "1", "--no-cache"]
    assert main(["train", "--corpus", str(corpus), "--max-words", "100", "--attention", "uniform", "--steps", "1",
                 *tiny]) == 0  # fmt: skip  # the flag named is the one that lifts the limit
