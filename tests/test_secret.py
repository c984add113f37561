"""The API key never shows: every everyday way to print, log, copy, serialise or pickle the objects that hold it.

``test_openai_source.py::test_key_never_leaks`` checks the texts of a real scoring run (server errors, logs,
cache files). This file checks each key holder on its own (the ``Secret``, the ``OpenAIConfig``, the
``OpenAISource`` and the SDK client it builds) through every string form Python offers, so a leak in one form
(say ``repr()`` while ``str()`` stays masked) cannot slip through. No request is needed except in the one
test of a failed request, which goes to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import pickle
import socket
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmcomp.attention.openai_config import OpenAIConfig, OpenAIConfigError, Secret
from llmcomp.attention.openai_source import _KNOWN_FORMATS, OpenAISource, ScoringAborted

# Planted and distinctive, but not shaped like a real OpenAI key (no "sk-" prefix), so no scanner flags the repo.
KEY = "planted-KEY-0123456789abcdef"
URL = "http://127.0.0.1:9/v1"  # never contacted: building the client sends nothing
FRAGMENT = 12  # no run of this many characters of the key may show (a truncated or partly masked key still leaks)
HOLDERS = ("secret", "config", "source", "client")


def fragments() -> set[str]:
    return {KEY[i : i + FRAGMENT] for i in range(len(KEY) - FRAGMENT + 1)}


def assert_hidden(text: str | bytes, what: str) -> None:
    """Neither the key nor any FRAGMENT-character run of it is in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # byte for byte: the key is ASCII, so a match here is a match in the bytes
    found = sorted(f for f in fragments() if f in text)
    assert not found, f"{what} reveals the key (fragments {found[:3]}): {text[:300]!r}"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real key, URL or .env leaks in from the developer's shell (a real key would make the checks vacuous)."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    _KNOWN_FORMATS.clear()


@pytest.fixture
def holders() -> Iterator[dict[str, Any]]:
    """Every object that holds the key, each checked to really hold it (so a pass means hidden, not absent)."""
    secret = Secret(KEY)
    config = OpenAIConfig(base_url=URL, model="m", api_key=KEY)
    source = OpenAISource(base_url=URL, model="m", api_key=KEY)
    client = source._chat.sdk()  # what the source sends requests with (its ChatClient builds it)
    assert isinstance(config.api_key, Secret) and isinstance(source.config.api_key, Secret)  # a str key is wrapped
    assert secret.get() == KEY and config.api_key.get() == KEY and source.config.api_key.get() == KEY
    assert client.api_key == KEY and source._chat._sdk is client
    try:
        yield {"secret": secret, "config": config, "source": source, "client": client}
    finally:
        source.close()


def string_forms(x: Any) -> dict[str, str]:
    """Every way a value becomes text in a message, an f-string, a log line or a container's repr."""
    return {
        "repr": repr(x),
        "str": str(x),
        "ascii": ascii(x),
        "format": format(x),
        "format ''": format(x, ""),
        "f-string": f"{x}",
        "f-string !r": f"{x!r}",
        "f-string !s": f"{x!s}",
        "f-string !a": f"{x!a}",
        "f-string =": f"{x=}",
        "str.format": "{}".format(x),  # noqa: UP032 (the form under test)
        "str.format !r": "{!r}".format(x),  # noqa: UP032 (the form under test)
        "%s": "%s" % (x,),  # noqa: UP031 (the form under test)
        "%r": "%r" % (x,),  # noqa: UP031 (the form under test)
        "%a": "%a" % (x,),  # noqa: UP031 (the form under test)
        "%(name)s": "%(x)s" % {"x": x},  # noqa: UP031 (the form under test)
        "list repr": repr([x]),
        "dict repr": repr({"held": x}),
        "tuple str": str((x,)),
        "exception": str(ValueError(x)) + repr(ValueError(x)),
        "json default=str": json.dumps({"held": x}, default=str),
        "json default=repr": json.dumps({"held": x}, default=repr),
    }


