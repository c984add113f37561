"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def fake_openai():
    """A fake OpenAI-compatible server on 127.0.0.1 (free port), stopped after the test.

    Script it per test: ``fake_openai.latency = 0.05``, ``fake_openai.add_fault("rate_limit", times=2)``,
    ``fake_openai.json_schema = False``; read ``fake_openai.requests``, ``.by_format``, ``.seen_words``.
    """
    from llmcomp.testing.fake_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server
