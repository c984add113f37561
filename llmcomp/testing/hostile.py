"""Every fault kind of the fake server against the OpenAI source: what a hostile server gets out of it.

``run_fault`` scripts one kind for every request of a fresh fake server and sorts what the source made of it:
sentences scored, sentences failed with a reason, the run stopped with one line (``ScoringAborted``), or a crash
(any other exception, a failure without a reason, an invalid matrix, a message of more than one line or with a
control character in it, or a message that quotes 8 or more characters of the key in a row). ``tests/test_hostile_server.py`` runs it fast (a
few sentences, short deadlines); ``bench/hostile.py`` prints the table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmcomp.testing.fake_server import FakeOpenAIServer
from llmcomp.testing.faults import FAULTS

#: The key sent to hostile servers: distinctive, so that any fragment of it is easy to find, and not shaped like
#: ``sk-...``, so that only the redaction of the key itself (not of key-like text) can hide it.
KEY = "planted-HOSTILE-5e1d9a7c3b8f4e2a6d0c9b7a"


@dataclass
class Outcome:
    """What one fault kind did to a scoring run."""

    kind: str
    sentences: int
    scored: int = 0
    failed: int = 0  # failed with a reason
    aborted: str = ""  # the one line of a stopped run
    crashed: str = ""  # what went wrong, when something did
    seconds: float = 0.0
    reason: str = ""  # the first failure reason (or the abort line)


def leaks(text: str, key: str = KEY, run: int = 8) -> bool:
    """True when ``text`` holds ``run`` or more characters of ``key`` in a row."""
    return any(key[i : i + run] in text for i in range(len(key) - run + 1))


def _check_line(text: str, what: str) -> str:
    if not text.strip():
        return f"{what} is empty"
    if "\n" in text:
        return f"{what} spans lines"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        return f"{what} holds a control character"
    if leaks(text):
        return f"{what} quotes the key"
    return ""


def run_fault(
    kind: str,
    sentences: Sequence[Sequence[str]],
    fault: dict[str, Any] | None = None,
    **source_options: Any,
) -> Outcome:
    """Score ``sentences`` against a server that applies ``kind`` to every request; never raises."""
    from llmcomp.attention.base import validate_attention
    from llmcomp.attention.openai_source import OpenAISource, ScoringAborted

    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r}")
    out = Outcome(kind, len(sentences))
    with FakeOpenAIServer() as server:
        server.add_fault(kind, times=None, **(fault or {}))
        options = {"base_url": server.url, "model": "fake-model", "api_key": KEY, **source_options}
        src = OpenAISource(**options)
        t = time.perf_counter()
        try:
            result = src.score_many(sentences)
        except ScoringAborted as e:
            out.aborted = out.reason = str(e)
            out.crashed = _check_line(str(e), "the abort message")
        except Exception as e:  # noqa: BLE001 - a crash is what this counts
            out.crashed = f"{type(e).__name__}: {str(e)[:160]}"
        else:
            for i, words in enumerate(sentences):
                if i in result.failures:
                    problem = _check_line(result.failures[i], f"the reason of sentence {i}")
                    out.crashed = out.crashed or problem
                    out.failed += not problem
                    out.reason = out.reason or result.failures[i]
                    continue
                try:
                    validate_attention(result.matrices[i], len(words))
                    out.scored += 1
                except Exception as e:  # noqa: BLE001
                    out.crashed = out.crashed or f"sentence {i}: {e}"
        finally:
            out.seconds = time.perf_counter() - t
            src.close()
    return out