@pytest.mark.parametrize("name", HOLDERS)
def test_every_string_form_hides_the_key(holders, name):
    for form, text in string_forms(holders[name]).items():
        assert_hidden(text, f"{form} of the {name}")


@pytest.mark.parametrize("name", HOLDERS)
def test_logging_the_holder_hides_the_key(holders, name, caplog):
    """Log records carry the object itself (args, msg, extra, exception); every handler formats it later."""
    x = holders[name]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    # %(args)s and %(held)s format the raw record fields: the repr of the args tuple and the extra object.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s | args=%(args)s | held=%(held)s"))
    logger = logging.getLogger("llmcomp.test_secret")
    logger.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        extra = {"held": x}
        logger.debug("held %s and %r", x, x, extra=extra)
        logger.info(x, extra=extra)  # the object as the message itself
        logger.warning("held %(held)s", {"held": x}, extra=extra)  # dict-style args
        try:
            raise RuntimeError(x)
        except RuntimeError:
            logger.exception("request failed with %s", x, extra=extra)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("DEBUG") == text.count("INFO") == text.count("WARNING") == 1  # every record was written
    assert "RuntimeError" in text and "Traceback" in text  # the exception was formatted too
    assert_hidden(text, f"a Formatter's output for the {name}")
    assert len(caplog.records) == 4
    assert_hidden(caplog.text, f"caplog's text for the {name}")
    for record in caplog.records:
        assert_hidden(record.getMessage(), f"a log message about the {name}")
        assert_hidden(repr(record.args), f"a log record's args holding the {name}")


def test_dict_forms_and_identity_hide_the_key(holders):
    """vars()/__dict__, dataclasses.asdict/astuple, spec(), fingerprint(), describe() and their JSON."""
    config, source = holders["config"], holders["source"]
    with pytest.raises(TypeError):
        vars(holders["secret"])  # __slots__: no __dict__ that could be dumped
    assert isinstance(config.api_key, Secret)  # a str key is wrapped at once, so vars() sees only the Secret
    texts = {
        "vars(config)": repr(vars(config)),
        "config.__dict__": str(config.__dict__),
        "json of vars(config)": json.dumps(vars(config), default=str),
        "vars(source)": repr(vars(source)),  # the client is built, so _chat holds it
        "json of vars(source)": json.dumps(vars(source), default=repr),
        "spec": str(source.spec()),
        "json spec": json.dumps(source.spec()),
        "fingerprint": str(source.fingerprint()),
        "json fingerprint": json.dumps(source.fingerprint()),
        "describe": source.describe(),
        "cache key": source.cache_key(["a", "cat"]),
    }
    for to_dict in (dataclasses.asdict, dataclasses.astuple):
        with contextlib.suppress(TypeError):  # deep-copying the Secret is refused: nothing to show
            texts[to_dict.__name__] = repr(to_dict(config))
    for what, text in texts.items():
        assert_hidden(text, what)


def test_identity_does_not_depend_on_the_key():
    """Not even a hash of the key reaches the spec, fingerprint or cache keys (which land in the cache file)."""
    sources = [OpenAISource(base_url=URL, model="m", api_key=k) for k in (KEY, KEY[::-1], None)]
    try:
        first = sources[0]
        for other in sources[1:]:
            assert other.spec() == first.spec() and other.fingerprint() == first.fingerprint()
            assert other.cache_key(["a", "cat"]) == first.cache_key(["a", "cat"])
            assert other._row_key(["a"]) == first._row_key(["a"])
            assert other._pair_key("a", "cat") == first._pair_key("a", "cat")
            assert other.describe() == first.describe() and repr(other) == repr(first)
    finally:
        for s in sources:
            s.close()


