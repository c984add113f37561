"""The task suite (``llmcomp compare --suite``): one table per task, a summary copied from them, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from llmcomp.cli import build_parser, main
from llmcomp.experiments.compare import CompareConfig
from llmcomp.experiments.suite import (
    SUITE_SOURCES,
    SUMMARY_COLUMNS,
    SUMMARY_FROM_TABLE,
    SuiteConfig,
    SuiteError,
    run_suite,
)
from llmcomp.model import GPTConfig
from llmcomp.training import TrainConfig

TASKS = ["ioi", "agreement"]
SOURCES = ["uniform", "oracle:task={task}"]
TINY = CompareConfig(
    seeds=[0],
    steps=10,
    converge=True,
    max_steps=20,
    patience=2,
    model=GPTConfig(n_layer=1, n_embd=32),
    train=TrainConfig(batch_size=16, eval_every=10, log_every=5),
)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "suite"
    events: list[dict] = []
    config = SuiteConfig(tasks=TASKS, sources=SOURCES, max_sentences=40, compare=TINY, out=out)
    return run_suite(config, progress=events.append), out, events


def test_one_table_per_task_and_a_summary_with_every_task_and_source(done):
    result, out, _ = done
    for task in TASKS:
        table = pd.read_csv(out / task / "table.csv")
        assert table["source"].tolist() == ["uniform", f"oracle:task={task}"]
        assert "| source | seeds |" in (out / task / "table.md").read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert summary.columns.tolist() == SUMMARY_COLUMNS
    assert list(zip(summary["task"], summary["source"], strict=True)) == [
        (t, s.replace("{task}", t)) for t in TASKS for s in SOURCES
    ]
    md = (out / "summary.md").read_text().splitlines()
    assert md[0].startswith("| task | source | seeds | focus loss | focus acc | target mass |")
    assert [ln.split(" | ")[:2] for ln in md[2:]] == [["| ioi", "uniform"], ["| ioi", "oracle:task=ioi"],
                                                     ["| agreement", "uniform"], ["| agreement", "oracle:task=agreement"]]  # fmt: skip
    suite_md = (out / "suite.md").read_text()
    assert suite_md.index("### ioi") < suite_md.index("### agreement") < suite_md.index("### Summary across tasks")
    assert {"summary.csv", "summary.md", "suite.md", "suite.json"} <= {p.name for p in out.iterdir()}


def test_the_summary_numbers_are_the_per_task_tables_numbers(done):
    result, out, _ = done
    summary = pd.read_csv(out / "summary.csv")
    for task in TASKS:
        table = pd.read_csv(out / task / "table.csv")[SUMMARY_FROM_TABLE].reset_index(drop=True)
        mine = summary[summary["task"] == task][SUMMARY_FROM_TABLE].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, table, check_exact=True)
    # the focus columns are measured (a task applies to every suite corpus), and the oracle points at its target
    assert summary["val_focus_loss_mean"].notna().all()
    oracle = summary[summary["source"].str.startswith("oracle")]
    assert (oracle["target_mass_mean"] == 1.0).all()


def test_each_run_is_converged_and_reported_as_it_ends(done):
    result, _, events = done
    runs = [e for e in events if e["event"] == "run"]
    assert [(e["task"], e["record"].label) for e in runs] == [
        (t, s.replace("{task}", t)) for t in TASKS for s in SOURCES
    ]
    assert all(r.budget == TINY.steps for r in result.results.values())  # the fixed budget beside the best
    assert [e["task"] for e in events if e["event"] == "task_done"] == TASKS


def test_an_unknown_task_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SuiteError, match=r"unknown suite task 'nope'; the suite's tasks are induction, ioi"):
        run_suite(SuiteConfig(tasks=["ioi", "nope"], compare=TINY, out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # refused before anything was trained or written
    assert main(["compare", "--suite", "--tasks", "ioi,nope", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown suite task 'nope'")


def test_a_missing_corpus_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(SuiteError, match=r"llmcomp tasks make ioi --out"):
        run_suite(SuiteConfig(tasks=["ioi"], data=tmp_path, compare=TINY))


def test_cli_flags_fill_a_suite_config_with_suite_defaults():
    from llmcomp.cli.suite import suite_config_from_args

    args = build_parser().parse_args(["compare", "--suite"])
    config = suite_config_from_args(args)
    base = SuiteConfig()
    assert config.tasks == base.tasks and config.sources == list(SUITE_SOURCES)
    assert config.max_sentences == base.max_sentences
    assert config.compare.converge and config.compare.steps == base.compare.steps
    assert config.compare.max_steps == base.compare.max_steps
    args = build_parser().parse_args(
        ["compare", "--suite", "--tasks", "ioi, binding", "--sources", "uniform,oracle:task={task}:shift=1",
         "--seeds", "2", "--max-sentences", "50", "--steps", "30", "--cache", "c.sqlite"]
    )  # fmt: skip
    config = suite_config_from_args(args)
    assert config.tasks == ["ioi", "binding"] and config.sources == ["uniform", "oracle:task={task}:shift=1"]
    assert config.compare.seeds == [0, 1] and config.max_sentences == 50 and config.compare.steps == 30
    assert config.compare.cache == Path("c.sqlite") and config.compare.max_sentences is None


def test_a_bad_source_label_stops_before_training(tmp_path):
    config = SuiteConfig(tasks=["ioi"], sources=["uniform", "oracle:nope=1"], compare=replace(TINY), out=tmp_path / "z")
    with pytest.raises(Exception, match="nope"):
        run_suite(config)
    assert not (tmp_path / "z").exists()


@pytest.mark.slow
def test_the_local_llm_heads_are_chosen_per_task_on_its_own_corpus(tmp_path):
    """With the real SmolLM2: top:K:{task} becomes top:K:ioi on the ioi corpus, chosen once, kept in every run."""
    from llmcomp.app.head_choice import HeadChoice

    out = tmp_path / "suite"
    compare = replace(TINY, seeds=[0, 1], cache=tmp_path / "cache.sqlite")
    config = SuiteConfig(
        tasks=["ioi"], sources=["local:heads=top:2:{task}"], max_sentences=30, compare=compare, out=out
    )
    result = run_suite(config)
    assert not result.failures
    choices = [HeadChoice.read(run.path) for run in result.results["ioi"].runs]
    assert len(choices) == 2 and all(c is not None and c.pattern == "ioi" and c.k == 2 for c in choices)
    assert choices[0].labels == choices[1].labels
    mass = pd.read_csv(out / "summary.csv")["target_mass_mean"]
    assert mass.notna().all() and 0.0 < float(mass.iloc[0]) <= 1.0
