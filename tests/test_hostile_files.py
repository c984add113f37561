"""Hostile and damaged files (issue 11, items 9-12 and 16): checkpoints cut by a kill or crafted by someone
else, corpora that are huge in sentences rather than bytes, cache files to import that are not what they say.

Each one must end in a consistent state or in exactly one ``error:`` line (exit code 2), never a traceback,
a hang, a silent overwrite or an allocation the size of the file's claims.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmcomp.attention import AttentionCache
from llmcomp.cli import main
from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.text.corpus import CorpusConfig, CorpusError, load_corpus, parse_corpus
from llmcomp.text.vocab import Vocab
from llmcomp.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from llmcomp.training.metrics_log import append_metric, read_jsonl
from llmcomp.training.run_folder import METRICS

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["the", "cat", "saw", "a", "dog", "."]
SPEC = {"kind": "uniform", "n_heads": 1}


def tiny_checkpoint(step: int = 7, fill: float | None = None) -> Checkpoint:
    vocab = Vocab(WORDS)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=8, n_layer=1, n_embd=8))
    if fill is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(fill)
    return Checkpoint(
        model=model,
        vocab=vocab,
        step=step,
        source_spec=dict(SPEC),
        source_fingerprint=dict(SPEC),
        train_config={"steps": 100},
        metrics=[{"step": s, "elapsed": float(s)} for s in range(max(1, step - 2), step + 1)],
        optimizer_state={"0.step": torch.tensor(float(step)), "0.exp_avg": torch.full((len(vocab), 8), float(step))},
    )


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the real command line in this process; it must exit 2 with exactly one ``error:`` line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# === item 9: a kill mid-save, and a folder that mixes two steps ============================================
#: a process that imports torch once, then forks one saver per folder it is given: each saver writes
#: checkpoints of steps 1, 2, 3, ... back to back, every weight, moment and metric equal to the step
SAVER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    from tests.test_hostile_files import tiny_checkpoint
    from llmcomp.training.checkpoint import save_checkpoint
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed savers are reaped by the kernel
    save_checkpoint(tiny_checkpoint(1), sys.argv[2])  # warm up once, so that each saver starts saving at once
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            ck, step = tiny_checkpoint(0), 0  # made once: between two saves there is only the refill
            while True:
                step += 1
                with torch.no_grad():
                    for p in ck.model.parameters():
                        p.fill_(step)
                ck.step, ck.metrics = step, [{"step": step, "elapsed": 0.0}]
                ck.optimizer_state = {k: torch.full_like(v, step) for k, v in ck.optimizer_state.items()}
                save_checkpoint(ck, line.strip())
        print(pid, flush=True)
    """
)


def consistent_step(folder: Path) -> int:
    """The step a checkpoint folder holds, after checking that every file holds that step and no other."""
    ck = load_checkpoint(folder, with_optimizer=True)
    s = float(ck.step)
    assert all(torch.all(p == s) for p in ck.model.parameters()), f"weights of another step than {ck.step}"
    assert ck.optimizer_state["0.step"].item() == s and torch.all(ck.optimizer_state["0.exp_avg"] == s)
    assert ck.metrics[-1]["step"] == ck.step
    return ck.step


def test_a_kill_at_any_point_of_a_save_leaves_one_whole_step(tmp_path):
    """10 savers killed (SIGKILL) at random points; each folder must load as one step or not at all.
    The old save replaced file by file, so most kills left weights of step n+1 beside checkpoint.json of n."""
    zygote = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(ROOT), str(tmp_path / "warm-up")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    rng = random.Random(11)
    outcomes: list[int | str] = []
    cut_short = 0
    try:
        assert zygote.stdout.readline().strip() == "ready"
        for i in range(10):
            folder = tmp_path / f"run{i}" / "checkpoint"
            zygote.stdin.write(f"{folder}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            deadline = time.monotonic() + 60
            while not (folder / "checkpoint.json").exists() and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.1))  # a save takes 5-100 ms (fsync): land anywhere in the next ones
            os.kill(pid, signal.SIGKILL)
            while True:  # gone (reaped by the zygote) before its folder is read
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.001)
            cut_short += any(folder.parent.glob(".checkpoint.new-*"))  # the kill fell inside a save
            try:
                outcomes.append(consistent_step(folder))
            except CheckpointError as e:  # acceptable, if one line; but a whole checkpoint was there to keep
                assert "\n" not in str(e)
                outcomes.append(str(e))
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert cut_short >= 5  # most kills really cut a save short (between saves there is well under 1 ms)