@pytest.mark.parametrize("name", HOLDERS)
def test_copies_hide_the_key_or_are_refused(holders, name):
    x = holders[name]
    copiers: list[Callable[[Any], Any]] = [copy.copy]
    if name != "client":  # deep-copying the SDK client half-builds an httpx wrapper whose __del__ then complains
        copiers.append(copy.deepcopy)
    for copier in copiers:
        try:
            y = copier(x)
        except TypeError as e:  # refused (the Secret, or a lock inside the source or the client)
            assert_hidden(f"{e!s} {e!r}", f"the error refusing to {copier.__name__} the {name}")
            continue
        for form, text in string_forms(y).items():
            assert_hidden(text, f"{form} of a {copier.__name__} of the {name}")


@pytest.mark.parametrize("name", HOLDERS)
def test_pickle_refuses_or_leaves_the_key_out(holders, name):
    """A pickle is bytes that end up in files; pickle.dump must not even write part of the key before refusing."""
    x = holders[name]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        try:
            data = pickle.dumps(x, protocol=protocol)
        except (TypeError, pickle.PicklingError, AttributeError) as e:
            data = b""
            assert_hidden(f"{e!s} {e!r}", f"the error refusing to pickle the {name}")
        assert_hidden(data, f"pickle protocol {protocol} of the {name}")
        buffer = io.BytesIO()
        with contextlib.suppress(TypeError, pickle.PicklingError, AttributeError):
            pickle.dump(x, buffer, protocol=protocol)
        assert_hidden(buffer.getvalue(), f"what pickle.dump wrote for the {name} (protocol {protocol})")


@pytest.mark.parametrize("name", ["secret", "config"])
def test_the_secret_refuses_pickling_with_a_clear_error(holders, name):
    """Refused on purpose, not by accident (the source and the client refuse only because they hold a lock)."""
    with pytest.raises(TypeError, match="a Secret cannot be pickled"):
        pickle.dumps(holders[name])


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_a_failed_request_and_a_bad_config_do_not_show_the_key(caplog):
    """The connection-error path (test_openai_source covers the 401/403/429 texts); bad URLs are reported safely."""
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's own loggers too
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    src = OpenAISource(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=KEY, max_retries=0, timeout=2.0)
    try:
        with pytest.raises(ScoringAborted, match="cannot reach") as info:
            src.score_many([["a", "cat"]])
        assert src._chat._sdk.api_key == KEY  # the request was built with the key
    finally:
        src.close()
    texts = ["".join(traceback.format_exception(info.value)), caplog.text]
    texts += [f"{e!s} {e!r} {e.args!r}" for e in _chain(info.value)]
    for text in texts:
        assert_hidden(text, "the error of a failed request")

    with pytest.raises(OpenAIConfigError) as bad:
        OpenAIConfig(base_url=f"ftp://user:{KEY}@example.com/v1?key={KEY}#{KEY}", api_key=KEY)
    assert_hidden("".join(traceback.format_exception(bad.value)), "a bad base URL's error")


def test_the_secret_shows_one_fixed_mask_whatever_it_holds():
    """What a person sees in a config's repr or a log line: the type's name and the mask, the same for any key
    (so not even the key's length shows), and the key itself only through ``get()``."""
    masked = "Secret('********')"
    for value in (KEY, "", "x", KEY * 10):
        secret = Secret(value)
        assert repr(secret) == str(secret) == format(secret) == f"{secret}" == masked
        assert secret.get() == value
    assert f"key={Secret(KEY)!r}" == f"key={masked}"


def test_the_secret_is_truthy_exactly_when_it_holds_a_key():
    """``if config.api_key:`` asks whether a key was given, without reading it."""
    assert Secret(KEY) and Secret("x")
    assert not Secret("")


def test_copies_of_the_secret_are_the_secret_itself():
    """Nothing of the key is copied into another object (dataclasses.asdict deep-copies its fields)."""
    secret = Secret(KEY)
    assert copy.copy(secret) is secret and copy.deepcopy(secret) is secret
    assert copy.deepcopy({"key": secret})["key"] is secret


def test_pickling_the_secret_is_refused_with_one_plain_line():
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError) as refused:
            pickle.dumps(Secret(KEY), protocol=protocol)
        assert str(refused.value) == "a Secret cannot be pickled"
