"""Every user-facing option of every source works from every entry point (issue 12, item 5).

The test walks the catalogue: for each kind in ``registry.SOURCES`` and each of its options
(``registry.user_options``: what the constructor takes, less ``INTERNAL_OPTIONS``), it builds the
source from the real ``llmcomp score`` / ``llmcomp train`` argument parser (``make_cli_source``), from a
``compare --sources`` label (``split_sources`` + ``parse_source`` + the builder compare uses) and from
the web form (``attention_actions.read_settings`` -> ``SourceSettings.description`` -> ``build_source``
with a visitor's key policy), and checks that the built source carries the value. An option added to
a source without a CLI flag fails here. Building never loads the local LLM nor sends a request (the
OpenAI-compatible source points at the fake server, which must see nothing).
"""

from __future__ import annotations

import functools
import json
import tempfile
import typing
from pathlib import Path

import pytest

from llmcomp.app.keys import KeyPolicy
from llmcomp.app.sources import FORM_LIMITS, SERVER_ONLY_OPTIONS, SourceFormError, SourceSettings, build_source
from llmcomp.attention.base import AttentionError
from llmcomp.attention.local_model import default_gguf_path
from llmcomp.attention.registry import (
    INTERNAL_OPTIONS,
    RELATIONS,
    SOURCES,
    accepted_options,
    parse_option,
    user_options,
)
from llmcomp.cli import build_parser
from llmcomp.cli.common import HEADS_OPTIONS, KIND_FLAGS, SOURCE_FLAGS, make_cli_source
from llmcomp.errors import LLMCompError
from llmcomp.experiments.labels import CompareError, parse_source, split_sources
from llmcomp.ui.attention_actions import read_settings

CASES = [(kind, option) for kind in SOURCES for option in user_options(kind)]
OTHER_URL = "http://127.0.0.1:9/v1"  # a second endpoint for the base_url option; nothing is sent to it
#: values whose type says too little (any text is "text"); the rest are drawn from the type
SAMPLES: dict[str, tuple[str, typing.Any]] = {
    "layers": ("last-2", "last-2"),
    "heads": ("syntax,meaning", ("syntax", "meaning")),
    "model": ("other-model", "other-model"),
    "base_url": (OTHER_URL, OTHER_URL),
    "task": ("ioi", "ioi"),  # the oracle's task (issue 14): any causal task's name
    "top_k": ("5", 5),  # the OpenAI source's sparse answers: 3 is the default
    "device": ("cpu", "cpu"),  # the local source's device (issue 16): a device this machine has
    "cache_tag": ("server-b", "server-b"),  # issue 16: tells servers behind one URL apart
}
#: an option whose values differ by kind: the local source's heads are layer.head pairs (``+`` or ``,``)
KIND_SAMPLES: dict[tuple[str, str], tuple[str, typing.Any]] = {("local", "heads"): ("21.4+23.5", "21.4,23.5")}


@functools.cache
def attention_file() -> str:
    """A one-sentence file for the file source's ``path`` (plain format: words, one matrix per head)."""
    path = Path(tempfile.mkdtemp(prefix="llmcomp-options-")) / "attention.jsonl"
    path.write_text(json.dumps({"words": ["a", "b"], "heads": [[[1], [0.5, 0.5]]]}) + "\n", encoding="utf-8")
    return str(path)


def sample(kind: str, option: str) -> tuple[str, typing.Any]:
    """A valid value that is not the default, as text and as the source should hold it."""
    if option == "gguf_path":
        path = str(default_gguf_path())
        return path, path
    if (kind, option) == ("file", "path"):
        return attention_file(), attention_file()
    if (kind, option) in KIND_SAMPLES:
        return KIND_SAMPLES[kind, option]
    if option in SAMPLES:
        return SAMPLES[option]
    hint = user_options(kind)[option]
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    base = inner[0] if inner and typing.get_origin(hint) is not typing.Literal else hint  # Optional[X] -> X
    if typing.get_origin(base) is typing.Literal:
        last = str(typing.get_args(base)[-1])
        return last, last
    if base is bool:
        return "true", True
    return ("3", 3) if base is int else ("0.25", 0.25)


def carried(source, option: str) -> typing.Any:
    """The option's value as the built source holds it: its spec, else its config, else an attribute."""
    spec = source.spec()
    value = spec[option] if option in spec else getattr(getattr(source, "config", None), option, None)
    if value is None:
        value = getattr(source, option)
    return tuple(value) if isinstance(value, list | tuple) else value


def flag_for(kind: str, option: str) -> str:
    if (kind, option) in KIND_FLAGS:
        return KIND_FLAGS[kind, option][1]
    if option in HEADS_OPTIONS:
        return "--heads"
    if option not in SOURCE_FLAGS:
        pytest.fail(f"source option {option!r} has no command-line flag: add it to cli.common.SOURCE_FLAGS")
    return SOURCE_FLAGS[option][1]


