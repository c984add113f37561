"""The Batch API's JSONL as the fake server reads and writes it: an input file checked as OpenAI checks one,
and the lines of output and error files in OpenAI's shapes (no state, no HTTP here)."""

from __future__ import annotations

import gzip
import json
import secrets
from typing import Any

from llmcomp.testing.faults import DELIVERY

ENDPOINT = "/v1/chat/completions"  # the one endpoint this server batches
MAX_REQUESTS = 50_000  # OpenAI's limits on one input file
MAX_BYTES = 200_000_000
MAX_ERRORS = 100  # validation errors listed on a failed batch


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_requests(data: bytes, max_requests: int, max_bytes: int) -> tuple[list[dict[str, Any]], list[dict]]:
    """(request lines, validation errors) of a batch input file, checked as OpenAI checks one (lines from 1)."""
    if len(data) > max_bytes:
        return [], [line_error(None, "file_too_large", f"The input file has {len(data)} bytes; at most {max_bytes}.")]
    texts = data.decode("utf-8", "replace").rstrip().splitlines()  # a line of bad UTF-8 is bad JSON or text
    if not texts:
        return [], [line_error(None, "empty_file", "The batch input file is empty.")]
    if len(texts) > max_requests:
        msg = f"The input file has {len(texts)} requests; a batch may have at most {max_requests}."
        return [], [line_error(None, "too_many_requests", msg)]
    lines, errors, seen, model = [], [], set(), None
    for n, text in enumerate(texts, 1):
        try:
            req = json.loads(text)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            errors.append(line_error(n, "invalid_json_line", "This line is not parseable as a JSON object."))
            continue
        cid, body = req.get("custom_id"), req.get("body")
        if not isinstance(cid, str):
            errors.append(line_error(n, "missing_required_parameter", "custom_id must be a string.", "custom_id"))
        elif cid in seen:
            msg = f"The custom_id {cid!r} is a duplicate of another request; each must be unique in a batch."
            errors.append(line_error(n, "duplicate_custom_id", msg, "custom_id"))
        if req.get("method") != "POST":
            errors.append(line_error(n, "invalid_method", "method must be POST.", "method"))
        if req.get("url") != ENDPOINT:
            msg = f"The URL {req.get('url')!r} does not match the batch endpoint {ENDPOINT}."
            errors.append(line_error(n, "invalid_url", msg, "url"))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            errors.append(line_error(n, "invalid_body", "body must be an object with a model.", "body"))
        elif model is not None and body["model"] != model:
            msg = f"Model {body['model']!r} differs from {model!r}: a batch uses one model."
            errors.append(line_error(n, "mismatched_model", msg, "body.model"))
        else:
            model = body["model"]
        if isinstance(cid, str):
            seen.add(cid)
        lines.append(req)
    return ([] if errors else lines), errors[:MAX_ERRORS]


def result_line(custom_id: str, status: int, headers: dict[str, str], body: bytes) -> bytes:
    """One output (or error) file line for a request that ran, with the answer's body as it was served."""
    if headers.get(DELIVERY) == "hang":  # a request that never answers times out inside a batch
        return unrun_line(custom_id, "request_timeout", "The request timed out.")
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    try:
        json.loads(body)
    except RecursionError:
        pass  # valid JSON nested deeper than Python parses (deep_json): kept as served
    except ValueError:
        body = json.dumps(body.decode("utf-8", "replace")).encode()  # not JSON (bad_body, html): a string
    head = json.dumps({"id": new_id("batch_req_"), "custom_id": custom_id})[:-1].encode()
    resp = b'{"status_code": %d, "request_id": "%s", "body": ' % (status, new_id("req_").encode())
    return head + b', "response": ' + resp + body + b'}, "error": null}'


def unrun_line(custom_id: str, code: str, message: str) -> bytes:
    line = {"id": new_id("batch_req_"), "custom_id": custom_id, "response": None}
    return json.dumps(line | {"error": {"code": code, "message": message}}).encode()
