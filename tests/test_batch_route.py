"""The Batch API route (``llmcomp score --batch``), end to end over real HTTP against the fake server's Files and
Batches API: every mode with no live request, splitting to the file limits, invalid lines retried live (or
reported), expired and failed batches keeping what ran, the wait's deadline, cancel, kill -9 mid-poll and resume
without paying twice, the budget, the key kept out of every file, and the estimate at the batch price.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_openai_source import CORPUS  # six sentences, one of them with "rained", one "morning"

from llmcomp.attention import AttentionCache
from llmcomp.attention.batch_store import BatchStore
from llmcomp.attention.openai_config import BatchConfig
from llmcomp.attention.openai_source import OpenAISource, ScoringAborted

REPO = Path(__file__).resolve().parents[1]
KEY = "planted-BATCHCHECK-4e1d7a9b3c6f"  # distinctive: searched for in every file the route writes
FAST = BatchConfig(poll=0.01, wait=30)


pytestmark = pytest.mark.usefixtures("no_openai_env")  # tests/conftest.py


@pytest.fixture
def make(fake_openai, tmp_path):
    """Sources against the fake server with fast retries; ``batch=None`` makes a live one."""
    made: list[tuple[OpenAISource, AttentionCache]] = []

    def _make(cache: str = "cache.sqlite", batch: BatchConfig | None = FAST, **kw) -> OpenAISource:
        c = AttentionCache(tmp_path / cache)
        kw = {"base_url": fake_openai.url, "api_key": KEY, "backoff_base": 0.01, "backoff_max": 0.02, **kw}
        src = OpenAISource(cache=c, batch=batch, **kw)
        made.append((src, c))
        return src

    yield _make
    for src, c in made:
        src.close()
        c.close()


def live_matrices(make, mode: str, **kw) -> list[torch.Tensor]:
    src = make(cache=f"live-{mode}.sqlite", batch=None, mode=mode, **kw)
    return src.score_many(CORPUS).require_all()


@pytest.mark.parametrize("mode", ["sentence", "prefix", "pair"])
def test_every_mode_is_scored_by_batch_alone_and_equals_the_live_route(make, fake_openai, mode):
    """0 live requests; the matrices are the live route's, every request of the run in one batch (prefix mode:
    every distinct prefix up front)."""
    heads = ("meaning", "syntax")
    got = make(mode=mode, heads=heads).score_many(CORPUS)
    stats = fake_openai.stats()
    assert stats["requests"] == 0 and stats["batches_created"] == 1, stats
    expected_lines = {
        "sentence": len(CORPUS),
        "prefix": len({tuple(w[: i + 1]) for w in CORPUS for i in range(len(w))}),
        "pair": 1 + (len({(q, k) for w in CORPUS for i, q in enumerate(w) for k in w[: i + 1]}) - 1) // 100,
    }[mode]
    assert stats["batch_lines"] == expected_lines and got.stats.batched == expected_lines
    assert got.stats.requests == 0 and got.stats.scored == len(CORPUS) and not got.failures
    fake_openai.reset_counts()
    for a, b in zip(got.require_all(), live_matrices(make, mode, heads=heads), strict=True):
        torch.testing.assert_close(a, b)


def test_a_second_run_finds_everything_in_the_cache(make, fake_openai):
    make().score_many(CORPUS)
    again = make().score_many(CORPUS)
    assert again.stats.cached == len(CORPUS) and fake_openai.stats()["batches_created"] == 1


def test_requests_are_split_to_the_file_limits(make, fake_openai):
    by_count = make(batch=BatchConfig(poll=0.01, max_requests=2)).score_many(CORPUS)
    assert fake_openai.stats()["batches_created"] == 3 and not by_count.failures
    fake_openai.reset_counts()
    one_line = 3000  # a sentence-mode line is about 2 KB: one per file
    by_bytes = make(cache="b.sqlite", batch=BatchConfig(poll=0.01, max_bytes=one_line)).score_many(CORPUS)
    assert fake_openai.stats()["batches_created"] == len(CORPUS) and not by_bytes.failures


def test_an_invalid_line_is_asked_again_live(make, fake_openai):
    fake_openai.add_fault("nan", match="rained")  # the batch's line for that sentence; the live retry is fine
    got = make().score_many(CORPUS)
    assert not got.failures and fake_openai.stats()["requests"] == 1


def test_without_live_retries_an_invalid_line_is_reported_with_its_reason(make, fake_openai):
    fake_openai.add_fault("nan", match="rained")
    fake_openai.add_fault("server_error", match="morning")
    got = make(batch=BatchConfig(poll=0.01, live_retry=False)).score_many(CORPUS)
    assert fake_openai.stats()["requests"] == 0
    assert sorted(got.failures) == [3, 5], got.failures
    assert "invalid answer" in got.failures[5] and "batch_" in got.failures[5]
    assert "500" in got.failures[3]


def test_an_expired_batch_keeps_what_ran_and_the_next_run_submits_only_the_rest(make, fake_openai):
    fake_openai.script_batches(["validating", "expired:2"])
    first = make().score_many(CORPUS)
    assert fake_openai.stats()["requests"] == 0, "requests a batch never ran are not sent live"
    assert first.stats.scored == 2 and sorted(first.failures) == [2, 3, 4, 5]
    assert "expired" in first.failures[2] and "run again" in first.failures[2]
    fake_openai.script_batches(["validating", "completed"])
    second = make().score_many(CORPUS)
    stats = fake_openai.stats()
    assert not second.failures and second.stats.cached == 2 and stats["batches_created"] == 2
    assert stats["batch_lines"] == 2 + 4 and stats["requests"] == 0


def test_a_failed_batch_reports_why_for_every_sentence(make, fake_openai):
    fake_openai.script_batches(["validating", "failed"])
    got = make().score_many(CORPUS)
    assert len(got.failures) == len(CORPUS) and fake_openai.stats()["requests"] == 0
    assert "failed" in got.failures[0] and "token limit" in got.failures[0].lower()


def test_the_wait_has_a_deadline_and_a_later_run_collects_the_same_batch(make, fake_openai, tmp_path):
    fake_openai.script_batches(["validating"] + ["in_progress"] * 3 + ["completed"])
    with pytest.raises(ScoringAborted) as e:
        make(batch=BatchConfig(poll=0.01, wait=0)).score_many(CORPUS)
    msg = str(e.value)
    assert "run the same command again" in msg and "batch_" in msg and "\n" not in msg
    cache = AttentionCache(tmp_path / "cache.sqlite")  # the batch was recorded the moment it was created
    store = BatchStore(cache.path)
    assert [len(r.units) for r in store.all() if r.open] == [len(CORPUS)]
    store.close()
    cache.close()
    assert make().estimate(CORPUS).requests == 0, "requests an open batch holds are paid already"
    assert make(batch=None).estimate(CORPUS).requests == len(CORPUS)
    got = make().score_many(CORPUS)
    stats = fake_openai.stats()
    assert not got.failures and stats["batches_created"] == 1 and stats["batch_lines"] == len(CORPUS)


def test_cancel_stops_the_wait_at_once_and_leaves_the_batch_to_resume(make, fake_openai):
    fake_openai.script_batches(["validating"] + ["in_progress"] * 10_000 + ["completed"])
    src = make(batch=BatchConfig(poll=0.05, wait=60))
    threading.Timer(0.5, src.cancel).start()
    start = time.monotonic()
    with pytest.raises(ScoringAborted, match="cancelled.*batches keep running"):
        src.score_many(CORPUS)
    assert time.monotonic() - start < 5


def test_the_budget_counts_batch_lines(make, fake_openai):
    got = make(max_requests=4).score_many(CORPUS)
    assert fake_openai.stats()["batch_lines"] == 4 and fake_openai.stats()["requests"] == 0
    assert len(got.failures) == 2 and all("budget exhausted" in r for r in got.failures.values())


def test_a_wrong_key_stops_the_route_in_one_line_without_the_key(make, fake_openai):
    fake_openai.api_key = "the-right-key"
    with pytest.raises(ScoringAborted) as e:
        make().score_many(CORPUS)
    assert "401" in str(e.value) and KEY not in str(e.value) and "\n" not in str(e.value)


def test_the_key_is_in_no_file_the_route_writes(make, fake_openai, tmp_path):
    make().score_many(CORPUS)
    uploaded = b"".join(data for _meta, data in fake_openai.batches.files.values())
    assert b'"custom_id"' in uploaded and KEY.encode() not in uploaded
    assert KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def _cli(*args: str, url: str, cache: Path) -> list[str]:
    corpus = cache.parent / "corpus.txt"
    corpus.write_text("".join(" ".join(w).capitalize() + "\n" for w in CORPUS * 2))
    return [
        sys.executable, "-m", "llmcomp", "score", "--attention", "openai", "--base-url", url, "--cache", str(cache),
        "--corpus", str(corpus), "--split", "lines", "--batch", *args,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": KEY}


def test_kill_9_mid_poll_then_the_same_command_resumes_the_batch(fake_openai, tmp_path):
    """The batch is recorded before polling starts: the second command polls it, creates none, pays nothing twice."""
    fake_openai.script_batches(["validating"] + ["in_progress"] * 40 + ["completed"])
    cache = tmp_path / "cache.sqlite"
    proc = subprocess.Popen(
        _cli("--batch-poll", "0.05", url=fake_openai.url, cache=cache),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while fake_openai.stats()["batches_created"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # some polls
    assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = subprocess.run(
        _cli("--batch-poll", "0.01", url=fake_openai.url, cache=cache), env=_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming 1 batch" in out.stderr
    stats = fake_openai.stats()
    assert stats["batches_created"] == 1 and stats["requests"] == 0
    assert f"{2 * len(CORPUS)} scored" in out.stdout and f"0 requests + {len(CORPUS)} in batches" in out.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "llmcomp", "cache", "batches", "--cache", str(cache)],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1, listed
    assert (
        "completed" in listed.stdout and f"{len(CORPUS)} requests" in listed.stdout and "answers kept" in listed.stdout
    )


def test_dry_run_prices_the_batch_at_half(fake_openai, tmp_path):
    def estimate(batch: bool) -> str:
        cmd = _cli("--dry-run", "--model", "gpt-4o-mini", url=fake_openai.url, cache=tmp_path / "c.sqlite")
        out = subprocess.run(
            [a for a in cmd if batch or a != "--batch"], env=_env(), capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return next(x for x in out.stdout.splitlines() if x.startswith("estimate: sentence mode"))

    def dollars(line: str) -> float:
        return float(line.split("about $")[1].split()[0])

    batch, live = estimate(batch=True), estimate(batch=False)
    assert "Batch API" in batch and "Batch API" not in live
    assert dollars(batch) == pytest.approx(dollars(live) / 2, rel=0.02)
    assert fake_openai.stats()["batches_created"] == 0 and fake_openai.stats()["requests"] == 0


def test_batch_with_a_source_that_sends_nothing_is_a_one_line_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "llmcomp", "score", "--attention", "uniform", "--batch", "--no-cache"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0 and "--batch applies to the openai attention source" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_train_scores_the_corpus_and_its_held_out_prefixes_in_one_batch(fake_openai, tmp_path):
    """Sentence mode's leak-free validation needs every held-out prefix: they go in the same batch, not live."""
    corpus = tmp_path / "corpus.txt"
    names, verbs = ["the cat", "a dog", "my aunt", "the baker", "our teacher"], ["saw", "helped", "called", "met"]
    corpus.write_text("".join(f"{a} {v} {b} today.\n" for a in names for v in verbs for b in names if a != b))
    out = subprocess.run(
        [sys.executable, "-m", "llmcomp", "train", "--attention", "openai", "--base-url", fake_openai.url, "--batch",
         "--batch-poll", "0.01", "--steps", "2", "--corpus", str(corpus), "--split", "lines",
         "--cache", str(tmp_path / "c.sqlite"), "--run-dir", str(tmp_path / "run")],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    stats = fake_openai.stats()
    assert stats["requests"] == 0 and stats["batches_created"] == 1
    assert stats["batch_lines"] > 80, stats  # 80 sentences and the held-out sentences' prefixes
    assert "leak-free" in out.stdout


@pytest.mark.parametrize(
    "fault", ["malformed", "bad_body", "deep_content", "content_number", "echo_key", "truncated", "later", "html"]
)
def test_a_hostile_line_fails_its_sentence_alone_in_one_line_without_the_key(make, fake_openai, fault):
    """The output file is read without trusting it: a bad answer costs its own sentence, with a reason."""
    fake_openai.add_fault(fault, match="rained")
    got = make(batch=BatchConfig(poll=0.01, live_retry=False)).score_many(CORPUS)
    assert list(got.failures) == [5], got.failures
    reason = got.failures[5]
    assert "\n" not in reason and KEY not in reason and KEY[8:20] not in reason, reason
    assert fake_openai.stats()["requests"] == 0


def test_ctrl_c_while_waiting_is_one_line_and_the_batch_is_resumed(fake_openai, tmp_path):
    fake_openai.script_batches(["validating"] + ["in_progress"] * 1000 + ["completed"])
    cache = tmp_path / "cache.sqlite"
    proc = subprocess.Popen(
        _cli("--batch-poll", "0.05", url=fake_openai.url, cache=cache),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while fake_openai.stats()["batches_created"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted:") and "resumes its batches" in err
    store = BatchStore(cache)
    assert [r.open for r in store.all()] == [True]
    store.close()


def test_batch_without_a_cache_is_a_one_line_error(fake_openai, tmp_path):
    cmd = [a for a in _cli(url=fake_openai.url, cache=tmp_path / "c.sqlite")]
    cmd[cmd.index("--cache") : cmd.index("--cache") + 2] = ["--no-cache"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--batch needs the attention cache" in out.stderr
    assert fake_openai.stats()["files_uploaded"] == 0
