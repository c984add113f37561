"""The OpenAI source against hostile servers (issue 11, items 3, 4, 5, 13, 16 and cancel()).

Every fault runs over real HTTP against the fake server on 127.0.0.1 with short deadlines set through options,
so that the whole file takes seconds: a server that never answers, drips its body, answers 500 forever, nests
JSON 100,000 deep, sends nonsense usage or content types, floods braces, echoes the key, answers an HTML page or
a body over the cap. Nothing may crash; every failure has a reason; a failing server stops the run with one line.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from llmcomp.attention import answers
from llmcomp.attention.baselines import UniformSource
from llmcomp.attention.openai_source import OpenAIConfigError, OpenAISource, ScoringAborted
from llmcomp.testing.faults import ACCEPTED, FAULTS
from llmcomp.testing.hostile import KEY, leaks, run_fault
from llmcomp.text import tokenize

SMALL = [tokenize(t) for t in ["The cat sat.", "A dog ran.", "Birds sing."]]  # "dog" only in #1
TWELVE = [[f"w{i}", "sat", "."] for i in range(12)]
#: Deadlines and retries short enough for tests: a hung request costs 0.5 s (0.3 s drew timeouts from a busy
#: machine), a retry waits 10-20 ms.
FAST = {"timeout": 0.5, "max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.02, "max_corrective_retries": 1}


pytestmark = pytest.mark.usefixtures("no_openai_env")  # tests/conftest.py


@pytest.fixture
def make(fake_openai):
    sources: list[OpenAISource] = []

    def _make(**kw) -> OpenAISource:
        opts = {"base_url": fake_openai.url, "model": "fake-model", "api_key": KEY, **FAST, **kw}
        sources.append(OpenAISource(**opts))
        return sources[-1]

    yield _make
    for s in sources:
        s.close()


# --- item 3: deadlines, no serialisation, a circuit breaker ------------------------------------------------
def test_a_body_dripped_one_byte_at_a_time_ends_at_the_wall_clock_deadline(make, fake_openai):
    """Each read gets a byte within 0.05 s, so a per-read timeout never fires; the deadline (0.5 s) must."""
    src = make(max_retries=0)
    assert not src.score_many(SMALL[:1]).failures  # the SDK is imported and the format known: only the drip is timed
    fake_openai.add_fault("drip", times=None, interval=0.05)
    t = time.perf_counter()
    result = src.score_many([["a", "dog"]])
    wall = time.perf_counter() - t
    assert 0 in result.failures and "timed out" in result.failures[0], result.failures
    assert wall < 2.0  # the dripped body (~400 bytes) would take ~20 s; one 0.5 s deadline, with margin


def test_a_server_answering_500_is_not_asked_one_request_at_a_time_and_the_run_stops(make, fake_openai):
    """Before: the format probe held a lock through every retry, so 12 sentences went one by one and all failed."""
    fake_openai.latency = 0.1
    fake_openai.add_fault("server_error", times=None)
    src = make(max_retries=3)
    t = time.perf_counter()
    with pytest.raises(ScoringAborted) as e:
        src.score_many(TWELVE)
    wall = time.perf_counter() - t
    assert fake_openai.max_inflight > 1  # requests went in parallel once the first one failed
    msg = str(e.value)
    assert "in a row" in msg and "server error (500)" in msg and "\n" not in msg
    assert "0 sentence(s) scored" in msg  # what was kept
    assert fake_openai.requests <= 8 + 8  # stopped after the run of failures, not 12 x 4 attempts
    assert wall < 3.0  # about 0.1 s (first request) + 0.1 s (the parallel wave); serial took ~5 s


def test_a_never_answering_server_ends_the_run_with_one_line_saying_what_was_kept(make, fake_openai, tmp_path):
    from llmcomp.attention import AttentionCache

    cache = AttentionCache(tmp_path / "c.sqlite")
    src = make(max_concurrency=4, cache=cache)
    assert not src.score_many(SMALL[:2]).failures  # kept in the cache
    fake_openai.add_fault("hang", times=None)
    t = time.perf_counter()
    with pytest.raises(ScoringAborted) as e:
        src.score_many(SMALL + TWELVE)
    wall = time.perf_counter() - t
    msg = str(e.value)
    assert "in a row" in msg and "timed out" in msg and "\n" not in msg, msg
    assert "2 found in the cache" in msg and "0 sentence(s) scored" in msg, msg
    assert wall < 3.5  # 8 failures at 4 in flight: two 0.5 s waves (serial retries took 12 x 1 s)
    cache.close()


def test_failures_in_between_successes_do_not_trip_the_breaker(make, fake_openai):
    """4 failing sentences, one at a time, each failing 4 times between answered ones: 16 failures, never 8 in
    a row, so the run goes on (a breaker that never reset would stop it)."""
    fake_openai.add_fault("server_error", times=None, match="dog")
    corpus = [["a", "dog" if i % 2 else "cat", str(i)] for i in range(8)]
    src = make(max_retries=3, max_concurrency=1)
    result = src.score_many(corpus)
    assert set(result.failures) == {1, 3, 5, 7}
    assert all("server error (500)" in r for r in result.failures.values())


# --- cancel() -----------------------------------------------------------------------------------------------
def test_cancel_from_another_thread_ends_score_many_within_2_s_keeping_what_was_scored(make, fake_openai, tmp_path):
    from llmcomp.attention import AttentionCache

    cache = AttentionCache(tmp_path / "c.sqlite")
    fake_openai.add_fault("hang", times=None, match="dog")
    src = make(timeout=60.0, max_concurrency=1, cache=cache)  # no deadline comes to the rescue
    outcome: list[BaseException | object] = []

    def work() -> None:
        try:
            outcome.append(src.score_many(SMALL))
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.monotonic() + 5
    while not fake_openai.faults_served["hang"] and time.monotonic() < deadline:  # sentence 1 ("dog") hangs
        time.sleep(0.01)
    time.sleep(0.1)
    t = time.perf_counter()
    src.cancel()
    worker.join(timeout=5)
    assert not worker.is_alive() and time.perf_counter() - t < 2.0
    assert isinstance(outcome[0], ScoringAborted) and str(outcome[0]).startswith("cancelled"), outcome
    assert "1 sentence(s) scored" in str(outcome[0])
    assert src.cache_key(SMALL[0]) in cache  # sentence 0 was answered before the hang: kept
    with pytest.raises(ScoringAborted, match="cancelled"):  # a cancelled source stays cancelled
        src.score_many(SMALL[2:])
    cache.close()


def test_cancel_is_a_no_op_for_sources_that_do_not_wait():
    src = UniformSource()
    assert src.cancel() is None
    assert src.score_many(SMALL).stats.scored == 3


# --- item 4: malformed answers with status 200 ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["deep_json", "deep_content", "content_number", "message_string"])
def test_malformed_answers_fail_their_sentence_with_a_reason(make, fake_openai, kind):
    fake_openai.add_fault(kind, times=None, match="dog")
    result = make().score_many(SMALL)
    assert set(result.failures) == {1}, result.failures
    assert result.failures[1].strip() and "\n" not in result.failures[1]


@pytest.mark.parametrize("kind", ACCEPTED)
def test_text_parts_and_nonsense_usage_are_read(make, fake_openai, kind):
    clean = make(cache=None).score_many(SMALL)
    fake_openai.add_fault(kind, times=None)
    src = make(cache=None)
    result = src.score_many(SMALL)
    assert not result.failures, result.failures
    for a, b in zip(clean.matrices, result.matrices, strict=True):
        assert torch.equal(a, b)
    # usage the server cannot state is estimated from the text (a token budget still counts it)
    assert 0 < result.stats.prompt_tokens < 10**6


# --- item 5: answer size and linear extraction ----------------------------------------------------------------
@pytest.mark.parametrize("unit", ["{", "[", '{"', '{"a": ', "[1, "])
def test_json_extraction_is_linear_in_the_answer(unit):
    """64k characters of an unclosed pattern: the quadratic scan took ~0.3 s at 2k braces and 11.5 s at 16k."""
    text = unit * (65_536 // len(unit))
    t = time.perf_counter()
    with pytest.raises(answers.AnswerError):
        answers.extract_json(text)
    assert time.perf_counter() - t < 1.5  # generous: linear takes ~0.05 s here


def test_deep_balanced_json_and_stray_braces_are_handled_fast():
    deep = "[" * 65_536 + "]" * 65_536
    t = time.perf_counter()
    with pytest.raises(answers.AnswerError):  # no crash (RecursionError); at most an inner value, not an answer
        answers.parse_sentence_answer(answers.extract_json(deep), 2, ["meaning"], 9)
    found = answers.extract_json("{" * 20_000 + ' here: {"meaning": [[9], [3, 9]]}')
    assert found == {"meaning": [[9], [3, 9]]}  # a valid answer after stray braces is still found
    assert time.perf_counter() - t < 1.5


def test_an_answer_over_the_size_cap_is_refused_with_a_reason():
    text = '{"meaning": [[9]]}' + " " * answers.MAX_ANSWER_CHARS
    with pytest.raises(answers.AnswerError, match="too long"):
        answers.extract_json(text)


# --- item 13: the key, echoed by a server, never reaches a message -------------------------------------------------
def test_a_key_echoed_in_an_answer_is_redacted_from_reasons_and_logs(make, fake_openai, caplog):
    caplog.set_level("DEBUG", logger="llmcomp")
    fake_openai.add_fault("echo_key", times=None)
    result = make().score_many(SMALL[:1])
    assert f"Bearer {KEY}" in fake_openai.auth_headers  # the key was sent, so the server could echo it
    reason = result.failures[0]
    assert "[key]" in reason  # the quoted score is there, the key is not
    assert not leaks(reason) and not leaks(caplog.text), reason


def test_terminal_controls_in_a_server_message_are_escaped_in_the_reason(make, fake_openai):
    fake_openai.add_fault("ansi", times=None)
    reason = make().score_many(SMALL[:1]).failures[0]
    assert "\\x1b[2J" in reason and "\\x07" in reason, reason  # shown, harmless
    assert not any(c in reason for c in "\x1b\x07\x08"), reason


# --- item 16: size cap, HTML pages, credentials in the base URL ----------------------------------------------------
@pytest.mark.parametrize("kind", ["huge", "huge_chunked"])  # refused by its content-length / by the bytes read
def test_a_body_over_1_mb_fails_with_a_reason(make, fake_openai, kind):
    fake_openai.add_fault(kind, times=None, match="dog")
    result = make().score_many(SMALL)
    assert set(result.failures) == {1} and "1 MB" in result.failures[1], result.failures


def test_a_compressed_body_is_refused_unread(make, fake_openai):
    """We ask for no compression (Accept-Encoding: identity): a gzip body within the 1 MB cap could inflate to
    a gigabyte, so one that comes anyway fails its request with a reason."""
    fake_openai.add_fault("gzip", times=None)
    result = make().score_many(SMALL[:1])
    assert "gzip-compressed" in result.failures[0], result.failures


def test_an_html_page_says_to_check_the_base_url(make, fake_openai):
    fake_openai.add_fault("html", times=None)
    result = make().score_many(SMALL[:1])
    assert "HTML page" in result.failures[0] and "base URL" in result.failures[0], result.failures


def test_a_base_url_with_credentials_is_refused_in_one_line(fake_openai):
    url = fake_openai.url.replace("http://", "http://someone:hunter2@")
    with pytest.raises(OpenAIConfigError) as e:
        OpenAISource(base_url=url, model="fake-model", api_key=KEY).score_many(SMALL[:1])
    msg = str(e.value)
    assert "user:password@" in msg and "hunter2" not in msg and "\n" not in msg
    assert not fake_openai.auth_headers  # nothing was sent, Basic auth least of all


# --- the hostile-server suite ---------------------------------------------------------------------------------
def test_every_fault_kind_ends_in_scores_or_reasons_and_nothing_crashes():
    """Each kind on every request of a fresh server, 3 sentences: 0 crashes, a reason for every failure.
    Four kinds at a time (each has its own server and source), so that the deadlines overlap."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda kind: run_fault(kind, SMALL, {"delay": 1.0}, cache=None, **FAST), FAULTS))
    crashed = {o.kind: o.crashed for o in outcomes if o.crashed}
    assert not crashed
    for o in outcomes:
        assert o.scored + o.failed == o.sentences or o.aborted, o
        if o.kind in ACCEPTED:
            assert o.scored == o.sentences, o
    assert max(o.seconds for o in outcomes) < 10  # every kind ends within a few deadlines (the slowest ~2 s)
