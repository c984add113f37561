"""What the fake OpenAI-compatible server's model says: valid deterministic answers.

Answers read the JSON word list that ``llmcomp.attention.prompts`` puts in the user message. Scores favour the
word itself and the previous word; in the ``sentence`` task a word that appears again later also gains, so later
words shape earlier rows there, as they can with a real LLM. The faults a test can script live in ``faults``.

A model name chooses another valid model instead (``MODELS``): ``leak`` answers like a source that peeks at the
next word, the case leak-free validation exists for (ask for ``model="leak"``).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from typing import Any


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


#: Model names (the request's ``model``) that answer another valid model's scores; any other name gets ``answer_for``.
MODELS: dict[str, str] = {
    "leak": "sentence task: row i puts all its score on the latest earlier occurrence of the NEXT word (words[i+1]), "
    "else on word i itself; prefix task: the last word has no next word, so on itself; pair task: as usual",
}
LEAK_MODEL = "leak"


def leak_row(words: list[str], i: int, score_max: int, next_word: str | None) -> list[int]:
    """Scores of word i over words 0..i: ``score_max`` on the latest j <= i holding ``next_word``, else on i."""
    target = next((j for j in range(i, -1, -1) if words[j] == next_word), i) if next_word is not None else i
    return [score_max if j == target else 0 for j in range(i + 1)]


def leak_answer(data: dict[str, Any]) -> dict[str, Any]:
    """The ``leak`` model's valid answer: in the sentence task each row looks at the word after it, which a
    generating model never has; scored prefix by prefix the same model has nothing to peek at."""
    task, words, heads = data["task"], data["words"], data["heads"]
    score_max = int(data.get("score_max", 9))
    if task == "pair":
        return answer_for(data)
    out: dict[str, Any] = {}
    for name in heads:
        if task == "sentence":
            nxt = [words[i + 1] if i + 1 < len(words) else None for i in range(len(words))]
            out[name] = [leak_row(words, i, score_max, nxt[i]) for i in range(len(words))]
        elif task == "prefix":
            out[name] = leak_row(words, len(words) - 1, score_max, None)
        else:
            raise ValueError(f"unknown task {task!r}")
    return out


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


def completion(
    content: str, finish: str, messages: list[dict[str, Any]], model: str, n: int, kind: str | None = None
) -> bytes:
    """The body of a chat completion holding ``content``, with usage at about 4 prompt / 3 completion chars a token.

    ``kind`` may be a fault that changes how the body carries the answer (usage, content or message types)."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
    usage = {
        "prompt_tokens": max(1, math.ceil(prompt_chars / 4)),
        "completion_tokens": max(1, math.ceil(len(content) / 3)),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish,
        "logprobs": None,
    }
    resp = {
        "id": f"chatcmpl-fake{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
    if kind == "usage_text":
        usage["prompt_tokens"] = "lots"
    elif kind == "usage_huge":
        usage["prompt_tokens"] = "__huge__"  # JSON cannot write 1e999 from Python: substituted below
    elif kind == "content_number":
        choice["message"]["content"] = 42
    elif kind == "content_parts":
        half = len(content) // 2
        choice["message"]["content"] = [
            {"type": "text", "text": content[:half]},
            {"type": "text", "text": content[half:]},
        ]
    elif kind == "message_string":
        choice["message"] = content
    return json.dumps(resp).encode().replace(b'"__huge__"', b"1e999")
