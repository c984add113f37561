"""The fake server's sparse answers (``answer="sparse"``): its dense answer cut to each word's top_k words.

What the fake model *means* by a sparse answer is therefore exact: its dense matrix with every cell outside a
row's ``top_k`` strongest (and every 0) left out, so a test can rebuild the expected matrix from ``sparsify``.
``corrupt_sparse`` spoils one, as ``faults.corrupt`` spoils a dense answer, for the same fault kinds.
"""

from __future__ import annotations

import json
from typing import Any

from llmcomp.testing.faults import bad_score


def top_pairs(row: list[int], top_k: int) -> list[list[int]]:
    """A dense row's ``top_k`` strongest words as [j, score] pairs, strongest first (ties: the nearer word);
    zero scores are left out (they are the floor anyway)."""
    best = sorted(range(len(row)), key=lambda j: (-row[j], -j))[:top_k]
    return [[j, row[j]] for j in best if row[j] > 0]


def sparsify(answer: dict[str, Any], top_k: int) -> dict[str, Any]:
    """A dense ``sentence`` answer (one lower-triangular matrix per head) as a sparse one."""
    return {name: [top_pairs(row, top_k) for row in rows] for name, rows in answer.items()}


def corrupt_sparse(kind: str, answer: dict[str, Any], score_max: int, key: str = "") -> dict[str, Any]:
    """A copy of a valid sparse answer with one scripted defect in the first head (``faults.CORRUPTIONS``
    or ``echo_key``): on the last word's first pair, or a missing word, or a later word named by word 0."""
    head = next(iter(answer))
    rows = json.loads(json.dumps(answer[head]))
    if not rows[-1]:
        rows[-1].append([len(rows) - 1, 1])
    first = rows[-1][0]
    if kind == "wrong_shape":
        rows = rows[:-1]
    elif kind == "later":
        rows[0] = [[1, 5]]  # word 0 names word 1
    else:
        first[1] = bad_score(kind, score_max, key)
    return {**answer, head: rows}
