"""llmcomp.app.training: the one way the CLI and the web app start a training run."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import llmcomp.training.checkpoint as checkpoint
from llmcomp.app.training import TrainRequest, TrainRequestError, resume_point, start_training
from llmcomp.attention import make_source
from llmcomp.attention.baselines import UniformSource
from llmcomp.errors import LLMCompError
from llmcomp.model import GPTConfig
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig
from llmcomp.training.run_folder import read_record
from llmcomp.training.run_summary import list_runs

TINY = GPTConfig(n_layer=1, n_embd=16)


@pytest.fixture(scope="module")
def corpus():
    return parse_corpus("\n".join(generate_binding_corpus(40, seed=3)), name="binding.txt")


def request(corpus, tmp_path, steps=6, **kw):
    kw.setdefault("source", make_source("uniform"))
    train = TrainConfig(steps=steps, batch_size=8, eval_every=3)
    return TrainRequest(corpus, model=TINY, train=train, runs_root=tmp_path / "runs", **kw)


def test_a_new_run_is_named_recorded_and_finished(corpus, tmp_path):
    run = start_training(request(corpus, tmp_path, owner="tag1", label="uniform"))
    assert re.fullmatch(r"\d{8}-\d{6}-uniform-[0-9a-f]{4}", run.run_dir.name)
    assert run.run_dir.parent == tmp_path / "runs" and not (run.run_dir / "run.json").exists()  # nothing ran yet
    result = run.run()
    rec = read_record(run.run_dir)
    assert (rec.status, rec.owner, rec.label, rec.seed) == ("finished", "tag1", "uniform", 0)
    assert rec.corpus.sha256 == corpus.sha256 and rec.corpus.sentences == len(corpus.sentences)
    assert rec.attention["scored"] == len(corpus.sentences) and rec.attention_seconds >= 0
    assert rec.finished_at >= rec.started_at
    assert result.checkpoint == run.run_dir / "checkpoint" and result.step == 6
    [listed] = list_runs(tmp_path / "runs", visible_to="tag1", everyone=False)
    assert listed.corpus_key == rec.corpus.key and listed.status == "finished"


def test_resume_continues_in_place_loading_the_checkpoint_once(corpus, tmp_path, monkeypatch):
    first = start_training(request(corpus, tmp_path))
    first.run(stop_at=3)
    started = read_record(first.run_dir).started_at
    assert read_record(first.run_dir).status == "stopped"
    with pytest.raises(TrainRequestError, match=r"already at step 3; set steps above 3") as e:
        start_training(request(corpus, tmp_path, steps=3, resume=first.run_dir))
    assert "\n" not in str(e.value)
    weight_reads = []
    real = checkpoint.load_file

    def counting(path, *a, **kw):
        weight_reads.append(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(checkpoint, "load_file", counting)
    again = start_training(request(corpus, tmp_path, steps=6, resume=first.run_dir))
    assert [p for p in weight_reads if p.endswith("model.safetensors")] == [
        str(first.run_dir / "checkpoint" / "model.safetensors")
    ]
    assert again.run_dir == first.run_dir and again.trainer.step == 3
    again.run()
    rec = read_record(first.run_dir)
    assert rec.status == "finished" and rec.started_at == started  # the same run, continued
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [first.run_dir.name]  # no second folder
    assert resume_point(first.run_dir / "checkpoint").step == 6  # a checkpoint folder works as well


def test_a_refused_start_leaves_no_folder(corpus, tmp_path):
    def refuse(source, sentences):
        raise LLMCompError(f"over budget for {len(sentences)} sentences")

    with pytest.raises(LLMCompError, match="over budget for 40"):
        start_training(request(corpus, tmp_path), check=refuse)
    assert not (tmp_path / "runs").exists()
    # a checkpoint outside a run folder, resumed on another corpus: the Trainer refuses after the folder was named
    first = start_training(request(corpus, tmp_path))
    first.run()
    shutil.copytree(first.run_dir / "checkpoint", tmp_path / "loose")
    other = parse_corpus("\n".join(generate_binding_corpus(40, seed=9)), name="other.txt")
    with pytest.raises(LLMCompError, match="vocabulary"):
        start_training(request(other, tmp_path, steps=9, resume=tmp_path / "loose"))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [first.run_dir.name]


def test_a_folder_holding_another_run_is_refused(corpus, tmp_path):
    first = start_training(request(corpus, tmp_path))
    first.run()
    with pytest.raises(TrainRequestError, match="already holds a run"):
        start_training(request(corpus, tmp_path, run_dir=first.run_dir))
    with pytest.raises(TrainRequestError, match="no readable checkpoint"):
        start_training(request(corpus, tmp_path, resume=tmp_path / "nowhere"))


class BrokenSource(UniformSource):
    """An attention server that goes down mid-run (an external failure, not the project's code)."""

    def score_many(self, sentences, progress=None):
        raise RuntimeError("connection refused\nsecond line of a traceback")


def test_a_failed_run_is_recorded_as_failed(corpus, tmp_path):
    run = start_training(request(corpus, tmp_path, source=BrokenSource()))
    with pytest.raises(RuntimeError):
        run.run()
    rec = json.loads((run.run_dir / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "connection refused"


@pytest.mark.parametrize(("task", "measured"), [("auto", True), ("binding", True), (None, False)])
def test_a_requests_task_is_measured_auto_meaning_binding_on_a_binding_corpus(corpus, tmp_path, task, measured):
    run = start_training(request(corpus, tmp_path, task=task))
    val = [m for m in run.run().metrics if "val_loss" in m]
    assert val and all(("val_focus_acc" in m and "val_target_mass" in m) == measured for m in val)
    assert all(0 <= m["val_focus_acc"] <= 1 for m in val if measured)
