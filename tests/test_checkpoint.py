"""Checkpoints on their own: what a save writes, what a load gives back, and each refusal.

The model here is built directly (one tiny layer, no training), so every test runs in well under a
second; tests/test_training.py covers checkpoints written by real training runs and resume.
"""

from __future__ import annotations

import contextlib
import json
import locale
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.text.vocab import Vocab
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


def tiny_model(vocab: Vocab, seed: int = 0, **cfg) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(vocab), block_size=8, n_layer=1, n_embd=8, **cfg))


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


def make_checkpoint(**changes) -> Checkpoint:
    vocab = Vocab(WORDS)
    model = tiny_model(vocab)
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


@pytest.fixture
def saved(tmp_path) -> tuple[Checkpoint, Path]:
    ckpt = make_checkpoint()
    return ckpt, save_checkpoint(ckpt, tmp_path / "ck")


def test_round_trip_gives_back_every_field(saved):
    ckpt, folder = saved
    back = load_checkpoint(folder)
    assert same_weights(back.model, ckpt.model)
    assert back.model.lm_head.weight is back.model.wte.weight  # the tied head is not saved, and still tied
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
    ]  # and no temporary file left behind
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
    assert "lm_head.weight" not in weights and "wte.weight" in weights  # the tied copy is stored once
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


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    ckpt, folder = saved
    cfg = ckpt.model.config.to_dict()
    rewrite_meta(folder, model_config={**cfg, "n_embd": 16})  # every matrix has the wrong shape
    with pytest.raises(CheckpointError, match=r"weights do not fit the saved config \(Error"):
        load_checkpoint(folder)


def test_missing_or_extra_weights_are_refused(saved):
    _, folder = saved
    path = folder / "model.safetensors"
    weights = load_file(str(path))
    save_file({k: v for k, v in weights.items() if k != "ln_f.weight"}, str(path))
    with pytest.raises(CheckpointError, match=r"weights do not fit the saved config \(missing \['ln_f.weight'"):
        load_checkpoint(folder)
    save_file({k: v for k, v in weights.items() if not k.startswith(("wpe.", "ln_f."))}, str(path))  # 4 missing
    with pytest.raises(CheckpointError, match=r"\(missing \['wpe.weight', 'ln_f.weight', 'ln_f.bias'\]\)$"):
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
