"""The Compare view's rules (llmcomp.app.run_compare, llmcomp.app.run_list): runs grouped by corpus, seeds
counted once each, the run in progress shown, numbers for people, rename and delete with their refusals,
and who sees which runs. Run folders come from a real tiny training run and the library's own writers."""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import pytest

from llmcomp.app import run_compare, run_list
from llmcomp.attention import make_source
from llmcomp.experiments.tables import runs_frame, summary_table
from llmcomp.model import GPTConfig
from llmcomp.plots.curves import ema, runs_curves_figure
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.metrics_log import append_metric
from llmcomp.training.run_folder import RECORD, RunRecord, read_record, write_record
from llmcomp.training.run_summary import STALE_AFTER_S, list_runs

A = parse_corpus("\n".join(generate_binding_corpus(40, seed=3)), name="binding.txt")
B = parse_corpus("\n".join(generate_binding_corpus(30, seed=9)), name="upload.txt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run folder on corpus A (checkpoint + metrics); tests copy it and write its record."""
    root = tmp_path_factory.mktemp("base")
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=3, log_every=3)
    Trainer(A, make_source("uniform"), GPTConfig(n_layer=1, n_embd=16), cfg, run_dir=root / "base").run()
    return root / "base"


def make_run(trained, root, name, corpus=A, seed=0, label="uniform", owner=None, status="finished", **more):
    path = shutil.copytree(trained, root / name)
    rec = RunRecord.start(label, corpus, make_source(label.split(":")[0]), seed=seed, owner=owner, status=status)
    for k, v in more.items():
        setattr(rec, k, v)
    write_record(path, rec)
    return path


def live_run(root, name, corpus=A, owner=None):
    """A run still training: its record says so, its metrics stream grows, it has no checkpoint yet."""
    path = root / name
    path.mkdir(parents=True)
    write_record(path, RunRecord.start("previous", corpus, make_source("previous"), seed=0, owner=owner,
                                       status="training"))  # fmt: skip
    for step in (2, 4):
        append_metric(path, {"step": step, "train_loss": 3.0 - step / 10, "val_loss": 3.2 - step / 10,
                             "elapsed": step * 0.5, "total_steps": 100})  # fmt: skip
    return path


def test_runs_are_grouped_by_corpus_newest_first_and_ranked_only_within_one(trained, tmp_path):
    make_run(trained, tmp_path, "a0", seed=0)
    make_run(trained, tmp_path, "a1", seed=1, label="previous")
    time.sleep(0.02)
    make_run(trained, tmp_path, "b0", corpus=B, started_at=time.time() + 5)  # the newest run: its corpus first
    groups = run_compare.corpus_groups(list_runs(tmp_path))
    assert [sorted(r.name for r in g.runs) for g in groups] == [["b0"], ["a0", "a1"]]
    assert run_compare.pick_group(groups, None).value == B.sha256 + ":" + str(B.config.seed) + ":0.1"
    chosen = run_compare.pick_group(groups, groups[1].value)
    table = run_compare.runs_table(chosen.runs)
    assert sorted(table["run"]) == ["a0", "a1"] and set(table["corpus"]) == {"binding.txt"}
    assert set(table["sentences"]) == {"40"} and set(table["corpus hash"]) == {A.sha256[:12]}
    assert "40 sentences" in chosen.describe and A.sha256[:12] in chosen.describe
    # hyperparameters and source settings are columns
    assert set(table["batch"]) == {"8"} and set(table["n_embd"]) == {"16"} and set(table["kind"]) == {"uniform"}


def test_seeds_are_counted_once_each(trained, tmp_path):
    for name, seed in (("r1", 0), ("r2", 0), ("r3", 1)):  # two runs of seed 0 are one seed repeated
        make_run(trained, tmp_path, name, seed=seed)
    runs = list_runs(tmp_path)
    assert summary_table(runs_frame(runs))["seeds"].tolist() == [2]  # what `llmcomp compare` prints too
    assert run_compare.sources_table(runs)["seeds"].tolist() == [2]


