"""The run folder (llmcomp.training.run_folder) and reading runs back (llmcomp.training.run_summary)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from llmcomp.attention import make_source
from llmcomp.model import GPTConfig
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.metrics_log import append_metric, read_jsonl
from llmcomp.training.run_folder import (
    MAX_RECORD_BYTES,
    RunRecord,
    new_run_dir,
    read_record,
    slug,
    update_record,
    write_record,
)
from llmcomp.training.run_summary import group_by_corpus, list_runs, read_run

LINES = generate_binding_corpus(40, seed=3)


@pytest.fixture(scope="module")
def corpus():
    return parse_corpus("\n".join(LINES), name="binding.txt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """One finished run folder (checkpoint + metrics), without a run record; tests copy it."""
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=3, log_every=3)
    Trainer(corpus, make_source("uniform"), GPTConfig(n_layer=1, n_embd=16), cfg, run_dir=root / "base").run()
    return root / "base"


def copy_run(trained, root, name):
    return shutil.copytree(trained, root / name)


def test_one_naming_scheme_stamped_and_inside_a_comparison(tmp_path):
    a = new_run_dir(tmp_path, "oracle:shift=1", seed=2)
    b = new_run_dir(tmp_path, "oracle:shift=1", seed=2)
    pattern = r"\d{8}-\d{6}-oracle-shift1-seed2-[0-9a-f]{4}"
    assert re.fullmatch(pattern, a.name) and re.fullmatch(pattern, b.name), (a.name, b.name)
    assert a != b and a.is_dir() and b.is_dir()  # same second, same label: still two folders
    assert re.fullmatch(r"\d{8}-\d{6}-local-[0-9a-f]{4}", new_run_dir(tmp_path, "local").name)
    inner = new_run_dir(tmp_path / "cmp", "Gaussian:sigma=1.5", seed=0, stamped=False)
    assert inner.name == "gaussian-sigma1.5-seed0"
    with pytest.raises(FileExistsError):  # never reuse a folder (it would mix two runs' files)
        new_run_dir(tmp_path / "cmp", "gaussian:sigma=1.5", seed=0, stamped=False)
    assert slug("../../etc") == "etc" and "/" not in slug("a/b")


def test_corpus_hash_follows_the_sentences_not_the_name(corpus):
    renamed = parse_corpus("\n".join(LINES), name="other-name.txt")
    changed = parse_corpus("\n".join([*LINES[:-1], "a different last sentence ."]), name="binding.txt")
    assert re.fullmatch(r"[0-9a-f]{64}", corpus.sha256)
    assert renamed.sha256 == corpus.sha256
    assert changed.sha256 != corpus.sha256


def test_record_round_trip_holds_corpus_hash_and_source(tmp_path, corpus):
    source = make_source("gaussian", sigma=1.5)
    rec = RunRecord.start("gaussian:sigma=1.5", corpus, source, seed=3, owner="tag123")
    write_record(tmp_path, rec)
    back = read_record(tmp_path)
    assert back == rec
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["corpus"]["sha256"] == corpus.sha256 and on_disk["corpus"]["sentences"] == len(LINES)
    assert on_disk["source"]["spec"] == source.spec() and on_disk["source"]["fingerprint"] == source.fingerprint()
    done = update_record(tmp_path, status="finished", finished_at=123.0, attention={"requests": 2})
    assert read_record(tmp_path) == done and done.status == "finished" and done.seed == 3
    with pytest.raises(ValueError):  # a bad status is refused at write time, not discovered at read time
        write_record(tmp_path, RunRecord(status="exploded"))


def test_read_run_uses_the_record(tmp_path, trained, corpus):
    run = copy_run(trained, tmp_path, "r1")
    write_record(run, RunRecord.start("previous", corpus, make_source("previous"), seed=7, owner="t"))
    update_record(run, status="stopped", attention={"requests": 4, "prompt_tokens": 10, "completion_tokens": 1})
    r = read_run(run)
    assert (r.label, r.seed, r.owner, r.status, r.api_requests, r.api_tokens) == ("previous", 7, "t", "stopped", 4, 11)
    assert r.corpus.sha256 == corpus.sha256 and r.corpus.name == "binding.txt"
    assert r.final_val_loss is not None and r.steps == r.total_steps == 6


def test_old_job_json_and_old_compare_run_json_still_read(tmp_path, trained):
    app = copy_run(trained, tmp_path, "app-run")
    (app / "job.json").write_text(json.dumps({
        "job_id": "abc", "label": "uniform (1 head) on x.txt", "owner": "o1", "status": "stopped", "error": None,
        "started_at": 1.0, "finished_at": 2.0, "step": 6, "total_steps": 6, "source_spec": {"kind": "uniform"},
        "corpus": "x.txt", "attention": {"sentences": 40, "requests": 3, "prompt_tokens": 5},
    }))  # fmt: skip
    cmp = copy_run(trained, tmp_path / "cmp", "uniform-seed1")
    (cmp / "run.json").write_text(json.dumps({
        "label": "uniform", "seed": 1, "attention": {}, "attention_seconds": None,
        "attention_reused_from": "uniform-seed0",
    }))  # fmt: skip
    a, c = read_run(app), read_run(cmp)
    assert (a.owner, a.status, a.api_requests, a.label) == ("o1", "stopped", 3, "uniform")
    assert a.corpus.name == "binding.txt" and a.corpus_key is None  # no content hash recorded: not comparable
    assert (c.label, c.seed, c.attention, c.status) == ("uniform", 1, {}, "finished")
    assert read_record(cmp).reused_from == "uniform-seed0"


@pytest.mark.parametrize(
    "damage",
    ["bad json", "not an object", "wrong type", "unknown format", "symlink", "oversize", "bad metrics"],
)
def test_a_damaged_run_is_skipped_never_fatal(tmp_path, trained, corpus, damage):
    good = copy_run(trained, tmp_path, "a-good")
    write_record(good, RunRecord.start("uniform", corpus, make_source("uniform")))
    bad = copy_run(trained, tmp_path, "b-bad")
    record = bad / "run.json"
    if damage == "bad json":
        record.write_text("{not json")
    elif damage == "not an object":
        record.write_text("[1, 2]")
    elif damage == "wrong type":
        record.write_text(json.dumps({"format": 1, "label": "x", "owner": ["alice"], "status": "finished"}))
    elif damage == "unknown format":
        record.write_text(json.dumps({"format": 99, "label": "x"}))
    elif damage == "symlink":  # a link could point anywhere on the server's disk
        secret = tmp_path / "secret.json"
        secret.write_text(json.dumps({"label": "leaked"}))
        os.symlink(secret, record)
    elif damage == "oversize":
        record.write_text(json.dumps({"label": "x" * MAX_RECORD_BYTES}))
    elif damage == "bad metrics":
        (bad / "checkpoint" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    assert read_run(bad) is None
    assert [r.name for r in list_runs(tmp_path)] == ["a-good"]


def test_a_torn_last_metrics_line_is_dropped(tmp_path):
    append_metric(tmp_path, {"step": 1, "val_loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "val_lo')  # the process died mid-append
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "val_loss": 2.0}]


def test_visibility_keeps_own_and_ownerless_runs(tmp_path, trained, corpus):
    for name, owner in (("a-cli", None), ("b-alice", "alice-tag"), ("c-bob", "bob-tag")):
        write_record(copy_run(trained, tmp_path, name), RunRecord.start("uniform", corpus, make_source("uniform"),
                                                                        owner=owner))  # fmt: skip
    names = lambda **kw: [r.name for r in list_runs(tmp_path, **kw)]  # noqa: E731
    assert sorted(names()) == ["a-cli", "b-alice", "c-bob"]
    assert sorted(names(visible_to="alice-tag")) == ["a-cli", "b-alice"]
    assert names(visible_to="alice-tag", everyone=False) == ["b-alice"]
    assert names(visible_to="", everyone=True) == ["a-cli"]  # an anonymous visitor sees only ownerless runs


def test_runs_group_by_corpus_content_and_split(tmp_path, trained, corpus):
    other = parse_corpus("\n".join(LINES[:-1]), name="binding.txt")  # same name, one sentence fewer
    resplit = parse_corpus("\n".join(LINES), name="binding.txt")
    resplit.config.val_fraction = 0.2  # same sentences, another held-out set: not comparable either
    for name, c in (("a", corpus), ("b", other), ("c", corpus), ("d", resplit)):
        write_record(copy_run(trained, tmp_path, name), RunRecord.start("uniform", c, make_source("uniform")))
    copy_run(trained, tmp_path, "e-legacy")  # no record: corpus known by name only
    groups = group_by_corpus(list_runs(tmp_path))
    by_name = {k: sorted(r.name for r in v) for k, v in groups.items()}
    assert sorted(by_name.values()) == [["a", "c"], ["b"], ["d"], ["e-legacy"]]
    assert by_name[None] == ["e-legacy"]
