"""How the web app and the application layer are cut: tabs never import each other, the library
never imports the layers above it, modules stay small, and the form's defaults are the configs'."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmcomp"
#: packages below the application layer: they know nothing of it, nor of the web app or the CLI
LIBRARY = ("attention", "text", "model", "training", "generation", "plots")


def imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth, TYPE_CHECKING blocks included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_tab_imports_another():
    tabs = sorted((PACKAGE / "ui").glob("*_tab.py"))
    assert len(tabs) == 5
    names = {f"llmcomp.ui.{t.stem}" for t in tabs}
    for tab in tabs:
        others = (names - {f"llmcomp.ui.{tab.stem}"}) & imports(tab)
        assert not others, f"{tab.name} imports {sorted(others)}"


def test_the_library_never_imports_the_layers_above_it():
    for sub in LIBRARY:
        for path in sorted((PACKAGE / sub).rglob("*.py")):
            above = {m for m in imports(path) if m.split(".")[:2] in (["llmcomp", "app"], ["llmcomp", "ui"])}
            assert not above, f"{path.relative_to(PACKAGE)} imports {sorted(above)}"


@pytest.mark.parametrize("sub", ["app", "ui"])
def test_modules_of_the_app_layer_and_the_web_app_stay_under_300_lines(sub):
    for path in sorted((PACKAGE / sub).glob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 300, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_the_train_form_starts_from_the_configs_defaults(tmp_path):
    """The Train tab shows TrainConfig's and GPTConfig's defaults (one home for every default)."""
    from llmcomp.app.jobs import JobManager
    from llmcomp.model.config import GPTConfig
    from llmcomp.settings import Paths
    from llmcomp.training.config import TrainConfig
    from llmcomp.ui.app import build_app

    demo = build_app(paths=Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "r"), jobs=JobManager())
    shown = {b.elem_id: getattr(b, "value", None) for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    train, model = TrainConfig(), GPTConfig()
    assert shown["train-steps"] == train.steps and shown["train-batch"] == train.batch_size
    assert shown["train-lr"] == train.lr and shown["train-eval"] == train.eval_every
    assert shown["train-layers"] == model.n_layer and shown["train-width"] == model.n_embd
    assert shown["train-learned"] == model.n_learned_heads and shown["train-dropout"] == model.dropout
    assert shown["train-seed"] == train.seed


def test_the_answer_and_device_fields_start_from_the_configs_defaults(tmp_path):
    """The OpenAI source's answer and top-k, the local LLM's device and precision, the trainer's device."""
    from llmcomp.app.jobs import JobManager
    from llmcomp.attention.local_config import LocalLLMConfig
    from llmcomp.attention.openai_config import OpenAIConfig
    from llmcomp.settings import Paths
    from llmcomp.training.config import TrainConfig
    from llmcomp.ui.app import build_app

    demo = build_app(paths=Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "r"), jobs=JobManager())
    shown = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    openai, local = OpenAIConfig(), LocalLLMConfig()
    assert shown["openai-answer"].value == openai.answer and shown["openai-top-k"].value == openai.top_k
    assert shown["local-device"].value == local.device and shown["local-precision"].value == local.precision
    assert shown["train-device"].value == TrainConfig().device
    assert [c[1] for c in shown["local-precision"].choices] == ["fp32", "bf16", "fp16"]
    assert shown["openai-top-k"].visible is False  # shown for sparse answers only
