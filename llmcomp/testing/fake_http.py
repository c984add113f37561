"""The HTTP side of the fake OpenAI-compatible server: a threaded stdlib server and its request handler.

The handler turns what ``FakeOpenAIServer.handle_chat`` decides into bytes on the wire, including the deliveries
of hostile servers: a response that never comes (``hang``) and a body sent one byte at a time (``drip``).
Calls to /files and /batches go to ``FakeOpenAIServer.handle_batch_api``; an upload's multipart form is read here.
"""

from __future__ import annotations

import contextlib
import json
import select
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmcomp.testing.faults import DELIVERY


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops SYNs when a client opens 16 connections at once
    daemon_threads = True


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """A multipart/form-data body as {field name: (file name or None, bytes)}; None when it is not one."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    msg = BytesParser(policy=HTTP).parsebytes(b"content-type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        return None
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    disable_nagle_algorithm = True  # small writes on a kept-alive connection would wait ~40 ms for an ACK
    wbufsize = -1  # headers and body leave in one write (flushed after each request)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: tests and benchmarks print their own summaries

    @property
    def fake(self) -> Any:  # the FakeOpenAIServer
        return self.server.fake  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        delivery = headers.pop(DELIVERY, "")
        if delivery == "hang":
            self._hang()
            return
        try:
            self.send_response(status)
            self.send_header("content-type", headers.pop("content-type", "application/json"))
            if delivery == "chunked":
                self.send_header("transfer-encoding", "chunked")
            else:
                self.send_header("content-length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if delivery.startswith("drip:"):
                self._drip(body, float(delivery[5:]))
            elif delivery == "chunked":
                for i in range(0, len(body), 65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536]))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout); nothing to answer

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client gave up mid-answer (a deadline): nothing to report
            super().handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # what is left unsent stays so
            super().finish()

    def _hang(self) -> None:
        """Answer nothing until the client closes the connection (or sends more) or the server stops."""
        self.close_connection = True
        while not self.fake.stopping.is_set():
            if select.select([self.connection], [], [], 0.05)[0]:
                return  # closed (or a new request): either way this one is over

    def _drip(self, body: bytes, interval: float) -> None:
        """The body one byte at a time, ``interval`` seconds apart: every read gets a byte, none times out."""
        self.wfile.flush()  # the status and headers leave at once
        for i in range(len(body)):
            if self.fake.stopping.wait(interval):
                break
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
        self.close_connection = True

    def _batch_api(self, method: str, body: bytes = b"") -> bool:
        """Answer a call to /files or /batches (with or without /v1); False for any other path."""
        path = self.path.split("?", 1)[0].removeprefix("/v1")
        if path.lstrip("/").split("/")[0] not in ("files", "batches"):
            return False
        payload: object = body
        if method == "POST" and path.rstrip("/") == "/files":
            payload = parse_multipart(self.headers.get("content-type", ""), body)
        auth = self.headers.get("authorization", "")
        status, headers, out = self.fake.handle_batch_api(method, path, payload, auth)
        self._send(status, out, headers)
        return True

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if self._batch_api("POST", body):
            return
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')
            return
        status, headers, out = self.fake.handle_chat(path, body, self.headers.get("authorization", ""))
        self._send(status, out, headers)

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        if not self._batch_api("DELETE"):
            self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if self._batch_api("GET"):
            return
        if path in ("/v1/models", "/models"):
            data = {"object": "list", "data": [{"id": self.fake.model, "object": "model", "owned_by": "llmcomp"}]}
            self._send(200, json.dumps(data).encode())
        elif path == "/_stats":
            self._send(200, json.dumps(self.fake.stats()).encode())
        else:
            self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')