def test_files_from_two_steps_are_refused_with_one_line(tmp_path):
    early, late = tmp_path / "early", tmp_path / "late"
    save_checkpoint(tiny_checkpoint(3, fill=3.0), early)
    save_checkpoint(tiny_checkpoint(9, fill=9.0), late)
    assert load_checkpoint(late).step == 9
    for name, match in [
        ("model.safetensors", "the weights are from step 3 but checkpoint.json is at step 9"),
        ("optimizer.safetensors", "the optimizer moments are from step 3"),
        ("metrics.jsonl", None),
    ]:
        mixed = tmp_path / f"mixed-{name}"
        shutil.copytree(early if name == "metrics.jsonl" else late, mixed)
        shutil.copy(late / name if name == "metrics.jsonl" else early / name, mixed / name)
        with pytest.raises(
            CheckpointError, match=match or r"metrics.jsonl has a record of step 7, after the checkpoint's step 3"
        ) as err:
            load_checkpoint(mixed, with_optimizer=True)
        assert "\n" not in str(err.value)


def test_a_save_cut_between_its_two_renames_is_put_back(tmp_path):
    """Where folders cannot be swapped in one step, a save moves the old one aside, then the new one in: a
    kill between the two leaves only ``.checkpoint.old``. Loading reads it, the next save puts it back."""
    folder = tmp_path / "checkpoint"
    save_checkpoint(tiny_checkpoint(4, fill=4.0), folder)
    os.rename(folder, tmp_path / ".checkpoint.old")
    (tmp_path / ".checkpoint.new-dead").mkdir()  # and a half-written new one
    assert consistent_step(folder) == 4
    failing = tiny_checkpoint(5, fill=5.0)
    failing.metrics = [{"step": 5, "not json": object()}]  # this save fails half-way, after the weights
    with pytest.raises(TypeError):
        save_checkpoint(failing, folder)
    assert consistent_step(folder) == 4  # the one set aside was put back first, and survives a failed save
    save_checkpoint(tiny_checkpoint(5, fill=5.0), folder)
    assert consistent_step(folder) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # nothing left beside it


def test_metrics_stream_holds_each_step_once_after_a_crash_and_resume(tmp_path):
    """Train to step 6 with a checkpoint at 4, crash (the stream has 1..6), resume: 1..8 each once."""
    from llmcomp.attention import make_source
    from llmcomp.training import TrainConfig, Trainer

    corpus = parse_corpus("".join(f"the cat number {i} saw a dog .\n" for i in range(24)), name="c.txt")
    cfg = TrainConfig(steps=8, batch_size=4, eval_every=100, log_every=1, checkpoint_every=4, threads=1)
    model = GPTConfig(n_layer=1, n_embd=8)
    run = tmp_path / "run"

    def crash_at_6(record):
        if record["step"] == 6:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        Trainer(corpus, make_source("uniform"), model, cfg, run_dir=run).run(on_metric=crash_at_6)
    assert [r["step"] for r in read_jsonl(run / METRICS)] == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(run / "checkpoint").step == 4
    Trainer(corpus, make_source("uniform"), model, cfg, run_dir=run, resume_from=run / "checkpoint").run()
    assert [r["step"] for r in read_jsonl(run / METRICS)] == list(range(1, 9))
    assert [r["step"] for r in load_checkpoint(run / "checkpoint").metrics] == list(range(1, 9))