@pytest.fixture
def no_requests(monkeypatch, fake_openai):
    """The OpenAI-compatible source's endpoint is the fake server (no key needed); afterwards it must
    have received nothing: building a source sends no request."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("LLMCOMP_OPENAI_MODEL", "fake-model")
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    yield fake_openai
    assert fake_openai.requests == 0, "building a source sent a request"


def test_the_walk_covers_every_kind_and_hides_only_the_named_internal_options():
    assert {kind for kind, _ in CASES} == set(SOURCES)
    for kind in SOURCES:
        hidden = accepted_options(kind) - set(user_options(kind))
        assert hidden <= INTERNAL_OPTIONS["*"] | INTERNAL_OPTIONS.get(kind, frozenset())
    assert {"floor", "score_max", "temperature"} <= set(user_options("openai"))
    assert {"layers", "sink", "n_heads"} <= set(user_options("local"))


@pytest.mark.parametrize("command", ["score", "train"])
@pytest.mark.parametrize(("kind", "option"), CASES)
def test_every_option_from_the_command_line(command, kind, option, no_requests):
    text, expected = sample(kind, option)
    args = build_parser().parse_args([command, "--attention", kind, flag_for(kind, option), text, "--no-cache"])
    source = make_cli_source(args)
    try:
        assert carried(source, option) == expected
    finally:
        source.close()


@pytest.mark.parametrize(("kind", "option"), CASES)
def test_every_option_from_a_compare_label(kind, option, no_requests):
    text, expected = sample(kind, option)
    *_, label = split_sources(f"uniform,{kind}:{option}={text}")  # commas and colons stay in the value
    parsed_kind, options = parse_source(label)
    source = build_source({"kind": parsed_kind, **options})  # as experiments.compare builds each label's source
    try:
        assert parsed_kind == kind and carried(source, option) == expected
    finally:
        source.close()


FORM_FIELD_ARGS = {"n_heads": "n_heads", "learned_heads": "n_heads", "layers": "layers", "base_url": "base_url"}
FORM_FIELD_ARGS |= {"model": "model", "mode": "mode", "heads": "relations", "floor": "floor", "score_max": "score_max"}
FORM_FIELD_ARGS |= {"answer": "answer", "top_k": "top_k", "device": "llm_device", "precision": "llm_precision"}


@pytest.mark.parametrize(("kind", "option"), CASES)
def test_every_option_from_the_web_form(kind, option, no_requests):
    text, expected = sample(kind, option)
    d = SourceSettings()
    form = {"kind": kind, "n_heads": 1, "layers": d.layers, "base_url": "", "model": "", "mode": d.mode}
    form |= {"relations": list(d.relations), "floor": d.floor, "score_max": d.score_max, "advanced": ""}
    if (kind, option) == ("openai", "n_heads"):  # this source's heads field: one checkbox per relation
        form["relations"] = list(RELATIONS[:expected])
    elif (kind, option) == ("local", "heads"):  # the local source's own field in the advanced options
        form["llm_heads"] = text
    elif option in FORM_FIELD_ARGS:  # the form's own field, as the browser sends it
        field = FORM_FIELD_ARGS[option]
        form[field] = list(expected) if field == "relations" else expected
    else:
        form["advanced"] = f"{option}={text}"
    settings = read_settings(**form)  # what the Attention tab's handlers call
    if option in SERVER_ONLY_OPTIONS:
        with pytest.raises(SourceFormError, match="command line"):
            settings.description()
        return
    keys = KeyPolicy(typed_key="sk-visitor", named_url=settings.base_url)  # a web visitor's policy
    source = build_source(settings.description(), keys=keys)
    try:
        assert carried(source, option) == expected
    finally:
        source.close()


def test_layers_with_commas_and_openai_scale_from_every_entry_point(no_requests):
    """The issue's examples: a layer list (commas) and floor/score_max (never reachable before)."""
    args = build_parser().parse_args(["train", "--attention", "openai", "--floor", "0.1", "--score-max", "5"])
    cli = make_cli_source(args)
    assert (cli.config.floor, cli.config.score_max) == (0.1, 5)
    labels = split_sources(f"local:layers=0,1,2:sink=pool,openai:floor=0.1:score_max=5:base_url={no_requests.url}")
    assert labels == ["local:layers=0,1,2:sink=pool", f"openai:floor=0.1:score_max=5:base_url={no_requests.url}"]
    assert parse_source(labels[0]) == ("local", {"layers": "0,1,2", "sink": "pool"})
    kind, options = parse_source(labels[1])
    label = build_source({"kind": kind, **options})
    form = build_source(SourceSettings(kind="openai", floor=0.1, score_max=5).description())
    for source in (cli, label, form):
        assert (source.config.floor, source.config.score_max) == (0.1, 5)
        source.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: parse_source("uniform:sigma=2"), "its options: n_heads"),
        (lambda: parse_source("oracle:shift=1.5"), "takes an integer"),
        (lambda: build_source({"kind": "oracle", **parse_source("oracle:task=repeat")[1]}), "reads the word it predicts"),
        (lambda: build_source({"kind": "oracle", **parse_source("oracle:task=nosuch")[1]}), "known: binding, induction"),
        (lambda: parse_source("local:sink=nowhere"), "one of drop, pool, self"),
        (lambda: parse_source("local:layers"), "write kind:option=value"),
        (lambda: parse_source("openai:api_key=sk-x"), "its options:"),
        (lambda: make_cli_source(build_parser().parse_args(["score", "--attention", "uniform", "--sigma", "2"])),
         "its flags: --heads"),
        (lambda: make_cli_source(build_parser().parse_args(["score", "--attention", "openai", "--floor", "lots"])),
         "--floor: cannot read"),
        (lambda: SourceSettings(kind="gaussian", advanced="colour=red").description(), "its options: n_heads, sigma"),
        (lambda: SourceSettings(kind="local", advanced="layers=0").description(), "'LLM layers' field"),
        (lambda: SourceSettings(kind="random", advanced="max_len=100000").description(), "web form allows"),
        (lambda: make_cli_source(build_parser().parse_args(["score", "--attention", "openai", "--llm-heads", "1.2"])),
         "--llm-heads does not apply"),
        (lambda: make_cli_source(build_parser().parse_args(["score", "--attention", "local", "--heads", "21.4"])),
         "name heads with --llm-heads"),
        (lambda: make_cli_source(build_parser().parse_args(["score", "--attention", "local", "--sigma", "2"])),
         "--llm-heads"),
        (lambda: SourceSettings(kind="local", advanced="heads=21.4").description(), "'LLM heads' field"),
        (lambda: SourceSettings(kind="local", llm_heads="all").description(), "for the command line"),
        (lambda: SourceSettings(kind="local", llm_heads="21.4,x").description(), "layer.head pairs"),
        (lambda: SourceSettings(kind="local", llm_heads=",".join(f"{i // 9}.{i % 9}" for i in range(65))).description(),
         "65 LLM heads is more than the web form allows"),
        (lambda: build_source({"kind": "local", **parse_source("local:heads=top:4:previous")[1]}), "resolved into"),
    ],
)  # fmt: skip
def test_a_bad_option_is_one_line_naming_what_would_work(make, message):
    with pytest.raises((LLMCompError, CompareError, AttentionError)) as caught:
        make()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_values_are_typed_as_the_source_declares_them():
    assert parse_option("openai", "temperature", "none") is None  # optional: none means "send none"
    assert parse_option("openai", "heads", "meaning, syntax") == ["meaning", "syntax"]
    assert parse_option("local", "layers", "3,7,11") == "3,7,11"  # text first: a layer selection
    assert parse_option("local", "torch_threads", "2") == 2
    args = build_parser().parse_args(["score", "--attention", "local", "--llm-threads", "none", "--no-cache"])
    assert make_cli_source(args).config.torch_threads is None  # none is a value here, not "not given"
    assert set(FORM_LIMITS) <= {o for kind in SOURCES for o in user_options(kind)}


