"""A fake OpenAI-compatible chat server on 127.0.0.1, for tests, the benchmark and offline demos.

It is a real HTTP server (stdlib ``http.server``, one thread per connection), so the official SDK
talks to it exactly as it talks to OpenAI, vLLM or Ollama. It answers llmcomp's requests with *valid*,
deterministic scores (``behaviours.answer_for``) in the format the request asks for (json_schema,
json_object, or prose around a fenced JSON block when no format is given), and counts what it served.

Faults are scripted per request: ``server.add_fault("rate_limit", times=2)`` or
``add_fault("nan", match="cat")`` (only requests whose words include "cat"). The first rule that
matches a request and still has uses left is applied. Kinds are listed in ``FAULTS``, hostile servers
included (one that never answers, drips its body, nests JSON 100,000 deep, echoes the key...). A request
for a model named in ``MODELS`` gets that model's valid answers instead: ``model="leak"`` peeks at the
next word in ``sentence`` mode (what leak-free validation must not report as a good loss).

It also speaks OpenAI's Files and Batch API (``llmcomp.testing.fake_batch``): a batch's lines get the same
answers and faults, each poll moves a batch one step along ``server.script_batches([...])``.

Run it for a demo::

    python -m llmcomp.testing.fake_server --port 8000 --latency-ms 50
    # then: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=dummy llmcomp ...
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import threading
import time
from collections import Counter
from typing import Any

from llmcomp.testing.batch_lines import MAX_BYTES, MAX_REQUESTS

# answer_for is looked up here at each request, so a test can monkeypatch this module's name.
from llmcomp.testing.behaviours import LEAK_MODEL, MODELS, answer_for, completion, leak_answer
from llmcomp.testing.fake_batch import BatchStore, check_script
from llmcomp.testing.fake_http import Handler, Server
from llmcomp.testing.faults import (
    CORRUPTIONS,
    DELIVERY,
    FAULTS,
    Fault,
    Response,
    corrupt,
    error_response,
    http_fault,
    parse_fault,
    spoil_content,
)
from llmcomp.testing.sparse import corrupt_sparse, sparsify

__all__ = ["FAULTS", "MODELS", "FakeOpenAIServer", "Fault", "answer_for", "main"]


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
        self.stopping = threading.Event()  # ends the handlers that hang or drip
        self.faults: list[Fault] = []
        self.batch_max_requests = MAX_REQUESTS  # lower them to make a client split its batches
        self.batch_max_bytes = MAX_BYTES
        self.batches = BatchStore(self)  # uploaded files and batches, kept while the server lives
        self.reset_counts()
        self._httpd = Server((host, port), Handler)
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
        self.stopping.set()
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

    def script_batches(self, steps: list[str] | tuple[str, ...]) -> None:
        """The statuses that batches created from now on go through, one per poll (``fake_batch.STEPS``)."""
        self.batches.script = check_script(steps)

    def reset_counts(self) -> None:
        self.batches.reset_counts()
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
        batches = self.batches.stats()  # outside self._lock: running a batch's lines takes both locks
        with self._lock:
            return batches | {
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

    def handle_chat(self, path: str, body: bytes, auth: str) -> Response:
        """Status, extra headers and body for one POST to the chat completions path."""
        with self._lock:
            self.requests += 1
            self.by_path[path] += 1
            self.auth_headers.append(auth)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._answer(body, auth)
        finally:
            with self._lock:
                self.inflight -= 1

    def handle_batch_api(self, method: str, path: str, payload: Any, auth: str) -> Response:
        """One call to /files or /batches (``path`` without /v1), with the same key check as chat."""
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return http_fault(Fault("unauthorized"), auth)  # type: ignore[return-value]
        return self.batches.handle(method, path, payload, auth)

    def _answer(self, body: bytes, auth: str) -> Response:
        """The answer to one chat request, live or a batch's line."""
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return http_fault(Fault("unauthorized"), auth)  # 401, echoing the key as OpenAI does
        try:
            req = json.loads(body)
            messages = req["messages"]
        except (ValueError, KeyError, TypeError):
            return error_response(400, "invalid_request", "request body is not a chat completions request")
        fmt = (req.get("response_format") or {}).get("type", "text")
        with self._lock:
            self.by_format[fmt] += 1
        if (fmt == "json_schema" and not self.json_schema) or (fmt == "json_object" and not self.json_object):
            return error_response(
                400, None, f"response_format '{fmt}' is not supported by this server", "response_format"
            )
        try:
            data = json.loads(next(m["content"] for m in messages if m.get("role") == "user"))
            task, words = data["task"], [str(w) for w in data["words"]]
            model = str(req.get("model", self.model))
            answer = leak_answer(data) if model == LEAK_MODEL else answer_for(data)
            sparse = task == "sentence" and data.get("answer") == "sparse"
            if sparse:  # each word's top_k words of the same dense answer (llmcomp.testing.sparse)
                answer = sparsify(answer, int(data.get("top_k", 3)))
        except (StopIteration, ValueError, KeyError, TypeError, IndexError):
            return error_response(400, "invalid_request", "the first user message is not llmcomp JSON data")
        with self._lock:
            self.by_task[task] += 1
            self.seen_words.append(words)
        score_max = int(data.get("score_max", 9))
        fault = self._take_fault(task, words)
        kind = fault.kind if fault else None
        failed = http_fault(fault, auth) if fault else None
        if failed is not None:
            return failed
        if kind == "slow":
            time.sleep(fault.delay)
        key = auth.removeprefix("Bearer ")
        if (kind in CORRUPTIONS or kind == "echo_key") and sparse:
            answer = corrupt_sparse(kind, answer, score_max, key)
        elif kind in CORRUPTIONS or kind == "echo_key":
            answer = corrupt(kind, task, answer, score_max, key)
        content = json.dumps(answer)  # NaN is written as the bare token NaN, as a sloppy server would
        if fmt == "text":
            content = f"Here are the scores you asked for:\n```json\n{content}\n```\nLet me know if you need more."
        size = (fault.size or 0) if fault else 0
        content, finish = spoil_content(kind, content, words, size, key)
        delivery = {"drip": f"drip:{fault.interval:g}" if fault else "", "huge_chunked": "chunked"}.get(kind or "")
        headers = {DELIVERY: delivery} if delivery else {}
        n = self.requests + self.batches.batch_lines  # a distinct completion id, live or batched
        out = completion(content, finish, messages, req.get("model", self.model), n, kind)
        if kind == "gzip":
            return 200, {"content-encoding": "gzip"}, gzip.compress(out)
        return 200, headers, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m llmcomp.testing.fake_server", description="Fake OpenAI-compatible server for llmcomp."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    p.add_argument("--no-json-schema", action="store_true", help="reject response_format json_schema with 400")
    p.add_argument("--no-json-object", action="store_true", help="reject response_format json_object with 400")
    p.add_argument("--api-key", default=None, help="accept only this bearer token (default: any)")
    p.add_argument("--fault", action="append", default=[], help=f"kind[:times[:word]]; kinds: {', '.join(FAULTS)}")
    p.add_argument("--batch-script", default=None, help="batch statuses, one per poll, e.g. validating,completed")
    args = p.parse_args(argv)
    try:
        steps = check_script(args.batch_script.split(",")) if args.batch_script else None
    except ValueError as e:
        p.error(str(e))
    server = FakeOpenAIServer(
        args.host,
        args.port,
        latency=args.latency_ms / 1000,
        json_schema=not args.no_json_schema,
        json_object=not args.no_json_object,
        api_key=args.api_key,
    )
    for f in args.fault:
        server.faults.append(parse_fault(f))
    if steps:
        server.script_batches(steps)
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
