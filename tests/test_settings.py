"""llmcomp.settings: the one reader of the environment and ``.env``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmcomp import settings
from llmcomp.settings import Paths, SettingsError

VARS = (
    "LLMCOMP_HOME", "LLMCOMP_CACHE", "LLMCOMP_RUNS", "LLMCOMP_HOST", "GRADIO_SERVER_NAME", "LLMCOMP_PORT",
    "GRADIO_SERVER_PORT", "LLMCOMP_AUTH", "LLMCOMP_MAX_UPLOAD", "LLMCOMP_PRELOAD", "LLMCOMP_SESSION_MAX_REQUESTS",
    "LLMCOMP_SESSION_MAX_TOKENS", "LLMCOMP_DAILY_MAX_REQUESTS", "LLMCOMP_DAILY_MAX_TOKENS", "OPENAI_API_KEY",
    "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean(tmp_path, monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_environment_wins_and_dotenv_fills_in_without_being_exported(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("LLMCOMP_HOME=/from/dotenv\nOPENAI_API_KEY=sk-dotenv\nLLMCOMP_RUNS=\n")
    assert Paths.from_env().home == Path("/from/dotenv")
    assert Paths.from_env().runs == Path("/from/dotenv/runs")  # empty in .env counts as unset
    assert settings.openai().api_key == "sk-dotenv"
    assert "OPENAI_API_KEY" not in os.environ and "LLMCOMP_HOME" not in os.environ  # read, never exported
    monkeypatch.setenv("LLMCOMP_HOME", "/from/env")
    monkeypatch.setenv("LLMCOMP_RUNS", "/elsewhere")
    assert Paths.from_env() == Paths(Path("/from/env"), Path("/from/env/attention-cache.sqlite"), Path("/elsewhere"))
    monkeypatch.setenv("LLMCOMP_HOME", "")  # empty in the environment: .env fills it in
    assert Paths.from_env().home == Path("/from/dotenv")


def test_a_changed_or_removed_dotenv_is_read_again(tmp_path):
    env = tmp_path / ".env"
    env.write_text("LLMCOMP_OPENAI_MODEL=first\n")
    assert settings.openai().model == "first"
    env.write_text("LLMCOMP_OPENAI_MODEL=second-model\n")  # another size: a changed file
    assert settings.openai().model == "second-model"
    env.unlink()
    assert settings.openai() == settings.OpenAIEnv(None, None, None)
    assert Paths.from_env().home == Path(".llmcomp")


def test_server_settings_and_their_errors(monkeypatch):
    s = settings.server()
    assert (s.host, s.port, s.auth, s.max_upload_bytes, s.preload) == ("127.0.0.1", None, None, 5_000_000, True)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7001")
    assert settings.server().port == 7001
    monkeypatch.setenv("LLMCOMP_PORT", "7999")
    monkeypatch.setenv("LLMCOMP_AUTH", "ann:pw1, bob:pw2")
    monkeypatch.setenv("LLMCOMP_MAX_UPLOAD", "2mb")
    monkeypatch.setenv("LLMCOMP_PRELOAD", "0")
    s = settings.server()
    assert (s.port, s.auth, s.max_upload_bytes, s.preload) == (7999, [("ann", "pw1"), ("bob", "pw2")], 2_000_000, False)
    for var, value, message in [
        ("LLMCOMP_AUTH", "no-colon", "user:password"),
        ("LLMCOMP_PORT", "http", "LLMCOMP_PORT='http' is not a whole number"),
        ("LLMCOMP_MAX_UPLOAD", "lots", "LLMCOMP_MAX_UPLOAD='lots' is not a size"),
    ]:
        monkeypatch.setenv(var, value)
        with pytest.raises(SettingsError, match=message):
            settings.server()
        monkeypatch.delenv(var)


def test_budget_caps(monkeypatch):
    assert settings.budget_caps() == settings.BudgetCaps()  # unset: no cap
    monkeypatch.setenv("LLMCOMP_DAILY_MAX_TOKENS", "1000")
    monkeypatch.setenv("LLMCOMP_SESSION_MAX_REQUESTS", "0")  # 0 is a cap (nothing allowed), not "unset"
    assert settings.budget_caps() == settings.BudgetCaps(session_requests=0, daily_tokens=1000)
    monkeypatch.setenv("LLMCOMP_DAILY_MAX_REQUESTS", "-1")
    with pytest.raises(SettingsError, match="LLMCOMP_DAILY_MAX_REQUESTS must be 0 or more"):
        settings.budget_caps()


def test_openai_env_hides_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    env = settings.openai()
    assert env.key_present and env.configured and "sk-secret" not in repr(env)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert settings.openai().configured and not settings.openai().key_present