@pytest.mark.slow
def test_the_app_endpoints_take_floor_score_max_and_advanced_options(tmp_path, fake_openai, monkeypatch):
    """Over HTTP, as a browser or gradio_client sends them: floor changes what the fake server's
    scores become; a bad advanced option comes back as one line naming the options."""
    from gradio_client import Client

    from llmcomp.app.jobs import JobManager
    from llmcomp.settings import Paths
    from llmcomp.ui.app import build_app, launch_options

    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # the owner lets visitors use the fake server on 127.0.0.1
    paths = Paths(home=tmp_path, cache=tmp_path / "cache.sqlite", runs=tmp_path / "runs")
    demo = build_app(paths=paths, jobs=JobManager())
    demo.queue(default_concurrency_limit=2)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(demo, host="127.0.0.1"))
    try:
        c = Client(demo.local_url, verbose=False)
        refused = c.predict(kind="uniform", advanced="sigma=2", max_sentences=2, api_name="/estimate_cost")
        assert "its options: n_heads" in refused
        src = dict(kind="openai", base_url=fake_openai.url, model="fake-model", api_key="sk-visitor", max_sentences=1)
        rows = {}
        for floor in (0.0, 100.0):
            progress, heat, *_ = c.predict(**src, floor=floor, score_max=9, api_name="/score_corpus")
            assert "done <b>1</b>" in progress and "failed <b>0</b>" in progress, progress
            z = json.loads(heat["plot"])["data"][0]["z"]
            rows[floor] = [v for v in z[-1] if v is not None]  # the last word's row
        flat = 1 / len(rows[100.0])
        assert all(abs(v - flat) < 0.02 for v in rows[100.0])  # a floor far above the scores: nearly uniform
        assert rows[0.0] != pytest.approx(rows[100.0], abs=0.02)
    finally:
        demo.close()