def test_a_torn_last_metrics_line_is_cut_before_appending(tmp_path):
    append_metric(tmp_path, {"step": 1, "train_loss": 2.0})
    with open(tmp_path / METRICS, "a", encoding="utf-8") as f:
        f.write('{"step": 2, "train_lo')  # a kill mid-append
    append_metric(tmp_path, {"step": 2, "train_loss": 1.5})
    append_metric(tmp_path, {"step": 3, "train_loss": 1.25})
    assert read_jsonl(tmp_path / METRICS) == [
        {"step": 1, "train_loss": 2.0},
        {"step": 2, "train_loss": 1.5},
        {"step": 3, "train_loss": 1.25},
    ]  # the torn line would otherwise sit mid-file, where reading it fails
    with open(tmp_path / METRICS, "a", encoding="utf-8") as f:
        f.write('{"step": 4, "train_loss": 1.0}')  # torn just before its newline: whole JSON, no line end
    append_metric(tmp_path, {"step": 5, "train_loss": 0.5})
    assert [r["step"] for r in read_jsonl(tmp_path / METRICS)] == [1, 2, 3, 4, 5]  # kept, not glued to 5 by "}{"


# === item 10: a corpus bounded in sentences and words, not only bytes =========================================
def test_a_million_tiny_sentences_are_refused_early_with_the_limit_and_how_to_raise_it(tmp_path, capsys):
    assert CorpusConfig.max_sentences <= 200_000 and CorpusConfig.max_total_words <= 2_000_000
    path = tmp_path / "tiny.txt"
    path.write_bytes(b"a b.\n" * 200_001)  # 1 MB, far under max_bytes; the 4.99 MB had 998,000 of them
    t0 = time.perf_counter()
    err = one_error_line(capsys, ["train", "--corpus", str(path), "--steps", "2", "--run-dir", str(tmp_path / "r")])
    assert time.perf_counter() - t0 < 30  # refused while parsing, not after scoring 200,001 sentences
    assert "more than 200,000 sentences" in err and "raise max_sentences" in err
    assert not (tmp_path / "r").exists()


def test_words_are_bounded_too():
    text = "".join(f"one two three four five six seven eight nine ten {i} .\n" for i in range(30))
    with pytest.raises(CorpusError, match=r"more than 100 words \(line 9\); the limit is 100 .*raise max_total_words"):
        parse_corpus(text, name="c.txt", config=CorpusConfig(max_total_words=100))
    with pytest.raises(CorpusError, match=r"more than 20 sentences \(line 21\)"):
        parse_corpus(text, name="c.txt", config=CorpusConfig(max_sentences=20))
    assert len(parse_corpus(text, config=CorpusConfig(max_sentences=30, max_total_words=360)).sentences) == 30


def test_a_fifo_or_device_is_never_read_as_a_corpus(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match="not a regular file"):
        load_corpus(fifo)  # opening a FIFO with no writer would block forever
    link = tmp_path / "zero.txt"
    link.symlink_to("/dev/zero")
    with pytest.raises(CorpusError, match="not a regular file"):
        load_corpus(link)


# === item 11: crafted checkpoints through the real command line ============================================
def write_meta(folder: Path, **changes) -> None:
    path = folder / "checkpoint.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    path.write_text(json.dumps(meta), encoding="utf-8")


def model_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))["model_config"]
    write_meta(folder, model_config={**cfg, **changes})


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # opening it for reading blocks until someone writes: a hang, not an error


