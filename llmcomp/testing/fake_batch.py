"""Files and Batches for the fake OpenAI-compatible server: the store and each batch's scripted life (no HTTP here).

A batch's lines are answered by the same logic as a live chat request (behaviours, response formats, faults with
``match=``), but they are not live requests: the server's ``requests`` leaves them out and ``batch_lines`` counts
them. Each ``GET /batches/{id}`` moves a batch one step along the script it was created with
(``FakeOpenAIServer.script_batches``), so a test decides what a polling client sees. The state lives on the server
object, so a client killed mid-poll can resume against it. Shapes follow OpenAI's Batch API and the openai SDK.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llmcomp.testing.batch_lines import ENDPOINT, line_error, new_id, parse_requests, result_line, unrun_line
from llmcomp.testing.faults import DELIVERY, Response, error_response

#: Steps a batch script may name ("expired:N": only the first N lines ever ran).
STEPS = ("validating", "in_progress", "finalizing", "completed", "expired", "failed")
TERMINAL = ("completed", "expired", "failed", "cancelled")
DEFAULT_SCRIPT = ("validating", "in_progress", "completed")
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
SCRIPTED_FAILURE = {  # what a scripted "failed" step reports: OpenAI's most common failure after validation
    "code": "token_limit_exceeded",
    "message": "Enqueued token limit reached for this model in organization org-fake. Limit: 90,000 enqueued tokens.",
    "param": None,
    "line": None,
}
UNRUN = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


def check_script(steps: list[str] | tuple[str, ...]) -> list[str]:
    """The steps as a list, or a ValueError naming the step that cannot be scripted."""
    steps = list(steps)
    if not steps:
        raise ValueError("a batch script needs at least one step")
    for i, step in enumerate(steps):
        name, colon, n = step.partition(":")
        if name not in STEPS or (colon and (name != "expired" or not n.isdigit())):
            raise ValueError(f"unknown batch step {step!r}; steps: {', '.join(STEPS)}, expired:N")
        if name in TERMINAL and i != len(steps) - 1:
            raise ValueError(f"batch step {step!r} ends a batch, so it must be the last step")
    if steps[-1] == "failed" and any(s != "validating" for s in steps[:-1]):
        raise ValueError("a failed batch never ran: only 'validating' may come before 'failed'")
    return steps


def _json(status: int, obj: Any) -> Response:
    return status, {}, json.dumps(obj).encode()


def _missing(kind: str, oid: str) -> Response:
    return error_response(404, None, f"No such {kind} object: '{oid}'.", "id")


@dataclass
class Job:
    """One batch: the object served, its request lines, its script and what has run."""

    obj: dict[str, Any]
    lines: list[dict[str, Any]]
    steps: list[str]
    errors: list[dict[str, Any]]  # validation errors (the batch fails at its "failed" step)
    step: int = 0
    results: list[tuple[bool, bytes]] = field(default_factory=list)  # (answered 200, file line), in line order


class BatchStore:
    """The server's uploaded files and batches; ``handle`` answers one call to /files or /batches."""

    def __init__(self, server: Any):
        self.server = server  # the FakeOpenAIServer: its _answer and batch_max_requests / batch_max_bytes
        self._lock = threading.Lock()
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.jobs: dict[str, Job] = {}
        self.script = list(DEFAULT_SCRIPT)
        self.reset_counts()

    def reset_counts(self) -> None:
        self.files_uploaded = self.batches_created = self.batch_lines = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {k: getattr(self, k) for k in ("batch_lines", "files_uploaded", "batches_created")}

    def handle(self, method: str, path: str, payload: Any, auth: str) -> Response:
        """``path`` without the /v1 prefix; ``payload``: the multipart fields of an upload, else the raw body."""
        parts = path.strip("/").split("/")
        with self._lock:
            if parts[0] == "files":
                return self._files(method, parts[1:], payload)
            if method == "POST" and parts == ["batches"]:
                return self._create(payload, auth)
            if method == "GET" and parts == ["batches"]:
                data = [j.obj for j in reversed(self.jobs.values())]  # newest first, as OpenAI lists
                return _json(200, {"object": "list", "data": data, "has_more": False})
            job = self.jobs.get(parts[1]) if len(parts) > 1 else None
            if job is None:
                return _missing("Batch", parts[1]) if len(parts) > 1 else error_response(404, None, "not found")
            if method == "GET" and len(parts) == 2:
                if job.step < len(job.steps) - 1:
                    job.step += 1
                    self._enter(job, auth)
                return _json(200, job.obj)
            if method == "POST" and parts[2:] == ["cancel"]:
                return self._cancel(job)
            return error_response(404, None, "not found")

    # --- files --------------------------------------------------------------------------------
    def add_file(self, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        now = int(time.time())
        meta = {"id": new_id("file-"), "object": "file", "bytes": len(data), "created_at": now}
        meta |= {"filename": filename, "purpose": purpose, "status": "processed", "status_details": None}
        meta["expires_at"] = now + 30 * 86_400 if purpose == "batch" else None  # batch files live 30 days
        self.files[meta["id"]] = (meta, data)
        return meta

    def _files(self, method: str, rest: list[str], fields: Any) -> Response:
        if method == "POST" and not rest:
            if not isinstance(fields, dict) or "file" not in fields:
                return error_response(400, "missing_required_parameter", "Missing required parameter: 'file'.", "file")
            purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
            if purpose not in PURPOSES:
                return error_response(400, None, f"Invalid purpose {purpose!r}.", "purpose")
            filename, data = fields["file"]
            if purpose == "batch" and not str(filename).endswith(".jsonl"):
                return error_response(400, None, "Invalid file format for Batch API. Must be .jsonl", "file")
            self.files_uploaded += 1
            return _json(200, self.add_file(str(filename), data, purpose))
        if not rest or rest[0] not in self.files:
            return _missing("File", rest[0]) if rest else error_response(404, None, "not found")
        meta, data = self.files[rest[0]]
        if method == "GET" and len(rest) == 1:
            return _json(200, meta)
        if method == "GET" and rest[1:] == ["content"]:
            return 200, {"content-type": "application/octet-stream"}, data
        if method == "DELETE" and len(rest) == 1:
            del self.files[rest[0]]
            return _json(200, {"id": rest[0], "object": "file", "deleted": True})
        return error_response(404, None, "not found")

    # --- batches ------------------------------------------------------------------------------
    def _create(self, body: bytes, auth: str) -> Response:
        try:
            req = json.loads(body)
            fid, metadata = req.get("input_file_id"), req.get("metadata")
        except (ValueError, AttributeError):
            return error_response(400, None, "The request body is not a JSON object.")
        if req.get("endpoint") != ENDPOINT:
            return error_response(400, None, f"This server batches only the endpoint {ENDPOINT}.", "endpoint")
        if req.get("completion_window") != "24h":
            return error_response(400, None, "completion_window must be '24h'.", "completion_window")
        if not isinstance(fid, str) or fid not in self.files:
            return error_response(400, None, f"No such File object: {fid!r}.", "input_file_id")
        if metadata is not None and not isinstance(metadata, dict):
            return error_response(400, None, "metadata must be an object of strings.", "metadata")
        meta, data = self.files[fid]
        if meta["purpose"] != "batch":
            lines, errors = [], [line_error(None, "invalid_file_purpose", "The input file's purpose is not 'batch'.")]
        else:
            lines, errors = parse_requests(data, self.server.batch_max_requests, self.server.batch_max_bytes)
        now = int(time.time())
        obj = {"id": new_id("batch_"), "object": "batch", "endpoint": ENDPOINT, "errors": None}
        obj |= {"input_file_id": fid, "completion_window": "24h", "status": "validating"}
        obj |= {"output_file_id": None, "error_file_id": None, "created_at": now, "expires_at": now + 86_400}
        stamps = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
        obj |= {f"{s}_at": None for s in stamps}
        obj |= {"request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": metadata}
        obj["model"] = lines[0]["body"]["model"] if lines else None
        steps = self.script
        if errors:  # fails after its first step when that is validating, as OpenAI rejects a file
            steps = ["validating", "failed"] if steps[0] == "validating" else ["failed"]
        job = Job(obj, lines, list(steps), errors)
        self._enter(job, auth)
        self.jobs[obj["id"]] = job
        self.batches_created += 1
        return _json(200, obj)

    def _cancel(self, job: Job) -> Response:
        status = job.obj["status"]
        if status in TERMINAL:
            return error_response(409, None, f"Cannot cancel a batch with status '{status}'.")
        if status != "cancelling":
            job.obj |= {"status": "cancelling", "cancelling_at": int(time.time())}
            job.steps = [*job.steps[: job.step], "cancelling", "cancelled"]  # the next GET: cancelled
        return _json(200, job.obj)

    def _enter(self, job: Job, auth: str) -> None:
        """Move ``job`` to its current step: run what that step runs, write files when it ends the batch."""
        step = job.steps[job.step]
        name, _, n = step.partition(":")
        total, obj, now = len(job.lines), job.obj, int(time.time())
        if name == "in_progress":
            k = job.steps.count("in_progress")
            self._run(job, total * job.steps[: job.step + 1].count("in_progress") // k, auth)
        elif name in ("finalizing", "completed"):
            self._run(job, total, auth)
            obj["finalizing_at"] = obj["finalizing_at"] or now
        elif name == "expired" and n:
            self._run(job, min(int(n), total), auth)
        elif name == "failed":
            obj["errors"] = {"object": "list", "data": job.errors or [SCRIPTED_FAILURE]}
        if name in ("completed", "expired", "cancelled"):
            self._finish(job, {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(name))
        if name in TERMINAL:
            obj[f"{name}_at"] = now
        obj["status"] = name

    def _run(self, job: Job, upto: int, auth: str) -> None:
        """Answer the lines before ``upto`` not yet run, as the chat route would (without counting them live)."""
        counts = job.obj["request_counts"]
        for req in job.lines[len(job.results) : upto]:
            status, headers, body = self.server._answer(json.dumps(req["body"]).encode(), auth)
            line = result_line(req["custom_id"], status, headers, body)
            ok = status == 200 and headers.get(DELIVERY) != "hang"
            job.results.append((ok, line))
            counts["completed" if ok else "failed"] += 1
            self.batch_lines += 1
            job.obj["in_progress_at"] = job.obj["in_progress_at"] or int(time.time())

    def _finish(self, job: Job, unrun_code: str | None) -> None:
        """The output file (answers with status 200) and error file (other answers, lines that never ran)."""
        done = [line for ok, line in job.results if ok]
        failed = [line for ok, line in job.results if not ok]
        if unrun_code:
            rest = job.lines[len(job.results) :]
            failed += [unrun_line(r["custom_id"], unrun_code, UNRUN[unrun_code]) for r in rest]
        bid = job.obj["id"]
        for key, lines in (("output_file_id", done), ("error_file_id", failed)):
            if lines:
                name = f"{bid}_{key.split('_')[0]}.jsonl"
                job.obj[key] = self.add_file(name, b"".join(line + b"\n" for line in lines), "batch_output")["id"]
