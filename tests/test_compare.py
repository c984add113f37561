"""The comparison experiment: files, table arithmetic, reading runs back, the CLI, source selection."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmcomp.attention import make_source
from llmcomp.cli import build_parser
from llmcomp.experiments import CompareConfig, CompareError, compare, load_run, summarize_runs
from llmcomp.experiments.compare_sources import is_binding_corpus, resolve_sources
from llmcomp.experiments.labels import CLI_DEFAULT_SOURCES, parse_source
from llmcomp.experiments.tables import RUN_COLUMNS, TABLE_COLUMNS, runs_frame, summary_table, summary_tables
from llmcomp.model import GPTConfig
from llmcomp.settings import DATA_DIR, EXAMPLE_CORPUS
from llmcomp.text import Corpus, load_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.run_folder import CorpusInfo, read_record
from llmcomp.training.run_summary import RunSummary, summarise

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["uniform", "previous", "learned"]
SEEDS = [0, 1]
MODEL = GPTConfig(n_layer=1, n_embd=32)
TRAIN = TrainConfig(batch_size=16, eval_every=10, log_every=5)


@pytest.fixture(scope="module")
def small() -> Corpus:
    full = load_corpus(EXAMPLE_CORPUS)
    return Corpus(full.sentences[:80], name="example-80", config=full.config)


@pytest.fixture(scope="module")
def done(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "compare"
    events = []
    config = CompareConfig(sources=SOURCES, seeds=SEEDS, steps=20, model=MODEL, train=TRAIN, out=out)
    result = compare(small, config, progress=events.append)
    return result, out, events


def _last_val(run_dir: Path, key: str = "val_loss") -> float:
    metrics = [json.loads(x) for x in (run_dir / "checkpoint" / "metrics.jsonl").read_text().splitlines()]
    return [m[key] for m in metrics if key in m][-1]


def test_compare_writes_every_file(done):
    result, out, _ = done
    assert not result.failures
    for name in ("runs.csv", "table.csv", "table.md", "curves.html", "compare.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for source in SOURCES:
        for seed in SEEDS:
            run = out / f"{source}-seed{seed}"
            assert (run / "checkpoint" / "model.safetensors").is_file()
            assert json.loads((run / "run.json").read_text())["seed"] == seed
    html = (out / "curves.html").read_text()
    assert all(s in html for s in SOURCES) and "validation loss" in html
    record = json.loads((out / "compare.json").read_text())
    assert record["sources"] == SOURCES and record["seeds"] == SEEDS and record["steps"] == 20
    assert record["focus"] is False  # not the binding corpus


def test_runs_csv_has_one_row_per_run_matching_its_metrics(done):
    _, out, _ = done
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == RUN_COLUMNS
    assert len(runs) == len(SOURCES) * len(SEEDS)
    assert sorted(zip(runs["source"], runs["seed"], strict=True)) == sorted((s, k) for s in SOURCES for k in SEEDS)
    for row in runs.to_dict("records"):
        run_dir = out / row["run"]
        assert row["final_val_loss"] == pytest.approx(_last_val(run_dir), abs=1e-12)
        assert row["final_val_ppl"] == pytest.approx(math.exp(row["final_val_loss"]))
        assert row["steps"] == 20
        assert row["requests"] == 0  # baselines cost nothing
    assert runs["final_val_focus_loss"].isna().all()
    # the seeds change the model: the two seeds of a source do not end on the same loss
    for source in SOURCES:
        assert runs[runs["source"] == source]["final_val_loss"].nunique() == 2


def test_table_mean_and_spread_come_from_the_per_seed_values(done):
    result, out, _ = done
    table = pd.read_csv(out / "table.csv")
    assert list(table.columns) == TABLE_COLUMNS
    assert table["source"].tolist() == SOURCES
    for row in table.to_dict("records"):
        vals = [_last_val(out / f"{row['source']}-seed{k}") for k in SEEDS]
        assert row["seeds"] == len(SEEDS)
        assert row["val_loss_mean"] == pytest.approx(statistics.fmean(vals))
        assert row["val_loss_std"] == pytest.approx(statistics.stdev(vals))
        assert row["val_loss_min"] == pytest.approx(min(vals)) and row["val_loss_max"] == pytest.approx(max(vals))
        assert row["val_ppl_mean"] == pytest.approx(statistics.fmean(math.exp(v) for v in vals))
        ref = [_last_val(out / f"uniform-seed{k}") for k in SEEDS]
        diffs = [v - r for v, r in zip(vals, ref, strict=True)]
        assert row["delta_vs_reference_mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-12)
        assert row["delta_vs_reference_std"] == pytest.approx(statistics.stdev(diffs), abs=1e-12)
    md = (out / "table.md").read_text()
    for row in table.to_dict("records"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['source']} |"))
        assert f"{row['val_loss_mean']:.3f} ± {row['val_loss_std']:.3f}" in line
        assert f"{row['val_loss_min']:.3f}–{row['val_loss_max']:.3f}" in line
    assert md.strip().endswith(result.markdown.strip())


def test_summarize_runs_reads_the_folders_back(done):
    result, out, _ = done
    again = summarize_runs(out)  # a comparison folder expands to its runs
    written = pd.read_csv(out / "runs.csv")
    key = ["source", "seed"]
    a = again.sort_values(key).reset_index(drop=True)
    b = written.sort_values(key).reset_index(drop=True)
    for col in ("run", "source", "kind", "seed", "steps", "requests"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("final_val_loss", "final_val_ppl", "best_val_loss", "tokens_per_s"):
        assert a[col].tolist() == pytest.approx(b[col].tolist()), col
    # the same table from the read-back rows, and single run folders work too
    assert summary_table(again, order=SOURCES)["val_loss_mean"].tolist() == pytest.approx(
        result.table["val_loss_mean"].tolist()
    )
    one = load_run(out / "previous-seed1")
    assert one.label == "previous" and one.seed == 1 and one.kind == "previous"
    assert one.attention == {} and one.api_requests == 0  # seed 1 reused seed 0's scoring pass
    assert load_run(out / "previous-seed0").attention["scored"] > 0
    assert one.source == "previous (1 head)" and one.status == "finished"  # what the app's lists show
    assert len(summarize_runs([out / "uniform-seed0", out / "learned-seed1"])) == 2


def test_summarize_runs_skips_damaged_folders(done, tmp_path):
    _, out, _ = done
    (tmp_path / "broken" / "checkpoint").mkdir(parents=True)
    (tmp_path / "broken" / "checkpoint" / "checkpoint.json").write_text("{not json")
    assert summarize_runs([tmp_path / "broken", tmp_path / "missing"]).empty
    with pytest.raises(CompareError, match="not a finished run"):
        load_run(tmp_path / "broken")


def test_seeds_reuse_one_scoring_pass_without_changing_the_result(done, small):
    """Seed 1 of a comparison ends on exactly the loss of a stand-alone run that scored for itself."""
    result, out, events = done
    scoring_sources = {e["label"] for e in events if e["event"] == "scoring"}
    assert scoring_sources == set(SOURCES)
    info = read_record(out / "uniform-seed1")
    assert info.attention == {} and info.reused_from == "uniform-seed0" and info.status == "finished"
    assert read_record(out / "uniform-seed0").attention["scored"] == len(small.sentences)
    alone = Trainer(small, make_source("uniform"), MODEL, TrainConfig(**{**vars(TRAIN), "steps": 20, "seed": 1})).run()
    assert alone.final_val_loss == pytest.approx(_last_val(out / "uniform-seed1"), abs=1e-6)


def test_a_failing_source_is_reported_and_the_others_still_run(small, tmp_path):
    config = CompareConfig(sources=["uniform", "nonsense"], seeds=[0], steps=5, model=MODEL, train=TRAIN, out=tmp_path)
    result = compare(small, config)
    assert "nonsense" in result.failures and "unknown attention source" in result.failures["nonsense"]
    assert result.table["source"].tolist() == ["uniform"]
    assert json.loads((tmp_path / "compare.json").read_text())["failures"]["nonsense"]


def test_compare_refuses_a_folder_that_holds_files(small, done):
    _, out, _ = done
    with pytest.raises(CompareError, match="already holds files"):
        compare(small, CompareConfig(sources=["uniform"], seeds=[0], steps=2, out=out))


def test_source_selection():
    example = load_corpus(EXAMPLE_CORPUS)
    binding = load_corpus(DATA_DIR / "binding.txt")
    assert is_binding_corpus(binding) and not is_binding_corpus(example)
    assert parse_source("oracle:shift=-1:weight=0.5") == ("oracle", {"shift": -1, "weight": 0.5})
    with pytest.raises(CompareError):
        parse_source("oracle:shift")
    labels, _ = resolve_sources(["uniform", "auto", "oracle:shift=1"], binding)
    assert labels[0] == "uniform" and "oracle" in labels and labels[-1] == "oracle:shift=1"
    assert len(labels) == len(set(labels))
    assert "oracle" not in resolve_sources(None, example)[0]
    # the CLI's declared default is what compare treats as "auto"
    assert build_parser().parse_args(["compare"]).sources == CLI_DEFAULT_SOURCES


def test_openai_joins_the_automatic_list_only_when_configured(monkeypatch):
    example = load_corpus(EXAMPLE_CORPUS)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert "openai" not in resolve_sources(None, example)[0]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    labels, notes = resolve_sources(None, example)
    assert "openai" in labels and any("openai" in n for n in notes)


def test_binding_compare_reports_focus_loss(tmp_path):
    full = load_corpus(DATA_DIR / "binding.txt")
    corpus = Corpus(full.sentences[:120], name="binding-120", config=full.config)
    config = CompareConfig(sources=["uniform", "oracle"], seeds=[0], steps=10, model=MODEL, train=TRAIN, out=tmp_path)
    result = compare(corpus, config)
    assert result.focus and result.table["val_focus_loss_mean"].notna().all()
    assert "focus loss" in (tmp_path / "table.md").read_text()


def test_cli_compare_prints_the_table(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-m", "llmcomp", "compare", "--sources", "uniform,previous", "--seeds", "2", "--steps", "20",
         "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| source | seeds | val loss (mean ± std)" in r.stdout
    assert any(ln.startswith("| uniform | 2 |") for ln in r.stdout.splitlines())
    assert any(ln.startswith("| previous | 2 |") for ln in r.stdout.splitlines())
    assert len(pd.read_csv(out / "runs.csv")) == 4


def test_each_run_records_its_corpus_and_source(done, small):
    result, out, _ = done
    for source in SOURCES:
        rec = read_record(out / f"{source}-seed0")
        assert rec.label == source and rec.status == "finished" and rec.finished_at >= rec.started_at
        assert rec.corpus.sha256 == small.sha256 and rec.corpus.sentences == len(small.sentences)
        assert rec.source["spec"]["kind"] == source
    assert json.loads((out / "compare.json").read_text())["corpus_sha256"] == small.sha256
    assert set(pd.read_csv(out / "runs.csv")["corpus_key"]) == {result.runs[0].corpus_key}


def test_a_run_that_cannot_train_is_recorded_as_failed(small, tmp_path):
    label = "learned:learned_heads=0"  # a model with no attention head at all
    config = CompareConfig(sources=[label], seeds=[0], steps=2, model=MODEL, train=TRAIN, out=tmp_path / "cmp")
    result = compare(small, config)
    assert "at least one attention head" in result.failures[label]
    rec = read_record(tmp_path / "cmp" / "learned-learned_heads0-seed0")
    assert rec.status == "failed" and "at least one attention head" in rec.error and rec.finished_at


def test_runs_of_another_corpus_are_never_ranked_with_these(done, small, tmp_path):
    """Same corpus name, other sentences: the table refuses to rank them together and groups them instead."""
    _, out, _ = done
    other = Corpus(small.sentences[:70], name=small.name, config=small.config)
    config = CompareConfig(sources=["uniform"], seeds=[0], steps=5, model=MODEL, train=TRAIN, out=tmp_path / "other")
    compare(other, config)
    runs = summarize_runs([out, tmp_path / "other"])
    assert len(runs) == len(SOURCES) * len(SEEDS) + 1
    with pytest.raises(CompareError, match=r"2 different corpora or splits \(example-80 \[\w{8}\], example-80 \["):
        summary_table(runs)
    tables = summary_tables(runs, order=SOURCES)
    mine, theirs = tables[CorpusInfo.of(small).key], tables[CorpusInfo.of(other).key]
    assert len(tables) == 2 and mine["source"].tolist() == SOURCES and theirs["source"].tolist() == ["uniform"]
    assert mine["seeds"].tolist() == [len(SEEDS)] * len(SOURCES) and theirs["seeds"].tolist() == [1]


def _summary(corpus: CorpusInfo | None, seed: int, loss: float) -> RunSummary:
    metrics = [{"step": 5, "val_loss": loss}]
    return summarise(metrics, name=f"u{seed}", path=Path("."), kind="uniform", label="uniform", source="uniform",
                     seed=seed, steps=5, total_steps=5, attention={}, corpus=corpus)  # fmt: skip


def test_another_split_or_an_unrecorded_corpus_is_not_ranked_with_a_known_one():
    a = CorpusInfo("c", "ab" * 32, 80, split_seed=1234, val_fraction=0.1)
    resplit = CorpusInfo(
        "c", "ab" * 32, 80, split_seed=1234, val_fraction=0.2
    )  # the same sentences, held out otherwise
    same = CorpusInfo("renamed", "ab" * 32, 80, split_seed=1234, val_fraction=0.1)
    assert summary_table(runs_frame([_summary(a, 0, 4.0), _summary(same, 1, 5.0)]))["seeds"].tolist() == [2]
    for other in (resplit, None):
        with pytest.raises(CompareError, match="2 different corpora or splits"):
            summary_table(runs_frame([_summary(a, 0, 4.0), _summary(other, 1, 5.0)]))
    # old runs, none of which recorded a content hash, are still tabulated (as before corpora were hashed)
    assert summary_table(runs_frame([_summary(None, 0, 4.0), _summary(None, 1, 5.0)]))["seeds"].tolist() == [2]
