"""The fake server's Files and Batch API, driven over HTTP by the real openai SDK: shapes, scripted states, faults.

A batch's lines are answered as live chat requests would be, but the server's live request count stays 0.
"""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from llmcomp.attention import answers
from llmcomp.attention.prompts import build_messages, response_format
from llmcomp.testing.fake_batch import check_script
from llmcomp.testing.fake_server import FakeOpenAIServer, main

HEADS = ["meaning", "syntax"]
SENTENCES = [["the", "cat", "sat"], ["a", "dog", "ran", "off"], ["birds", "sing"]]
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")


def request_line(i: int, words: list[str], **over: object) -> dict:
    body = {"model": "gpt-fake", "messages": build_messages("sentence", words, HEADS, 9)}
    body["response_format"] = response_format("json_schema", "sentence", HEADS)
    return {"custom_id": f"req-{i}", "method": "POST", "url": ENDPOINT, "body": body} | over


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def client_for(server: FakeOpenAIServer, key: str = "dummy") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)


def submit(client: openai.OpenAI, lines: list[dict] | None = None):
    data = jsonl(lines if lines is not None else [request_line(i, w) for i, w in enumerate(SENTENCES)])
    f = client.files.create(file=("requests.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h", metadata={"run": "test"}
    )


def poll(client: openai.OpenAI, batch) -> list:
    """Every batch object seen until a final status."""
    seen = [batch]
    while seen[-1].status not in DONE:
        seen.append(client.batches.retrieve(batch.id))
        assert len(seen) < 20
    return seen


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_goes_validating_in_progress_completed_and_its_answers_are_valid(fake_openai):
    client = client_for(fake_openai)
    seen = poll(client, submit(client))
    assert [b.status for b in seen] == ["validating", "in_progress", "completed"]
    batch = seen[-1]
    assert batch.id.startswith("batch_") and batch.object == "batch" and batch.endpoint == ENDPOINT
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert batch.metadata == {"run": "test"} and batch.error_file_id is None and batch.errors is None
    assert batch.completed_at and batch.in_progress_at and batch.expires_at == batch.created_at + 86_400
    out = file_lines(client, batch.output_file_id)
    assert [line["custom_id"] for line in out] == ["req-0", "req-1", "req-2"]
    for line, words in zip(out, SENTENCES, strict=True):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        scores = answers.parse_sentence_answer(json.loads(content), len(words), HEADS, 9)
        assert scores.shape == (2, len(words), len(words))
    meta = client.files.retrieve(batch.output_file_id)
    assert meta.purpose == "batch_output" and meta.bytes == len(client.files.content(meta.id).content)
    assert fake_openai.requests == 0  # no live request
    assert {k: fake_openai.stats()[k] for k in ("batch_lines", "files_uploaded", "batches_created")} == {
        "batch_lines": 3,
        "files_uploaded": 1,
        "batches_created": 1,
    }
    fake_openai.reset_counts()
    assert fake_openai.stats()["batch_lines"] == 0


def test_the_upload_is_stored_as_sent_and_paths_without_v1_work(fake_openai):
    client = client_for(fake_openai)
    data = jsonl([request_line(0, ["x"])])
    f = client.files.create(file=("mine.jsonl", data), purpose="batch")
    assert (f.object, f.filename, f.purpose, f.status, f.bytes) == (
        "file",
        "mine.jsonl",
        "batch",
        "processed",
        len(data),
    )
    assert client.files.content(f.id).content == data
    with urllib.request.urlopen(f"http://127.0.0.1:{fake_openai.port}/files/{f.id}", timeout=10) as r:
        assert json.loads(r.read())["id"] == f.id
    with pytest.raises(openai.BadRequestError, match="jsonl"):
        client.files.create(file=("requests.txt", data), purpose="batch")
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_in_progress_steps_run_a_share_each(fake_openai):
    fake_openai.script_batches(["validating", "in_progress", "in_progress", "completed"])
    client = client_for(fake_openai)
    seen = poll(client, submit(client))
    assert [(b.status, b.request_counts.completed) for b in seen] == [
        ("validating", 0),
        ("in_progress", 1),
        ("in_progress", 3),
        ("completed", 3),
    ]
    assert fake_openai.stats()["batch_lines"] == 3 and fake_openai.requests == 0


def test_expired_keeps_what_ran_and_the_rest_are_batch_expired(fake_openai):
    fake_openai.script_batches(["validating", "expired:1"])
    client = client_for(fake_openai)
    batch = poll(client, submit(client))[-1]
    assert batch.status == "expired" and batch.expired_at and batch.request_counts.completed == 1
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["req-0"]
    errors = file_lines(client, batch.error_file_id)
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
        ("req-1", None, "batch_expired"),
        ("req-2", None, "batch_expired"),
    ]
    assert fake_openai.stats()["batch_lines"] == 1