def replace_with_link(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def nan_weights(folder: Path) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    weights["ln_f.weight"][0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"), metadata={"step": "7"})


CRAFTED = {
    "step-abc": (lambda f: write_meta(f, step="abc"), "step must be a whole number of at least 0, got 'abc'"),
    "step-negative": (lambda f: write_meta(f, step=-5), "step must be a whole number of at least 0, got -5"),
    "step-fraction": (lambda f: write_meta(f, step=7.5), "step must be a whole number"),
    "step-bool": (lambda f: write_meta(f, step=True), "step must be a whole number"),
    "dropout-5": (lambda f: model_config(f, dropout=5), "dropout must be at least 0 and below 1"),
    "n_embd-negative": (lambda f: model_config(f, n_embd=-64), "n_embd must be a whole number of at least 1"),
    "block_size-1e12": (lambda f: model_config(f, block_size=1e12), "block_size must be a whole number"),
    # a whole number passes GPTConfig: only the weights file can say it is a lie (256 TB for this model)
    "block_size-10**12": (lambda f: model_config(f, block_size=10**12), "weights do not fit the saved config"),
    "n_layer-10**9": (lambda f: model_config(f, n_layer=10**9), r"n_layer 1000000000, the weights hold 1 layers"),
    "spec-unknown-option": (
        lambda f: write_meta(f, source_spec={**SPEC, "colour": "red"}),
        "option 'colour' that the uniform source does not take",
    ),
    "spec-unknown-kind": (lambda f: write_meta(f, source_spec={"kind": "evil"}), "names no known attention source"),
    "spec-not-an-object": (lambda f: write_meta(f, source_spec="uniform"), "source_spec must be a JSON object"),
    "spec-with-a-key": (
        lambda f: write_meta(f, source_spec={"kind": "openai", "api_key": "sk-planted"}),
        "option 'api_key' that the openai source does not take",
    ),
    "spec-wrong-type": (
        lambda f: write_meta(f, source_spec={"kind": "random", "n_heads": 1, "seed": "a"}),
        "option seed must be like 0",
    ),
    "spec-huge-allocation": (
        lambda f: write_meta(f, source_spec={"kind": "random", "n_heads": 1, "max_len": 10**9}),
        "option max_len must be between 0 and 4096",
    ),
    "train_config-list": (lambda f: write_meta(f, train_config=[]), "train_config must be a JSON object"),
    "nan-weights": (nan_weights, "NaN or infinite weights"),
    "vocab-dev-zero": (lambda f: replace_with_link(f / "vocab.json", "/dev/zero"), "vocab.json is not a regular file"),
    "vocab-fifo": (lambda f: replace_with_fifo(f / "vocab.json"), "vocab.json is not a regular file"),
    "vocab-not-utf8": (lambda f: (f / "vocab.json").write_bytes(b'{"itos": ["\xff\xfe"]}'), "damaged config"),
    "weights-fifo": (lambda f: replace_with_fifo(f / "model.safetensors"), "model.safetensors is not a regular file"),
    "metrics-fifo": (lambda f: replace_with_fifo(f / "metrics.jsonl"), "metrics.jsonl is not a regular file"),
    "metrics-not-utf8": (lambda f: (f / "metrics.jsonl").write_bytes(b"\xff\xfe\n"), "metrics.jsonl is damaged"),
    "metrics-bad-step": (lambda f: (f / "metrics.jsonl").write_text('{"step": "x"}\n'), "record with step 'x'"),
    "checkpoint-json-huge": (
        lambda f: (f / "checkpoint.json").write_text(" " * 1_100_000 + "{}"),
        "over the 1,000,000-byte limit",
    ),
    "checkpoint-json-deep": (lambda f: (f / "checkpoint.json").write_text("[" * 100_000), "damaged config"),
}


@pytest.fixture
def checkpoint_dir(tmp_path) -> Path:
    return save_checkpoint(tiny_checkpoint(7), tmp_path / "run" / "checkpoint")


def test_the_untouched_checkpoint_generates(checkpoint_dir, capsys):
    """The control for the crafted ones below: every refusal there comes from the change made."""
    assert main(["generate", "--checkpoint", str(checkpoint_dir), "--seed", "1", "--max-words", "3"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.timeout(120)  # a FIFO opened, or a model of 10**9 layers built, would hang here
@pytest.mark.parametrize("craft, message", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_checkpoint_is_one_error_line(checkpoint_dir, capsys, craft, message):
    craft(checkpoint_dir)
    err = one_error_line(capsys, ["generate", "--checkpoint", str(checkpoint_dir)])
    assert re.search(message, err), err


def test_resume_refuses_moments_that_do_not_fit_the_model(tmp_path):
    """A crafted optimizer file would otherwise load and fail inside the fused AdamW step, mid-run."""
    from llmcomp.attention import make_source
    from llmcomp.training.state import resumable_checkpoint

    ck = tiny_checkpoint(7)
    ck.optimizer_state = {"0.exp_avg": torch.zeros(3, 3), "0.step": torch.tensor(7.0)}
    folder = save_checkpoint(ck, tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"cannot be resumed: optimizer.safetensors entry 0.exp_avg has shape"):
        resumable_checkpoint(folder, Vocab(WORDS), make_source("uniform"))
    ck.optimizer_state = {"zero.exp_avg": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="unknown entry 'zero.exp_avg'"):
        resumable_checkpoint(save_checkpoint(ck, tmp_path / "ck"), Vocab(WORDS), make_source("uniform"))


def test_generate_in_a_new_process_on_a_fifo_vocabulary_ends_with_one_line(checkpoint_dir):
    replace_with_fifo(checkpoint_dir / "vocab.json")
    r = subprocess.run(
        [sys.executable, "-m", "llmcomp", "generate", "--checkpoint", str(checkpoint_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and "vocab.json is not a regular file" in r.stderr


# === items 11 and 12: cache files ===========================================================================
def matrix(t: int, h: int = 1) -> list[float]:
    m = torch.ones(h, t, t).tril()
    return (m / m.sum(-1, keepdim=True)).flatten().tolist()


def tensor_line(key: str, t: int = 2, **extra) -> str:
    return json.dumps({"key": key, "shape": [1, t, t], "data": matrix(t), **extra})


def json_line(key: str, value) -> str:
    return json.dumps({"key": key, "json": value})


def cache_at(tmp_path) -> Path:
    return tmp_path / "cache.sqlite"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(json_line("k", 1).encode() + b"\n\xff\xfe\n"), "is not UTF-8 text"),
        (lambda p: os.mkfifo(p), "is not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "is not a regular file"),
        (lambda p: None, "cannot read"),  # no such file
    ],
    ids=["not-utf8", "fifo", "dev-zero", "missing"],
)
def test_a_file_that_cannot_be_imported_is_one_error_line_and_stores_nothing(tmp_path, capsys, make, message):
    path = tmp_path / "share.jsonl"
    make(path)
    err = one_error_line(capsys, ["cache", "import", str(path), "--cache", str(cache_at(tmp_path))])
    assert message in err
    cache = AttentionCache(cache_at(tmp_path))
    assert len(cache) == 0  # not even the valid first line of the non-UTF-8 file
    cache.close()


@pytest.mark.parametrize("content", [b"hello, not a database\n" * 10, b"\x00" * 4096], ids=["text", "zeros"])
def test_a_cache_that_is_not_sqlite_is_one_error_line(tmp_path, capsys, content):
    fake = tmp_path / "notes.sqlite"
    fake.write_bytes(content)
    share = tmp_path / "share.jsonl"
    share.write_text(tensor_line("a" * 64) + "\n", encoding="utf-8")
    err = one_error_line(capsys, ["cache", "import", str(share), "--cache", str(fake)])
    assert "is not an attention cache (not an SQLite database)" in err
    assert fake.read_bytes() == content  # and it was not touched
    err = one_error_line(capsys, ["cache", "stats", "--cache", str(tmp_path)])  # a folder
    assert "is not a regular file" in err


def test_import_keeps_what_the_cache_holds_and_says_so_unless_told_to_overwrite(tmp_path, capsys):
    key, new = "b" * 64, "c" * 64
    cache = AttentionCache(cache_at(tmp_path))
    mine = torch.tensor([[[1.0, 0.0], [0.25, 0.75]]])
    cache.put(key, mine)
    cache.close()
    share = tmp_path / "share.jsonl"
    share.write_text(f"{tensor_line(key)}\n{tensor_line(new)}\n", encoding="utf-8")
    args = ["cache", "import", str(share), "--cache", str(cache_at(tmp_path))]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "imported 1 new entries" in out and "kept 1 already cached with another value (--overwrite" in out
    cache = AttentionCache(cache_at(tmp_path))
    assert torch.equal(cache.get(key, 2), mine) and cache.get(new, 2) is not None
    cache.close()
    assert main(args) == 0  # again: nothing new, the same one kept, the other already there as it is
    assert "imported 0 new entries" in (out := capsys.readouterr().out) and "1 already cached as they are" in out
    assert main([*args, "--overwrite"]) == 0
    assert "replaced 1 that held another value" in capsys.readouterr().out
    cache = AttentionCache(cache_at(tmp_path))
    assert torch.allclose(cache.get(key, 2), torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]))
    cache.close()


BAD_RECORDS = {
    "row-a-list": json_line("row:" + "1" * 64, [99, -1, "x"]),  # the example
    "row-negative": json_line("row:" + "1" * 64, {"meaning": [3, -1]}),
    "row-fraction": json_line("row:" + "1" * 64, {"meaning": [3, 1.5]}),
    "row-over-100": json_line("row:" + "1" * 64, {"meaning": [101]}),
    "row-bool": json_line("row:" + "1" * 64, {"meaning": [True]}),
    "row-ragged": json_line("row:" + "1" * 64, {"meaning": [1, 2], "syntax": [1]}),
    "row-empty": json_line("row:" + "1" * 64, {}),
    "pair-two-scores": json_line("pair:" + "1" * 64, {"meaning": [1, 2]}),
    "pair-string": json_line("pair:" + "1" * 64, {"meaning": "4"}),
    "format-unknown": json_line("format:" + "1" * 64, {"host": "h", "model": "m", "format": "pickle"}),
    "format-list": json_line("format:" + "1" * 64, ["json_schema"]),
    "matrix-under-row-key": tensor_line("row:" + "1" * 64),
    "row-under-a-prefix": json_line("visitor-ab12/row:" + "1" * 64, [99, -1, "x"]),  # a web visitor's view
    "future-weight": json.dumps({"key": "d" * 64, "shape": [1, 2, 2], "data": [0.5, 0.5, 0.5, 0.5]}),
    "nan": json.dumps({"key": "d" * 64, "shape": [1, 1, 1], "data": [float("nan")]}),
    "strings-in-data": json.dumps({"key": "d" * 64, "shape": [1, 1, 1], "data": ["1"]}),
    "claims-a-huge-shape": json.dumps({"key": "d" * 64, "shape": [1, 4096, 4096], "data": [1.0]}),
    "both-kinds": json.dumps({"key": "d" * 64, "shape": [1, 1, 1], "data": [1.0], "json": 1}),
    "key-too-long": json_line("k" * 513, 1),
    "key-not-text": json.dumps({"key": 5, "json": 1}),
    "deeply-nested": '{"key": "k", "json": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "not-an-object": "[1, 2]",
}


@pytest.mark.parametrize("line", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_every_record_kind_is_checked_before_it_is_stored(tmp_path, line):
    share = tmp_path / "share.jsonl"
    share.write_text(line + "\n", encoding="utf-8")
    cache = AttentionCache(cache_at(tmp_path))
    report = cache.import_report(share)
    assert (report.added, report.rejected) == (0, 1) and len(report.reasons) == 1
    assert report.reasons[0].startswith("line 1: ") and len(report.reasons[0]) < 220
    assert len(cache) == 0
    cache.close()


def test_valid_records_of_each_kind_are_stored_and_read_back(tmp_path):
    row, pair, fmt = "row:" + "1" * 64, "pair:" + "2" * 64, "format:" + "3" * 64
    lines = [
        json_line(row, {"meaning": [3, 0, 9], "syntax": [0, 0, 100]}),
        json_line(pair, {"meaning": [4], "syntax": [0]}),
        json_line(fmt, {"host": "example.org", "model": "m", "format": "json_object"}),
        json_line("note", {"free": "form"}),  # a record of no known kind is never read as attention
        tensor_line("e" * 64, t=3),
    ]
    share = tmp_path / "share.jsonl"
    share.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cache = AttentionCache(cache_at(tmp_path))
    report = cache.import_report(share)
    assert (report.added, report.rejected) == (5, 0)
    got = cache.get_many_json([row, pair, fmt])
    assert got[row] == {"meaning": [3, 0, 9], "syntax": [0, 0, 100]} and got[fmt]["format"] == "json_object"
    assert cache.get("e" * 64, 3) is not None
    cache.close()


# === item 16: the web app's temporary folder ==================================================================
def test_the_web_apps_temporary_folder_goes_with_its_context(tmp_path):
    import gc

    from llmcomp.settings import Paths
    from llmcomp.ui.common import AppContext

    paths = Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "runs")
    ctx = AppContext.create(paths)
    tmp = ctx.tmp
    (tmp / "someone" / "download.zip").parent.mkdir(parents=True)
    (tmp / "someone" / "download.zip").write_bytes(b"PK")
    ctx.close()
    assert not tmp.exists()
    ctx = AppContext.create(paths)  # never closed: removed when collected, or at exit (weakref.finalize)
    tmp = ctx.tmp
    assert tmp.is_dir()
    del ctx
    gc.collect()
    assert not tmp.exists()
