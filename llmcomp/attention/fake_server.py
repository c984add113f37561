"""A fake OpenAI-compatible chat server on 127.0.0.1, for tests, the benchmark and offline demos.

It is a real HTTP server (stdlib ``http.server``, one thread per connection), so the official SDK
talks to it exactly as it talks to OpenAI, vLLM or Ollama. It reads the JSON word list that
``llmcomp.attention.prompts`` puts in the user message and answers with *valid*, deterministic
scores in the format the request asks for (json_schema, json_object, or prose around a fenced JSON
block when no format is given). Scores favour the word itself and the previous word; in the
``sentence`` task a word that appears again later also gains, so later words shape earlier rows
there, as they can with a real LLM.

Faults are scripted per request: ``server.add_fault("rate_limit", times=2)`` or
``add_fault("nan", match="cat")`` (only requests whose words include "cat"). The first rule that
matches a request and still has uses left is applied. Kinds are listed in ``FAULTS``.

Run it for a demo::

    python -m llmcomp.attention.fake_server --port 8000 --latency-ms 50
    # then: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=dummy llmcomp ...
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Every scriptable fault and what it does.
FAULTS: dict[str, str] = {
    "rate_limit": "429 rate_limit_exceeded with Retry-After",
    "server_error": "500 internal server error",
    "slow": "answers correctly after `delay` seconds (longer than the client timeout => timeout)",
    "malformed": "content that is not JSON",
    "wrong_shape": "valid JSON with a row or score missing",
    "nan": "a NaN score",
    "negative": "a negative score",
    "later": "weight on a later word (or an extra score)",
    "out_of_range": "a score above score_max",
    "truncated": 'content cut in half with finish_reason "length"',
    "insufficient_quota": "429 insufficient_quota (never succeeds on retry)",
    "unauthorized": "401 invalid_api_key, echoing the key it was sent as OpenAI does",
    "forbidden": "403 permission denied, also echoing the key",
    "bad_body": "HTTP 200 whose body is not JSON",
    "empty": "an empty message content",
    "obey": "a gullible model: replies with the text after 'reply with' in the words, not JSON",
}


@dataclass
class Fault:
    """One scripted fault: applied to the next ``times`` requests that match (None = forever)."""

    kind: str
    times: int | None = 1
    match: str | None = None  # a word that must be among the request's words
    task: str | None = None  # "sentence", "prefix" or "pair"
    retry_after: float = 0.05  # seconds, for rate_limit
    delay: float = 2.0  # seconds, for slow

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of: {', '.join(FAULTS)}")

    def matches(self, task: str, words: list[str]) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.task is not None and self.task != task:
            return False
        return self.match is None or self.match in words


# --- deterministic valid answers ---------------------------------------------------------------
def _hash(*parts: str) -> int:
    return zlib.crc32("\x1f".join(parts).encode())


def pair_score(query: str, key: str, head: int, score_max: int) -> int:
    """Context-free score: the same word scores highest, others a stable pseudo-random low score."""
    if query == key:
        return score_max
    return _hash(query, key, str(head)) % (score_max // 2 + 1)


def row_scores(words: list[str], i: int, head: int, score_max: int, later: list[str] | None = None) -> list[int]:
    """Scores of word i over words 0..i. ``later`` (sentence task only) are the words after i."""
    row = []
    for j in range(i + 1):
        s = pair_score(words[i], words[j], head, score_max)
        if j == i - 1:
            s = max(s, score_max - 3)
        if later and words[j] in later:
            s = min(score_max, s + 2)
        row.append(s)
    return row


def answer_for(data: dict[str, Any]) -> dict[str, Any]:
    """The valid answer to one llmcomp request (the JSON in its user message)."""
    task, words, heads = data["task"], data["words"], data["heads"]
    score_max = int(data.get("score_max", 9))
    out: dict[str, Any] = {}
    for h, name in enumerate(heads):
        if task == "sentence":
            out[name] = [row_scores(words, i, h, score_max, later=words[i + 1 :]) for i in range(len(words))]
        elif task == "prefix":
            out[name] = row_scores(words, len(words) - 1, h, score_max)
        elif task == "pair":
            out[name] = [pair_score(words[q], words[k], h, score_max) for q, k in data["pairs"]]
        else:
            raise ValueError(f"unknown task {task!r}")
    return out


def _corrupt(kind: str, task: str, answer: dict[str, Any], score_max: int) -> dict[str, Any]:
    """A copy of a valid answer with one scripted defect in the first head."""
    head = next(iter(answer))
    vals = json.loads(json.dumps(answer[head]))
    first = vals[-1] if task == "sentence" else vals  # the last row has the most scores
    if kind == "wrong_shape":
        vals = vals[:-1] if len(vals) > 1 else [[]] if task == "sentence" else []
    elif kind == "nan":
        first[0] = math.nan
    elif kind == "negative":
        first[0] = -3
    elif kind == "out_of_range":
        first[0] = score_max + 33
    elif kind == "later":
        if task == "sentence":
            n = len(vals)
            vals = [row + [5] * (n - len(row)) for row in vals]
            vals[0][-1] = 5  # row 0 scores the last word
            if n == 1:
                vals[0].append(5)
        else:
            first.append(5)
    return {**answer, head: vals}


class FakeOpenAIServer:
    """A threaded loopback server speaking enough of the chat completions API for the SDK."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        json_schema: bool = True,
        json_object: bool = True,
        api_key: str | None = None,
        model: str = "fake-model",
    ):
        self.latency = latency  # seconds added to every request
        self.json_schema = json_schema  # False: reject response_format json_schema with 400
        self.json_object = json_object  # False: reject response_format json_object with 400
        self.api_key = api_key  # when set, any other bearer token gets 401
        self.model = model
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.reset_counts()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to give the SDK (``.../v1``)."""
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, kind: str, times: int | None = 1, **kw: Any) -> Fault:
        fault = Fault(kind, times=times, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_path: Counter[str] = Counter()
            self.by_format: Counter[str] = Counter()  # json_schema / json_object / text
            self.by_task: Counter[str] = Counter()
            self.faults_served: Counter[str] = Counter()
            self.seen_words: list[list[str]] = []  # the words of every chat request, in arrival order
            self.auth_headers: list[str] = []
            self.inflight = 0
            self.max_inflight = 0  # the most requests the server was answering at once

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_path": dict(self.by_path),
                "by_format": dict(self.by_format),
                "by_task": dict(self.by_task),
                "faults_served": dict(self.faults_served),
                "max_inflight": self.max_inflight,
            }

    # --- one request ----------------------------------------------------------------------------
    def _take_fault(self, task: str, words: list[str]) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(task, words):
                    if f.times is not None:
                        f.times -= 1
                    self.faults_served[f.kind] += 1
                    return f
        return None

    def handle_chat(self, path: str, body: bytes, auth: str) -> tuple[int, dict[str, str], bytes]:
        """Status, extra headers and body for one POST to the chat completions path."""
        with self._lock:
            self.requests += 1
            self.by_path[path] += 1
            self.auth_headers.append(auth)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return self._answer(body, auth)
        finally:
            with self._lock:
                self.inflight -= 1

    def _answer(self, body: bytes, auth: str) -> tuple[int, dict[str, str], bytes]:
        if self.latency:
            time.sleep(self.latency)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return self._error(401, "invalid_api_key", f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.")
        try:
            req = json.loads(body)
            messages = req["messages"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "invalid_request", "request body is not a chat completions request")
        fmt = (req.get("response_format") or {}).get("type", "text")
        with self._lock:
            self.by_format[fmt] += 1
        if fmt == "json_schema" and not self.json_schema:
            return self._error(
                400, None, "response_format 'json_schema' is not supported by this server", "response_format"
            )
        if fmt == "json_object" and not self.json_object:
            return self._error(
                400, None, "response_format 'json_object' is not supported by this server", "response_format"
            )
        try:
            data = json.loads(next(m["content"] for m in messages if m.get("role") == "user"))
            task, words = data["task"], [str(w) for w in data["words"]]
            answer = answer_for(data)
        except (StopIteration, ValueError, KeyError, TypeError, IndexError):
            return self._error(400, "invalid_request", "the first user message is not llmcomp JSON data")
        with self._lock:
            self.by_task[task] += 1
            self.seen_words.append(words)
        score_max = int(data.get("score_max", 9))
        finish = "stop"
        fault = self._take_fault(task, words)
        kind = fault.kind if fault else None
        if kind == "rate_limit":
            headers = {"retry-after": f"{fault.retry_after:g}", "retry-after-ms": f"{fault.retry_after * 1000:g}"}
            return self._error(429, "rate_limit_exceeded", "Rate limit reached; try again later.", headers=headers)
        if kind == "server_error":
            return self._error(500, "server_error", "The server had an error while processing your request.")
        if kind == "insufficient_quota":
            return self._error(429, "insufficient_quota", "You exceeded your current quota, please check your plan.")
        if kind == "unauthorized":
            return self._error(401, "invalid_api_key", f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.")
        if kind == "forbidden":
            return self._error(403, "permission_denied", f"Key {auth.removeprefix('Bearer ')} may not use this model.")
        if kind == "bad_body":
            return 200, {}, b'{"id": "chatcmpl-broken", "choices": [ {"message": '
        if kind == "slow":
            time.sleep(fault.delay)
        if kind in ("wrong_shape", "nan", "negative", "out_of_range", "later"):
            answer = _corrupt(kind, task, answer, score_max)
        content = json.dumps(answer)  # NaN is written as the bare token NaN, as a sloppy server would
        if fmt == "text":
            content = f"Here are the scores you asked for:\n```json\n{content}\n```\nLet me know if you need more."
        if kind == "malformed":
            content = "Sure! " + content[: max(1, len(content) // 2)] + " ... (and so on)"
        elif kind == "truncated":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif kind == "empty":
            content = ""
        elif kind == "obey":
            text = " ".join(words)
            content = text.split("reply with", 1)[1].strip() if "reply with" in text else "OK, I will do that."
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        usage = {
            "prompt_tokens": max(1, math.ceil(prompt_chars / 4)),
            "completion_tokens": max(1, math.ceil(len(content) / 3)),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        resp = {
            "id": f"chatcmpl-fake{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        return 200, {}, json.dumps(resp).encode()

    @staticmethod
    def _error(
        status: int, code: str | None, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        err = {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": param,
            "code": code,
        }
        return status, headers or {}, json.dumps({"error": err}).encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops SYNs when a client opens 16 connections at once
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    disable_nagle_algorithm = True  # small writes on a kept-alive connection would wait ~40 ms for an ACK
    wbufsize = -1  # headers and body leave in one write (flushed after each request)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: tests and benchmarks print their own summaries

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout); nothing to answer

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')
            return
        status, headers, out = self.fake.handle_chat(path, body, self.headers.get("authorization", ""))
        self._send(status, out, headers)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path in ("/v1/models", "/models"):
            data = {"object": "list", "data": [{"id": self.fake.model, "object": "model", "owned_by": "llmcomp"}]}
            self._send(200, json.dumps(data).encode())
        elif path == "/_stats":
            self._send(200, json.dumps(self.fake.stats()).encode())
        else:
            self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')


def _parse_fault(text: str) -> Fault:
    """``kind[:times[:match]]``, times ``*`` for every request."""
    kind, _, rest = text.partition(":")
    times_s, _, match = rest.partition(":")
    times = None if times_s == "*" else int(times_s or 1)
    return Fault(kind, times=times, match=match or None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m llmcomp.attention.fake_server", description="Fake OpenAI-compatible server for llmcomp."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    p.add_argument("--no-json-schema", action="store_true", help="reject response_format json_schema with 400")
    p.add_argument("--no-json-object", action="store_true", help="reject response_format json_object with 400")
    p.add_argument("--api-key", default=None, help="accept only this bearer token (default: any)")
    p.add_argument("--fault", action="append", default=[], help=f"kind[:times[:word]]; kinds: {', '.join(FAULTS)}")
    args = p.parse_args(argv)
    server = FakeOpenAIServer(
        args.host,
        args.port,
        latency=args.latency_ms / 1000,
        json_schema=not args.no_json_schema,
        json_object=not args.no_json_object,
        api_key=args.api_key,
    )
    for f in args.fault:
        server.faults.append(_parse_fault(f))
    # Ctrl-C and SIGTERM stop the server even when the parent started it with SIGINT ignored
    # (an ignored signal is inherited across exec, as from a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"fake OpenAI-compatible server on {server.url} (latency {args.latency_ms:g} ms); Ctrl-C to stop", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