def test_cancel_keeps_results_and_the_rest_are_batch_cancelled(fake_openai):
    fake_openai.script_batches(["validating", "in_progress", "in_progress", "completed"])
    client = client_for(fake_openai)
    batch = submit(client)
    assert client.batches.retrieve(batch.id).request_counts.completed == 1
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    assert [line["custom_id"] for line in file_lines(client, done.output_file_id)] == ["req-0"]
    codes = [e["error"]["code"] for e in file_lines(client, done.error_file_id)]
    assert codes == ["batch_cancelled", "batch_cancelled"]
    assert client.batches.retrieve(batch.id).status == "cancelled"  # stays there
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_a_scripted_fault_with_match_lands_in_the_error_file(fake_openai):
    fake_openai.add_fault("server_error", match="dog")
    client = client_for(fake_openai)
    batch = poll(client, submit(client))[-1]
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["req-0", "req-2"]
    (err,) = file_lines(client, batch.error_file_id)
    assert err["custom_id"] == "req-1" and err["error"] is None
    assert err["response"]["status_code"] == 500 and err["response"]["body"]["error"]["type"] == "server_error"
    assert fake_openai.faults_served["server_error"] == 1 and fake_openai.requests == 0


def test_invalid_lines_fail_the_batch_naming_each_line(fake_openai):
    lines = [request_line(0, ["a"]), request_line(0, ["b"]), request_line(2, ["c"], url="/v1/completions")]
    client = client_for(fake_openai)
    seen = poll(client, submit(client, lines))
    assert [b.status for b in seen] == ["validating", "failed"]
    batch = seen[-1]
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "duplicate_custom_id"), (3, "invalid_url")]
    assert batch.errors.object == "list" and batch.failed_at and batch.output_file_id is None
    assert fake_openai.stats()["batch_lines"] == 0


def test_more_lines_than_batch_max_requests_fail_the_batch(fake_openai):
    fake_openai.batch_max_requests = 2
    client = client_for(fake_openai)
    batch = poll(client, submit(client))[-1]
    assert batch.status == "failed" and batch.errors.data[0].code == "too_many_requests"
    fake_openai.batch_max_requests, fake_openai.batch_max_bytes = 3, 100
    batch = poll(client, submit(client))[-1]
    assert batch.status == "failed" and batch.errors.data[0].code == "file_too_large"
    fake_openai.batch_max_bytes = 10**6
    assert poll(client, submit(client))[-1].status == "completed"


def test_a_scripted_failure_and_bad_scripts(fake_openai):
    fake_openai.script_batches(["failed"])
    client = client_for(fake_openai)
    batch = submit(client)
    assert batch.status == "failed" and batch.errors.data[0].code == "token_limit_exceeded"
    for bad in ([], ["running"], ["completed", "in_progress"], ["in_progress", "failed"], ["expired:x"]):
        with pytest.raises(ValueError):
            check_script(bad)
    with pytest.raises(SystemExit):
        main(["--port", "0", "--batch-script", "validating,nonsense"])


def test_unknown_ids_are_404_a_missing_input_file_400_and_a_wrong_key_401(fake_openai):
    client = client_for(fake_openai)
    with pytest.raises(openai.NotFoundError, match="batch_nope"):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.BadRequestError, match="input_file_id|file-nope"):
        client.batches.create(input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h")
    fake_openai.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError):
        client.files.create(file=("requests.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        client.batches.list()
    assert fake_openai.stats()["files_uploaded"] == 0
    assert client_for(fake_openai, "sk-right").batches.list().data == []


def test_a_new_client_resumes_polling_where_another_left_off(fake_openai):
    first = client_for(fake_openai)
    batch = submit(first)
    assert first.batches.retrieve(batch.id).status == "in_progress"
    first.close()  # as if its process died mid-poll
    second = client_for(fake_openai)
    assert [b.id for b in second.batches.list()] == [batch.id]
    done = second.batches.retrieve(batch.id)
    assert done.status == "completed" and len(file_lines(second, done.output_file_id)) == 3
    assert fake_openai.requests == 0


def test_a_line_that_would_hang_times_out_and_a_gzipped_answer_is_stored_plain(fake_openai):
    fake_openai.add_fault("hang", match="cat")
    fake_openai.add_fault("gzip", match="dog")
    client = client_for(fake_openai)
    batch = poll(client, submit(client))[-1]
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    (err,) = file_lines(client, batch.error_file_id)
    assert (err["custom_id"], err["response"], err["error"]["code"]) == ("req-0", None, "request_timeout")
    out = file_lines(client, batch.output_file_id)
    assert out[0]["custom_id"] == "req-1" and out[0]["response"]["body"]["object"] == "chat.completion"
