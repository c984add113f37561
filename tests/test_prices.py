"""Money in the estimate (issue 16, item 4): the dated price table, its overrides (flags over the
environment), estimates in dollars from the app layer and ``llmcomp score``, and ``--max-dollars``
refusing a run on score, train and compare before anything is sent (the fake server counts requests)."""

from __future__ import annotations

import pytest

from llmcomp.app.scoring import Prices, estimate
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.attention.prices import BATCH_DISCOUNT, CHECKED, PRICES, cost
from llmcomp.cli import main
from llmcomp.settings import SettingsError


def test_the_table_prices_a_known_model_and_its_dated_snapshots():
    c = cost("gpt-4o-mini", 1_000_000, 1_000_000)
    assert c.dollars == pytest.approx(PRICES["gpt-4o-mini"].input + PRICES["gpt-4o-mini"].output)
    assert c.dollars == pytest.approx(0.75)
    assert str(c) == f"about $0.75 at gpt-4o-mini's price of {CHECKED}"
    assert cost("gpt-4o-mini-2024-07-18", 1_000_000, 0).dollars == pytest.approx(0.15)
    assert cost("gpt-4o-mini", 2_000_000, 0, batch=True).dollars == pytest.approx(0.3 * BATCH_DISCOUNT)
    assert all(p.input > 0 and p.output > p.input for p in PRICES.values())


def test_an_unknown_model_has_no_price_and_says_how_to_give_one():
    c = cost("llama-3.1-8b", 1000, 1000)
    assert c.dollars is None
    assert "no price for model 'llama-3.1-8b'" in str(c) and "--price-input/--price-output" in str(c)
    assert cost("llama-3.1-8b", 1000, 1000, price_input=1.0).dollars is None  # half a price is no price
    given = cost("llama-3.1-8b", 1_000_000, 500_000, price_input=1.0, price_output=2.0)
    assert given.dollars == pytest.approx(2.0) and "the price given ($1 input, $2 output" in str(given)


def test_overrides_replace_the_table_and_flags_win_over_the_environment(monkeypatch):
    assert cost("gpt-4o-mini", 1_000_000, 0, price_input=3.0).dollars == pytest.approx(3.0)
    monkeypatch.setenv("LLMCOMP_PRICE_INPUT", "0.5")
    monkeypatch.setenv("LLMCOMP_PRICE_OUTPUT", "4")
    assert Prices.from_env() == Prices(0.5, 4.0, None)
    assert Prices.from_env(input=1.0, max_dollars=2.0) == Prices(1.0, 4.0, 2.0)
    monkeypatch.setenv("LLMCOMP_PRICE_OUTPUT", "cheap")
    with pytest.raises(SettingsError, match="LLMCOMP_PRICE_OUTPUT"):
        Prices.from_env()


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    for name in ("OPENAI_API_KEY", "LLMCOMP_PRICE_INPUT", "LLMCOMP_PRICE_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "c.txt"
    path.write_text("".join(f"the cat {n} sat on the mat\n" for n in range(12)), encoding="utf-8")
    return path


def test_the_app_estimate_speaks_in_dollars_for_a_known_model(fake_openai, corpus):
    sentences = [line.split() for line in corpus.read_text().splitlines()]
    with OpenAISource(base_url=fake_openai.url, model="gpt-4o-mini") as src:
        tokens = src.estimate(sentences)
        est = estimate(src, sentences, prices=Prices())
    price = PRICES["gpt-4o-mini"]
    expected = (tokens.prompt_tokens * price.input + tokens.completion_tokens * price.output) / 1e6
    assert est.cost is not None and est.cost.dollars == pytest.approx(expected)
    assert f"at gpt-4o-mini's price of {CHECKED}" in est.detail and "$0.000" in est.detail
    assert fake_openai.requests == 0


def _score(fake_openai, corpus, *extra: str) -> list[str]:
    return ["score", "--corpus", str(corpus), "--attention", "openai", "--base-url", fake_openai.url, "--no-cache",
            *extra]  # fmt: skip


def test_dry_run_prints_dollars_and_an_unknown_model_says_so(fake_openai, corpus, capsys):
    assert main(_score(fake_openai, corpus, "--model", "gpt-4o-mini", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count(f"at gpt-4o-mini's price of {CHECKED}") == 3  # one line per mode
    assert main(_score(fake_openai, corpus, "--model", "mystery", "--dry-run")) == 0
    assert "no price for model 'mystery'; set --price-input/--price-output" in capsys.readouterr().out
    flags = ["--model", "mystery", "--dry-run", "--price-input", "1000", "--price-output", "1000"]
    assert main(_score(fake_openai, corpus, *flags)) == 0
    assert "the price given ($1000 input, $1000 output per 1M tokens)" in capsys.readouterr().out
    assert fake_openai.requests == 0


def test_max_dollars_refuses_a_score_before_anything_is_sent(fake_openai, corpus, capsys):
    assert main(_score(fake_openai, corpus, "--model", "gpt-4o-mini", "--max-dollars", "0.0001")) == 2
    err = capsys.readouterr().err
    assert "more than --max-dollars 0.0001; nothing was sent" in err and len(err.strip().splitlines()) == 1
    assert main(_score(fake_openai, corpus, "--model", "mystery", "--max-dollars", "5")) == 2
    assert "cannot be checked" in capsys.readouterr().err
    assert fake_openai.requests == 0
    assert main(_score(fake_openai, corpus, "--model", "gpt-4o-mini", "--max-dollars", "1")) == 0
    assert fake_openai.requests > 0  # within the limit, it runs


def test_max_dollars_refuses_train_and_compare_before_anything_is_sent(fake_openai, corpus, capsys, tmp_path):
    common = ["--corpus", str(corpus), "--no-cache", "--steps", "2", "--max-dollars", "0.0001"]
    train = ["train", "--attention", "openai", "--base-url", fake_openai.url, "--model", "gpt-4o", "--run-dir"]
    assert main([*train, str(tmp_path / "run"), *common]) == 2
    assert "more than --max-dollars" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    compare = ["compare", "--sources", f"uniform,openai:model=gpt-4o:base_url={fake_openai.url}", "--out"]
    assert main([*compare, str(tmp_path / "cmp"), *common]) == 2
    assert "this comparison would cost about $" in capsys.readouterr().err
    assert fake_openai.requests == 0


def test_max_dollars_refuses_the_suite_before_anything_is_sent(fake_openai, corpus, capsys, tmp_path):
    """The suite sums every task's paid sources (each task corpus as it trains on it) and refuses, one line."""
    openai = f"openai:model=gpt-4o:base_url={fake_openai.url}"
    suite = ["compare", "--suite", "--tasks", "ioi,agreement", "--max-sentences", "20", "--seeds", "1", "--no-cache",
             "--steps", "2", "--max-steps", "2"]  # fmt: skip
    assert (
        main([*suite, "--sources", f"uniform,{openai}", "--out", str(tmp_path / "s"), "--max-dollars", "0.0001"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: this suite would cost about $"), err
    assert f"ioi/{openai}: about $" in err[0] and f"agreement/{openai}: about $" in err[0]
    assert "more than --max-dollars 0.0001; nothing was sent" in err[0]
    unpriced = openai.replace("gpt-4o", "mystery")
    assert main([*suite, "--sources", unpriced, "--out", str(tmp_path / "u"), "--max-dollars", "5"]) == 2
    assert "--max-dollars cannot be checked for ioi/openai:model=mystery" in capsys.readouterr().err
    assert fake_openai.requests == 0 and not (tmp_path / "s").exists() and not (tmp_path / "u").exists()
