"""Checkpoints on their own: what a save writes, what a load gives back, and each refusal.

The model here is built directly (one tiny layer, no training), so every test runs in well under a
second; tests/test_training.py covers checkpoints written by real training runs and resume.
"""

from __future__ import annotations

import contextlib
import json
import locale
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.text.vocab import Vocab
from llmcomp.training import checkpoint as checkpoint_module
from llmcomp.training.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)

WORDS = ["the", "cat", "saw", "a", "dog", "café", "naïve", "."]  # non-ASCII words on purpose


def tiny_model(vocab: Vocab, seed: int = 0, tie: bool = False) -> GPT:
    """One small layer; ``tie`` shares the output head with the token embeddings (stored once when saved)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=8, n_layer=1, n_embd=8))
    if tie:
        model.lm_head.weight = model.wte.weight
    return model


def is_tied(model: GPT) -> bool:
    return model.lm_head.weight is model.wte.weight


def trained_optimizer(model: GPT) -> torch.optim.AdamW:
    """AdamW after two real steps, so every moment is non-zero and 'step' is 2."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.tensor([[2, 4, 5, 6]])
    att = torch.ones(1, 1, 4, 4).tril()
    att = att / att.sum(-1, keepdim=True)
    for _ in range(2):
        opt.zero_grad()
        model(idx, att).sum().backward()
        opt.step()
    return opt


def make_checkpoint(tie: bool = False, **changes) -> Checkpoint:
    vocab = Vocab(WORDS)
    model = tiny_model(vocab, tie=tie)
    fields = dict(
        model=model,
        vocab=vocab,
        step=7,
        source_spec={"kind": "gaussian", "n_heads": 1, "sigma": 1.5},
        source_fingerprint={"kind": "gaussian", "n_heads": 1, "sigma": 1.5},
        train_config={"steps": 7, "lr": 0.003, "corpus": "données.txt"},
        metrics=[{"step": 5, "train_loss": 2.5}, {"step": 7, "val_loss": 2.25, "note": "fin"}],
        optimizer_state=optimizer_to_tensors(trained_optimizer(model)),
    )
    fields.update(changes)
    return Checkpoint(**fields)


def same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(params=[False, True], ids=["own-head", "tied-head"])
def saved(tmp_path, request) -> tuple[Checkpoint, Path]:
    ckpt = make_checkpoint(tie=request.param)
    return ckpt, save_checkpoint(ckpt, tmp_path / "ck")


def test_round_trip_gives_back_every_field(saved):
    ckpt, folder = saved
    back = load_checkpoint(folder)
    assert same_weights(back.model, ckpt.model)  # a tied head comes back equal to the embeddings
    logits = back.model(torch.tensor([[2, 5, 6]]), torch.eye(3)[None, None])
    assert torch.equal(logits, ckpt.model.eval()(torch.tensor([[2, 5, 6]]), torch.eye(3)[None, None]))
    assert not back.model.training  # loaded for use: dropout off
    assert back.model.config == ckpt.model.config
    assert back.vocab == ckpt.vocab and back.vocab.itos == ckpt.vocab.itos
    assert back.step == 7 and isinstance(back.step, int)
    assert back.source_spec == ckpt.source_spec and back.source_fingerprint == ckpt.source_fingerprint
    assert back.train_config == ckpt.train_config
    assert back.metrics == ckpt.metrics
    assert back.path == folder
    assert back.optimizer_state == {}  # only asked for when resuming


def test_files_on_disk_are_the_documented_ones(saved):
    ckpt, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json",
        "metrics.jsonl",
        "model.safetensors",
        "optimizer.safetensors",
        "vocab.json",
    ]
    assert [p.name for p in folder.parent.iterdir()] == ["ck"]  # no temporary file or folder left behind
    meta = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
    assert meta == {
        "format_version": FORMAT_VERSION,
        "model_config": ckpt.model.config.to_dict(),
        "train_config": ckpt.train_config,
        "step": 7,
        "source_spec": ckpt.source_spec,
        "source_fingerprint": ckpt.source_fingerprint,
        "vocab_fingerprint": ckpt.vocab.fingerprint(),
    }
    weights = load_file(str(folder / "model.safetensors"))
    assert "wte.weight" in weights and ("lm_head.weight" in weights) == (not is_tied(ckpt.model))  # tied: once
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == ckpt.metrics


