"""Scoring the one way (llmcomp.app.scoring): estimate -> budget check -> score -> charge, in the
caller's thread or as a background job that can be watched against a deadline and stopped."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from llmcomp.app.budget import BudgetError, OwnerKeyBudget
from llmcomp.app.keys import KeyPolicy
from llmcomp.app.scoring import ScoringJob, check_budget, estimate, score, start_scoring
from llmcomp.app.sources import build_source
from llmcomp.attention import AttentionCache, make_source
from llmcomp.attention.base import AttentionSource
from llmcomp.settings import BudgetCaps

SENTENCES = [[f"w{i}", "saw", f"x{i}", "."] for i in range(6)]


class Gated(AttentionSource):
    """A real source that scores one sentence per ``release()`` and reports progress after each."""

    kind = "gated"

    def __init__(self):
        super().__init__(n_heads=1)
        self.gate = threading.Semaphore(0)
        self.scored = 0
        self.closed = False

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def _score_batch(self, sentences, stats, progress):
        out, scored = [], stats.scored
        try:
            for words in sentences:
                assert self.gate.acquire(timeout=30), "the test never released this sentence"
                t = len(words)
                out.append(torch.tril(torch.ones(1, t, t)) / torch.arange(1, t + 1).view(1, t, 1))
                self.scored += 1
                stats.scored += 1  # live counts for progress, as the OpenAI source reports them
                if progress:
                    progress(stats)
        finally:
            stats.scored = scored  # the base class adds the final tally itself
        return out

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def owner_keys(monkeypatch, fake_openai):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-owner-planted-777")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    budget = OwnerKeyBudget(BudgetCaps(session_requests=4, daily_requests=100))
    return KeyPolicy(budget=budget)


def test_estimates_say_what_scoring_costs(tmp_path, fake_openai):
    free = estimate(make_source("uniform"), SENTENCES)
    assert (free.paid, free.cached, free.requests, free.to_score) == (False, None, 0, len(SENTENCES))
    cache = AttentionCache(tmp_path / "c.sqlite")
    paid = build_source({"kind": "openai", "base_url": fake_openai.url, "api_key": "k"}, cache=cache)
    try:
        paid.score_many(SENTENCES[:2])
        est = estimate(paid, SENTENCES)
        assert est.paid and not est.owner_key and est.cached == 2 and est.to_score == 4
        assert est.requests == 4 and est.tokens > 0 and "4 of 6 sentences to score" in est.detail
    finally:
        paid.close()
        cache.close()


def test_the_budget_refuses_before_a_single_request_and_charges_what_was_spent(owner_keys, fake_openai):
    src = build_source({"kind": "openai"}, keys=owner_keys)
    try:
        with pytest.raises(BudgetError, match="needs about 6 requests but the server's key allows 4 more"):
            score(src, SENTENCES, owner_keys)
        with pytest.raises(BudgetError, match="allows 4 more"):
            start_scoring(src, SENTENCES, owner_keys, close=False)
        assert fake_openai.requests == 0  # refused up front: nothing was sent
        result = score(src, SENTENCES[:3], owner_keys)
        assert not result.failures and fake_openai.requests == 3
        assert owner_keys.usage.requests == owner_keys.budget.today().requests == 3  # charged, once
        assert "allows 1 requests more" in check_budget(src, SENTENCES[:1], owner_keys).allowance
    finally:
        src.close()


def test_a_background_job_reports_progress_and_its_result_then_closes_the_source():
    src = Gated()
    job = start_scoring(src, SENTENCES)
    assert job.snapshot().status == "scoring" and job.snapshot().scoring["sentences"] == len(SENTENCES)
    src.release(2)
    deadline = time.time() + 30
    while job.snapshot().scoring.get("done", 0) < 2:
        assert time.time() < deadline
        time.sleep(0.01)
    assert job.running and 0 < job.snapshot().progress < 1 and not src.closed
    src.release(len(SENTENCES) - 2)
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "finished" and snap.scoring["done"] == len(SENTENCES) and snap.progress == 1.0
    assert len(job.result.require_all()) == len(SENTENCES) and src.closed


def test_follow_gives_snapshots_until_a_deadline_and_stop_cancels_the_rest():
    src = Gated()
    job = ScoringJob(src, SENTENCES).start()
    t0 = time.monotonic()
    seen = list(job.follow(every=0.05, timeout=0.3))
    assert 0.25 < time.monotonic() - t0 < 5 and len(seen) >= 3  # watched for the deadline, then let go
    assert job.running and all(s.running for s in seen)  # following never stops the job
    versions = [s.version for s in seen]
    assert versions == sorted(versions)
    src.release(1)
    job.stop()
    src.release(len(SENTENCES))  # let the worker reach its next progress report
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "stopped" and job.result is None and src.closed
    assert src.scored < len(SENTENCES)  # it stopped at the next report, not after the whole corpus
    final = list(job.follow(every=0.05))
    assert [s.status for s in final] == ["stopped"]


def test_a_failing_source_fails_the_job_with_one_line():
    class Broken(Gated):
        def _score_batch(self, sentences, stats, progress):
            raise ValueError("the server said no\n  (second line of detail)")

    job = start_scoring(Broken(), SENTENCES)
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "failed" and snap.error == "the server said no (second line of detail)"