def test_the_run_in_progress_is_listed_with_its_live_curve(trained, tmp_path):
    make_run(trained, tmp_path, "done")
    live_run(tmp_path, "live")
    assert [r.name for r in list_runs(tmp_path)] == ["done"]  # a model picker never offers it
    runs = {r.name: r for r in list_runs(tmp_path, live=True)}
    live = runs["live"]
    assert live.status == "training" and live.steps == 4 and live.total_steps == 100
    assert [m["step"] for m in live.metrics] == [2, 4] and live.final_val_loss == pytest.approx(2.8)
    group = run_compare.corpus_groups(list(runs.values()))[0]
    row = run_compare.runs_table(group.runs).set_index("folder").loc["live"]
    assert row["status"] == "training" and row["steps"] == "4/100"
    assert "live (training)" in run_compare.curves(group.runs)
    assert "training" not in set(run_compare.sources_table(group.runs)["source"])  # only ended runs averaged
    # a record left at "training" by a killed process is not a run in progress forever
    old = time.time() - STALE_AFTER_S - 60
    for f in (tmp_path / "live" / RECORD, tmp_path / "live" / "metrics.jsonl"):
        os.utime(f, (old, old))
    assert "live" not in {r.name for r in list_runs(tmp_path, live=True)}


def test_a_resumed_run_in_progress_shows_its_live_stream_not_its_old_checkpoint(trained, tmp_path):
    path = make_run(trained, tmp_path, "resumed", status="training")
    append_metric(path, {"step": 9, "train_loss": 1.0, "val_loss": 1.5, "elapsed": 9.0, "total_steps": 20})
    run = {r.name: r for r in list_runs(tmp_path, live=True)}["resumed"]
    assert run.status == "training" and run.metrics[-1]["step"] == 9
    assert {r.name: r for r in list_runs(tmp_path)}["resumed"].status != "training"


def test_numbers_are_formatted_for_people():
    assert run_compare.fmt_int(22901.1877) == "22,901" and run_compare.fmt_int(None) == ""
    assert run_compare.fmt_loss(3.14159) == "3.142" and run_compare.fmt_loss(float("nan")) == ""
    assert run_compare.fmt_duration(65) == "1 min 05 s" and run_compare.fmt_duration(3725) == "1 h 02 min"
    assert run_compare.fmt_duration(4.21) == "4.2 s" and run_compare.fmt_duration(42) == "42 s"
    assert run_compare.fmt_value(0.003) == "0.003" and run_compare.fmt_value(["a", "b"]) == "a, b"


def test_a_row_reads_as_a_person_would(trained, tmp_path):
    make_run(trained, tmp_path, "r")
    row = run_compare.run_row(list_runs(tmp_path)[0])
    assert row["tokens/s"].replace(",", "").isdigit() and "." not in row["tokens/s"]
    assert len(row["best val loss"].split(".")[1]) == 3 and row["training time"].endswith("s")


def test_rename_stores_a_display_name_and_keeps_the_folder(trained, tmp_path):
    make_run(trained, tmp_path, "r")
    runs = list_runs(tmp_path)
    run_list.rename(runs, "r", "  my   best run ")
    again = list_runs(tmp_path)[0]
    assert again.name == "r" and again.display_name == "my best run" and run_list.title(again) == "my best run"
    assert (tmp_path / "r" / "checkpoint").is_dir()
    run_list.rename(list_runs(tmp_path), "r", "")
    assert list_runs(tmp_path)[0].display_name is None
    with pytest.raises(run_list.RunError, match="at most 80 characters"):
        run_list.rename(runs, "r", "x" * 81)
    with pytest.raises(run_list.RunError, match="no run named '../r'"):
        run_list.rename(runs, "../r", "x")


def test_rename_never_replaces_a_damaged_record(trained, tmp_path):
    make_run(trained, tmp_path, "r")
    runs = list_runs(tmp_path)
    damaged = '{"format": 1, "label": 5}'
    (tmp_path / "r" / RECORD).write_text(damaged)
    with pytest.raises(run_list.RunError, match="cannot rename r"):
        run_list.rename(runs, "r", "new")
    assert (tmp_path / "r" / RECORD).read_text() == damaged


def test_delete_removes_the_run_folder_only_and_refuses_what_it_must(trained, tmp_path):
    root = tmp_path / "runs"
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"SQLite format 3\x00 planted")
    make_run(trained, root, "keep")
    make_run(trained, root, "gone")
    live_run(root, "live")
    runs = list_runs(root, live=True)
    with pytest.raises(run_list.RunError, match="is in progress: stop it first"):
        run_list.delete(runs, "live", root, protect=[cache])
    for bad in ("../cache.sqlite", "..", "keep/checkpoint", str(root / "gone")):
        with pytest.raises(run_list.RunError, match="no run named"):
            run_list.delete(runs, bad, root, protect=[cache])
    assert run_list.delete(runs, "gone", root, protect=[cache]) == root / "gone"
    assert not (root / "gone").exists() and (root / "keep" / "checkpoint").is_dir() and (root / "live").is_dir()
    assert cache.read_bytes() == b"SQLite format 3\x00 planted"
    inside = root / "keep" / "cache.sqlite"
    inside.write_bytes(b"x")
    with pytest.raises(run_list.RunError, match="must stay"):
        run_list.delete(list_runs(root, live=True), "keep", root, protect=[inside])
    assert inside.is_file()
    with pytest.raises(run_list.RunError, match="is in progress"):  # a job of this process writes it (long scoring)
        run_list.delete(list_runs(root, live=True), "keep", root, busy=[None, str(root / "keep")])
    assert (root / "keep" / "checkpoint").is_dir()


