"""The one source factory (llmcomp.app.sources) and the key policy it applies (llmcomp.app.keys).

Real sources throughout: baselines, the local source (built, never loaded: building it reads no
model) and the OpenAI-compatible source against the fake server over HTTP.
"""

from __future__ import annotations

import json

import pytest

from llmcomp.app.budget import BudgetError, OwnerKeyBudget
from llmcomp.app.keys import KeyPolicy, KeyPolicyError
from llmcomp.app.sources import SourceFormError, SourceSettings, build_source
from llmcomp.attention import AttentionCache, AttentionError, make_source
from llmcomp.attention.openai_config import NO_KEY
from llmcomp.settings import BudgetCaps

OWNER_KEY = "sk-owner-planted-4242"
SENTENCES = [["the", "cat", "sat", "."], ["a", "dog", "ran", "."], ["my", "mother", "saw", "it", "."]]


@pytest.fixture
def owner_env(monkeypatch, fake_openai):
    """The server owner's key and endpoint (the fake server) in the environment; visitors may name
    other loopback servers (the owner allows private addresses: these tests use 127.0.0.1:9)."""
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("LLMCOMP_OPENAI_MODEL", "fake-model")
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    return fake_openai


def test_one_factory_for_cli_flags_checkpoint_specs_and_the_web_form():
    # command-line flags: None means "not given"
    cli = build_source({"kind": "gaussian", "n_heads": None, "layers": None, "sigma": 1.5})
    assert cli.spec() == make_source("gaussian", sigma=1.5).spec()
    # a checkpoint's spec, as stored (JSON), rebuilds the same source
    spec = json.loads(json.dumps(make_source("random", n_heads=3, seed=7).spec()))
    assert build_source(spec).fingerprint() == make_source(**spec).fingerprint()
    # the web form: learned heads are the learned source's own option, local layers are the local source's
    assert build_source(SourceSettings(kind="learned", n_heads=3).description()).spec()["learned_heads"] == 3
    local = build_source(SourceSettings(kind="local", n_heads=2, layers=" first-2 ").description())
    assert local.spec()["layers"] == "first-2" and local.n_heads == 2


def test_options_a_kind_does_not_take_are_refused_by_name():
    with pytest.raises(AttentionError, match=r"option\(s\) mode do not apply to the 'uniform' attention source"):
        build_source({"kind": "uniform", "mode": "prefix"})
    with pytest.raises(AttentionError, match="unknown attention source 'magic'"):
        build_source({"kind": "magic"})
    with pytest.raises(AttentionError, match="needs a kind"):
        build_source({"n_heads": 2})
    # the local source takes its config's fields as options (layers, sink, ...), not only its named parameters
    assert build_source({"kind": "local", "layers": "last-2", "sink": "pool"}).spec()["sink"] == "pool"


def test_the_cache_goes_only_to_slow_or_paid_kinds(tmp_path):
    path = tmp_path / "c.sqlite"
    assert build_source({"kind": "uniform"}, cache=path).cache is None
    local = build_source({"kind": "local"}, cache=path)
    assert isinstance(local.cache, AttentionCache) and local.cache.path == path
    local.cache.close()
    shared = AttentionCache(tmp_path / "shared.sqlite")
    assert build_source({"kind": "local"}, cache=shared).cache is shared  # an open cache is used as it is
    shared.close()


def test_a_spec_that_says_send_no_temperature_keeps_saying_it(fake_openai):
    spec = make_source("openai", base_url=fake_openai.url, api_key="k", temperature=None).spec()
    assert spec["temperature"] is None
    rebuilt = build_source(json.loads(json.dumps(spec)))
    try:
        assert rebuilt.config.temperature is None and rebuilt.fingerprint() == make_source(**spec).fingerprint()
    finally:
        rebuilt.close()


def test_the_owner_key_goes_only_to_the_owner_endpoint(owner_env, monkeypatch):
    foreign = build_source({"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}, keys=KeyPolicy())
    own = build_source({"kind": "openai"}, keys=(policy := KeyPolicy(budget=OwnerKeyBudget())))
    typed = build_source({"kind": "openai", "api_key": "ignored"}, keys=KeyPolicy(typed_key=" sk-visitor "))
    try:
        assert foreign.config.api_key.get() == NO_KEY  # never the owner's key for someone else's server
        assert own.config.api_key.get() == OWNER_KEY and own.config.base_url == owner_env.url
        assert policy.uses_owner_key(own) and not policy.uses_owner_key(foreign)
        assert typed.config.api_key.get() == "sk-visitor"  # the policy decides, not the description
    finally:
        for s in (foreign, own, typed):
            s.close()
    monkeypatch.delenv("OPENAI_BASE_URL")  # the owner's endpoint is now api.openai.com ...
    monkeypatch.delenv("OPENAI_API_KEY")  # ... and there is no owner key for it
    with pytest.raises(KeyPolicyError, match="enter your OpenAI API key"):
        build_source({"kind": "openai"}, keys=KeyPolicy())
    with pytest.raises(SourceFormError, match="base URL must look like"):
        build_source({"kind": "openai", "base_url": "localhost:8000"}, keys=KeyPolicy())
    with pytest.raises(SourceFormError, match="at least one relation"):
        SourceSettings(kind="openai", relations=()).description()


def test_the_owner_key_spends_only_what_was_reserved_and_charges_each_request_once(owner_env):
    budget = OwnerKeyBudget(BudgetCaps(session_requests=5, daily_requests=100))
    keys = KeyPolicy(budget=budget)
    src = build_source({"kind": "openai", "max_requests": 50}, keys=keys)
    try:
        assert src.config.max_requests == 0  # nothing may be sent on the owner's key before a reservation
        keys.reserve(src, requests=2, tokens=0)
        assert src.config.max_requests == 5  # the estimate plus headroom, within the 5 left (and the 50 asked)
        assert budget.remaining(keys.usage) == (0, None)  # held: nobody else can count on those 5
        assert not src.score_many(SENTENCES[:2]).failures
        assert keys.charge(src) == (2, src.usage.prompt_tokens + src.usage.completion_tokens)
        assert keys.charge(src) == (0, 0)  # charging again counts nothing twice
        assert budget.today().requests == keys.usage.requests == 2
        assert budget.remaining(keys.usage) == (3, None)  # the 3 reserved but not spent went back
        assert src.config.max_requests == 2  # and the source may send nothing more without a new reservation
        unreserved = src.score_many(SENTENCES[2:])
        assert owner_env.requests == 2 and "budget exhausted" in unreserved.failures[0]
        keys.reserve(src, requests=1, tokens=0)
        assert not src.score_many(SENTENCES[2:]).failures
        assert keys.charge(src)[0] == 1 and budget.today().requests == 3
    finally:
        src.close()
    again = build_source({"kind": "openai"}, keys=keys)
    with pytest.raises(BudgetError, match="allows 2 more"):
        keys.check(again, requests=3, tokens=0)
    again.close()
    budget.charge(keys.usage, 2, 0)  # this person's session cap is spent
    with pytest.raises(BudgetError, match="reached its spending cap"):
        build_source({"kind": "openai"}, keys=keys)
    assert "typed_key=unset" in repr(KeyPolicy()) and "typed_key=set" in repr(KeyPolicy(typed_key="sk-x"))
    assert "sk-x" not in repr(KeyPolicy(typed_key="sk-x"))  # a typed key never shows in logs