def test_optimizer_state_round_trips_and_resumes_the_same_step(tmp_path):
    vocab = Vocab(WORDS)
    model = tiny_model(vocab)
    opt = trained_optimizer(model)
    folder = save_checkpoint(make_checkpoint(model=model, optimizer_state=optimizer_to_tensors(opt)), tmp_path / "ck")
    back = load_checkpoint(folder, with_optimizer=True)
    saved_state = optimizer_to_tensors(opt)
    assert back.optimizer_state.keys() == saved_state.keys()
    assert all(torch.equal(back.optimizer_state[k], v) for k, v in saved_state.items())
    # A fresh optimizer fed the saved state takes exactly the step the original optimizer takes next.
    restored_opt = torch.optim.AdamW(back.model.parameters(), lr=1e-2)
    optimizer_from_tensors(restored_opt, back.optimizer_state)
    fresh = tiny_model(vocab)
    fresh.load_state_dict(back.model.state_dict())
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)  # same weights, no saved moments
    idx, att = torch.tensor([[2, 5, 6, 4]]), torch.eye(4)[None, None]
    for m, o in ((model, opt), (back.model, restored_opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(idx, att).sum().backward()
        o.step()
    assert same_weights(back.model, model)
    assert not same_weights(fresh, model)  # the saved moments matter, so the check above means something
    assert int(restored_opt.state_dict()["state"][0]["step"]) == 3  # two saved steps, one more here


def test_optimizer_tensors_are_named_by_parameter_and_field():
    model = tiny_model(Vocab(WORDS))
    opt = trained_optimizer(model)
    tensors = optimizer_to_tensors(opt)
    n_params = len(list(model.parameters()))
    assert set(tensors) == {f"{i}.{name}" for i in range(n_params) for name in ("step", "exp_avg", "exp_avg_sq")}
    moment = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(tensors["0.exp_avg"], moment)
    moment += 1  # the saved tensors are copies: training on does not change a checkpoint being written
    assert not torch.equal(tensors["0.exp_avg"], moment)


def test_without_optimizer_state_no_optimizer_file_is_written(tmp_path):
    folder = save_checkpoint(make_checkpoint(optimizer_state={}), tmp_path / "ck")
    assert not (folder / "optimizer.safetensors").exists()
    assert load_checkpoint(folder, with_optimizer=True).optimizer_state == {}


def test_save_creates_missing_parents_and_overwrites_an_older_save(tmp_path):
    folder = tmp_path / "runs" / "a" / "checkpoint"  # none of these exist yet
    save_checkpoint(make_checkpoint(step=3), folder)
    later = make_checkpoint(step=9, metrics=[{"step": 9}])
    save_checkpoint(later, folder)  # the trainer saves into the same folder again and again
    back = load_checkpoint(folder)
    assert back.step == 9 and back.metrics == [{"step": 9}]


def test_a_folder_without_checkpoint_json_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"^.* is not a checkpoint \(no checkpoint.json\); pass the folder"):
        load_checkpoint(tmp_path)


def test_load_accepts_a_file_inside_the_folder(saved):
    _, folder = saved
    assert load_checkpoint(folder / "model.safetensors").path == folder
    assert load_checkpoint(str(folder / "checkpoint.json")).step == 7


def test_blank_lines_in_metrics_are_skipped_and_missing_metrics_are_empty(saved):
    _, folder = saved
    path = folder / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n   \n{"step": 2}\n', encoding="utf-8")
    assert load_checkpoint(folder).metrics == [{"step": 1}, {"step": 2}]
    path.unlink()
    assert load_checkpoint(folder).metrics == []


@contextlib.contextmanager
def ascii_locale():
    """The C locale's codeset is ASCII: a file written without an explicit encoding cannot hold 'café'."""
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_files_are_utf8_whatever_the_locale(tmp_path):
    with ascii_locale():
        if locale.getencoding().lower().replace("-", "") == "utf8":
            pytest.skip("this Python runs in UTF-8 mode; the locale cannot change the default encoding")
        folder = save_checkpoint(make_checkpoint(), tmp_path / "ck")
    assert json.loads((folder / "vocab.json").read_bytes().decode("utf-8"))["itos"][-3:] == ["café", "naïve", "."]
    assert load_checkpoint(folder).vocab.itos == Vocab(WORDS).itos
    # JSON written by other tools may hold raw UTF-8 rather than \u escapes: it is read as UTF-8 too.
    meta = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
    (folder / "checkpoint.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    (folder / "metrics.jsonl").write_text('{"note": "déjà vu"}\n', encoding="utf-8")
    with ascii_locale():
        back = load_checkpoint(folder)
    assert back.train_config["corpus"] == "données.txt" and back.metrics == [{"note": "déjà vu"}]


def rewrite_meta(folder: Path, **changes) -> None:
    path = folder / "checkpoint.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    path.write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "checkpoint.json").write_text("{not json", encoding="utf-8"), "damaged config"),
        (lambda f: (f / "vocab.json").unlink(), "damaged config or vocabulary"),
        (lambda f: (f / "vocab.json").write_text('{"itos": ["a"]}', encoding="utf-8"), "damaged config"),
        (lambda f: rewrite_meta(f, model_config=None), "damaged config"),
        (lambda f: rewrite_meta(f, model_config={"n_layer": 1, "colour": "red"}), "damaged config"),
        (lambda f: rewrite_meta(f, format_version=FORMAT_VERSION + 1), f"format {FORMAT_VERSION + 1}; expected"),
        (lambda f: rewrite_meta(f, format_version=None), "format None; expected"),
        (lambda f: rewrite_meta(f, vocab_fingerprint="0" * 16), "vocab.json does not match"),
        (lambda f: rewrite_meta(f, vocab_fingerprint=None), "vocab.json does not match"),
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors is corrupt or truncated"),
    ],
    ids=[
        "bad-json",
        "no-vocab",
        "bad-vocab",
        "no-model-config",
        "unknown-config-key",
        "newer-format",
        "no-format",
        "vocab-fingerprint",
        "no-vocab-fingerprint",
        "no-weights",
    ],
)
def test_damaged_checkpoint_is_one_clear_error(saved, damage, message):
    _, folder = saved
    damage(folder)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_config_that_disagrees_with_the_vocabulary_is_refused(saved):
    ckpt, folder = saved
    cfg = ckpt.model.config.to_dict()
    rewrite_meta(folder, model_config={**cfg, "vocab_size": cfg["vocab_size"] + 1})
    with pytest.raises(CheckpointError, match="vocab.json does not match"):
        load_checkpoint(folder)


def quoted(err: pytest.ExceptionInfo, before: str) -> str:
    """The text a message quotes in parentheses after ``before``."""
    message = str(err.value)
    assert before in message and message.endswith(")"), message
    return message.split(before, 1)[1][:-1]


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    ckpt, folder = saved
    cfg = ckpt.model.config.to_dict()
    rewrite_meta(folder, model_config={**cfg, "n_embd": 16})  # every matrix has the wrong shape
    with pytest.raises(
        CheckpointError, match=rf"^checkpoint {folder}: weights do not fit the saved config \(Error"
    ) as e:
        load_checkpoint(folder)
    assert len(quoted(e, "config (")) == 300 and quoted(e, "config (").endswith("…")  # torch's long text, cut


def test_a_config_with_more_layers_than_the_weights_is_refused_before_building(saved):
    ckpt, folder = saved
    rewrite_meta(folder, model_config={**ckpt.model.config.to_dict(), "n_layer": 2})
    with pytest.raises(CheckpointError, match=rf"^checkpoint {folder}: .*\(n_layer 2, the weights hold 1 layers\)$"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    "changes, asks",
    [
        ({"block_size": 1000}, "block_size asks for 8,000 weights"),
        ({"n_embd": 40}, "n_embd asks for 1,600 weights"),  # 40 x 40 > every weight of this 8-wide model
        ({"n_external_heads": 100, "n_learned_heads": 100}, "heads asks for 1,600 weights"),
    ],
    ids=["block_size", "n_embd", "heads"],
)
def test_each_size_the_config_asks_for_is_held_to_the_weights_file(saved, changes, asks):
    """A crafted config must not make the loader build a model bigger than the file (block_size 10**12 is 256 TB)."""
    ckpt, folder = saved
    held = sum(t.numel() for t in load_file(str(folder / "model.safetensors")).values())
    assert held < 1600  # what the cases above rely on
    rewrite_meta(folder, model_config={**ckpt.model.config.to_dict(), **changes})
    with pytest.raises(CheckpointError, match=rf"^checkpoint {folder}: .*\({asks}; the file holds {held:,}\)$"):
        load_checkpoint(folder)


def test_a_vocabulary_bigger_than_the_weights_file_is_refused(tmp_path):
    vocab = Vocab([f"w{i}" for i in range(300)])  # 304 tokens x 8 = 2,432 weights in wte alone
    ckpt = make_checkpoint(vocab=vocab, model=tiny_model(vocab), optimizer_state={})
    folder = save_checkpoint(ckpt, tmp_path / "ck")
    weights = load_file(str(folder / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if k not in ("wte.weight", "lm_head.weight")}
    save_file(kept, str(folder / "model.safetensors"))
    held = sum(t.numel() for t in kept.values())
    with pytest.raises(CheckpointError, match=rf"\(vocab_size asks for 2,432 weights; the file holds {held:,}\)$"):
        load_checkpoint(folder)


def test_a_size_exactly_as_large_as_the_file_passes_the_size_check(tmp_path):
    """The limit is inclusive: here vocab_size x n_embd equals every weight in the file (a zero-size layer tensor
    names the one layer), so the load gets past the size check and fails later, on the shapes."""
    vocab = Vocab(WORDS)
    folder = save_checkpoint(make_checkpoint(optimizer_state={}), tmp_path / "ck")
    weights = load_file(str(folder / "model.safetensors"))
    save_file(
        {"wte.weight": weights["wte.weight"], "blocks.0.ln_1.weight": torch.zeros(0)}, str(folder / "model.safetensors")
    )
    assert weights["wte.weight"].numel() == len(vocab) * 8
    with pytest.raises(CheckpointError, match="weights do not fit the saved config") as e:
        load_checkpoint(folder)
    assert "asks for" not in str(e.value)


def test_a_large_vocabulary_file_loads(tmp_path):
    """vocab.json has its own bound (64 MB), above the 1 MB one for configs: 90,000 words is about 1.3 MB."""
    vocab = Vocab([f"word{i:06d}" for i in range(90_000)])
    folder = save_checkpoint(make_checkpoint(vocab=vocab, model=tiny_model(vocab), optimizer_state={}), tmp_path / "ck")
    assert (folder / "vocab.json").stat().st_size > 1_000_000
    assert len(load_checkpoint(folder).vocab) == len(vocab)


def test_untrusted_text_in_messages_is_cut_short(saved):
    """A crafted file's values are quoted in one short line: the format and a step at most 40 characters."""
    _, folder = saved
    rewrite_meta(folder, format_version="9" * 100)
    with pytest.raises(CheckpointError, match=r"has format '9{38}…; expected 1$"):
        load_checkpoint(folder)
    rewrite_meta(folder, format_version=FORMAT_VERSION)
    path = folder / "model.safetensors"
    save_file(load_file(str(path)), str(path), metadata={"step": "8" * 100})
    with pytest.raises(CheckpointError, match=r"the weights are from step 8{39}… but checkpoint.json is at step 7"):
        load_checkpoint(folder)
    rewrite_meta(folder, model_config={"n_layer": 1, "x" * 400: 1})
    with pytest.raises(CheckpointError, match="damaged config or vocabulary") as e:
        load_checkpoint(folder)
    assert len(quoted(e, "vocabulary (")) == 300


# --- the atomic save: a new folder swapped in; what a killed save leaves is cleared -------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_on_linux_the_swap_is_one_exchange(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = Path("a"), Path("b")  # relative, as the CLI's runs/... folders are
    a.mkdir()
    b.mkdir()
    (a / "which").write_text("a")
    (b / "which").write_text("b")
    assert checkpoint_module._exchange(a, b)
    assert (a / "which").read_text() == "b" and (b / "which").read_text() == "a"
    assert not checkpoint_module._exchange(a, Path("missing"))  # a failed exchange says so


def test_an_error_quoting_a_long_path_stays_one_short_line(tmp_path):
    folder = tmp_path / ("d" * 200) / ("e" * 200) / "ck"
    save_checkpoint(make_checkpoint(optimizer_state={}), folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or truncated") as e:
        load_checkpoint(folder)
    assert len(quoted(e, "truncated (")) == 300  # the OS's message names the 400-character path


def test_without_an_atomic_exchange_two_renames_replace_the_checkpoint(tmp_path, monkeypatch):
    """Where renameat2 is missing (macOS, Windows, old kernels) the old folder is moved aside, then removed."""
    monkeypatch.setattr(checkpoint_module, "_exchange", lambda a, b: False)
    folder = tmp_path / "ck"
    save_checkpoint(make_checkpoint(step=3), folder)
    save_checkpoint(make_checkpoint(step=9), folder)
    assert load_checkpoint(folder).step == 9
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_leftovers_of_a_killed_save_are_cleared_and_never_read(tmp_path):
    folder = save_checkpoint(make_checkpoint(step=9), tmp_path / "ck")
    shutil.copytree(save_checkpoint(make_checkpoint(step=3), tmp_path / "other"), tmp_path / ".ck.old")
    shutil.rmtree(tmp_path / "other")
    (tmp_path / ".ck.new-0badf00d").mkdir()  # a save killed while writing
    assert load_checkpoint(folder).step == 9  # the moved-aside folder is only read when ck itself is gone
    save_checkpoint(make_checkpoint(step=11), folder)
    assert load_checkpoint(folder).step == 11
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_a_failed_save_leaves_the_previous_checkpoint_and_nothing_else(tmp_path):
    folder = save_checkpoint(make_checkpoint(step=3, metrics=[]), tmp_path / "ck")
    with pytest.raises(TypeError, match="not JSON serializable"):  # the save's own error, not a clean-up's
        save_checkpoint(make_checkpoint(step=9, metrics=[{"step": 9, "bad": {1, 2}}]), folder)
    assert load_checkpoint(folder).step == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_missing_or_extra_weights_are_refused(saved):
    _, folder = saved
    path = folder / "model.safetensors"
    weights = load_file(str(path))
    save_file({k: v for k, v in weights.items() if k != "ln_f.weight"}, str(path))
    with pytest.raises(CheckpointError, match=r"weights do not fit the saved config \(missing \['ln_f.weight'"):
        load_checkpoint(folder)
    gone = ("wpe.", "ln_f.", "blocks.0.ln_1.")
    save_file({k: v for k, v in weights.items() if not k.startswith(gone)}, str(path))  # 5 or more missing
    with pytest.raises(
        CheckpointError, match=r"\(missing \['wpe.weight', 'blocks.0.ln_1.weight', 'blocks.0.ln_1.bias'\]\)$"
    ):
        load_checkpoint(folder)  # at most three names: the message stays one short line
    save_file({**weights, "extra.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="weights do not fit the saved config"):
        load_checkpoint(folder)
    save_file(weights, str(path))
    assert load_checkpoint(folder).step == 7  # the untouched weights still load


def test_corrupt_optimizer_state_is_refused_only_when_asked_for(saved):
    _, folder = saved
    (folder / "optimizer.safetensors").write_bytes(b"\x00garbage" * 50)
    assert load_checkpoint(folder).step == 7  # generation never reads the optimizer state
    with pytest.raises(CheckpointError, match="optimizer.safetensors is corrupt"):
        load_checkpoint(folder, with_optimizer=True)