def test_private_server_lists_every_run_public_one_own_and_the_clis(trained, tmp_path):
    make_run(trained, tmp_path, "mine", owner="tag-me")
    make_run(trained, tmp_path, "theirs", owner="tag-other")
    make_run(trained, tmp_path, "cli")
    names = lambda runs: sorted(r.name for r in runs)  # noqa: E731
    assert names(run_list.visible(tmp_path, "tag-me", public=False)) == ["cli", "mine", "theirs"]
    assert names(run_list.visible(tmp_path, None, public=False)) == ["cli", "mine", "theirs"]
    public = run_list.visible(tmp_path, "tag-me", public=True)
    assert names(public) == ["cli", "mine"] and names(run_list.visible(tmp_path, None, public=True)) == ["cli"]
    assert names(run_list.editable(public, "tag-me", public=True)) == ["mine"]  # not the CLI's run
    assert names(run_list.editable(public, "tag-me", public=False)) == ["cli", "mine"]


def test_curves_smooth_draw_train_dashed_and_use_step_or_time():
    metrics = [{"step": s, "train_loss": 3.0 + (s % 2), "val_loss": 4.0 - s / 10, "elapsed": s * 2.5}
               for s in range(1, 11)]  # fmt: skip
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0] and ema([2.0], 0.9) == [2.0]
    raw = runs_curves_figure({"r": metrics})
    smooth = runs_curves_figure({"r": metrics}, smoothing=0.8)
    timed = runs_curves_figure({"r": metrics}, x_axis="time", train=False)
    val, tr = raw.data
    assert val.name == "r · validation" and tr.line.dash == "dash" and tr.legendgroup == val.legendgroup
    assert list(tr.y) == [m["train_loss"] for m in metrics]
    jumps = lambda ys: max(abs(a - b) for a, b in zip(ys, ys[1:], strict=False))  # noqa: E731
    assert jumps(smooth.data[1].y) < 0.6 < jumps(tr.y) == 1.0 and smooth.layout.title.text.endswith("EMA 0.8)")
    assert len(timed.data) == 1 and list(timed.data[0].x) == [m["elapsed"] for m in metrics]
    assert timed.layout.xaxis.title.text == "training time (s)"
    with pytest.raises(ValueError, match="x_axis"):
        runs_curves_figure({"r": metrics}, x_axis="wall")


def test_record_keeps_the_display_name_across_other_updates(trained, tmp_path):
    path = make_run(trained, tmp_path, "r")
    run_list.rename(list_runs(tmp_path), "r", "named")
    from llmcomp.training.run_folder import update_record

    update_record(path, status="finished")
    assert read_record(path).display_name == "named"
    assert json.loads((path / RECORD).read_text())["display_name"] == "named"


def test_cli_lists_by_corpus_renames_and_deletes_after_asking(trained, tmp_path, capsys, monkeypatch):
    from llmcomp.cli import main

    root = tmp_path / "runs"
    make_run(trained, root, "a0")
    make_run(trained, root, "b0", corpus=B)
    assert main(["runs", "--runs", str(root), "list"]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and "binding.txt: 40 sentences" in out and "upload.txt: 30 sentences" in out
    assert main(["runs", "--runs", str(root), "rename", "a0", "first try"]) == 0
    assert "a0 is now shown as first try" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: delete does not guess, it asks for --yes
    assert main(["runs", "--runs", str(root), "delete", "a0"]) == 2
    assert "confirm with --yes" in capsys.readouterr().err and (root / "a0").is_dir()
    assert main(["runs", "--runs", str(root), "delete", "../runs"]) == 2
    assert "no run named '../runs'" in capsys.readouterr().err
    assert main(["runs", "--runs", str(root), "delete", "a0", "--yes"]) == 0
    assert not (root / "a0").exists() and (root / "b0").is_dir()
