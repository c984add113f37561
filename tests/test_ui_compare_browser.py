"""The Compare tab in a real headless Chromium: runs of two corpora (written with the library's own writers
into the app's runs folder) are never ranked together; smoothing, the time axis, show/hide, rename and
delete-with-confirm work as a person uses them. Screenshots go to ``test-output/`` (compare-*.png).
Fixtures and helpers come from tests/test_ui_browser.py (its ``server`` starts ``python app.py``)."""

from __future__ import annotations

import shutil
import time

import pytest
from test_ui_browser import browser, choose, fill, new_page, server, shot, tab, wait_text  # noqa: F401

from llmcomp.attention import make_source
from llmcomp.model import GPTConfig
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.run_folder import RunRecord, write_record

pytestmark = [pytest.mark.browser, pytest.mark.slow]
A = parse_corpus("\n".join(generate_binding_corpus(40, seed=3)), name="binding.txt")
B = parse_corpus("\n".join(generate_binding_corpus(30, seed=9)), name="upload.txt")
FIGURE = "document.querySelector('#compare-plot .js-plotly-plot')"


@pytest.fixture(scope="module")
def runs(server, tmp_path_factory):  # noqa: F811
    """Three finished runs in the app's runs folder: two on corpus A (uniform seed 0, previous seed 1),
    one on corpus B, the newest. Trained for real (a few steps), recorded by the library's writers."""
    root = server["home"] / "runs"
    base = tmp_path_factory.mktemp("trained")
    made = {}
    for name, corpus, kind, seed, steps in (("a-uniform", A, "uniform", 0, 30), ("a-previous", A, "previous", 1, 30),
                                            ("b-uniform", B, "uniform", 0, 12)):  # fmt: skip
        cfg = TrainConfig(steps=steps, batch_size=8, eval_every=3, log_every=3, seed=seed, patience=0)
        source = make_source(kind)
        Trainer(corpus, source, GPTConfig(n_layer=1, n_embd=16), cfg, run_dir=base / name).run()
        path = shutil.copytree(base / name, root / name)
        write_record(path, RunRecord.start(kind, corpus, source, seed=seed, status="finished"))
        made[name] = path
        time.sleep(0.05)
    return made


def figure(page) -> dict:
    return page.evaluate(
        f"() => {{ const d = {FIGURE}; return {{names: d.data.map(t => t.name), title: d.layout.title?.text || '',"
        " x: d.layout.xaxis.title?.text || '', dash: d.data.map(t => t.line?.dash || ''),"
        " y: d.data.map(t => Array.from(t.y)) }; }"
    )


def wait_figure(page, condition: str) -> None:
    page.wait_for_function(f"() => {{ const d = {FIGURE}; return !!d && !!d.data && ({condition}); }}")


def test_compare_groups_by_corpus_smooths_hides_renames_and_deletes_after_asking(browser, server, runs):  # noqa: F811
    ctx, page = new_page(browser, server)
    tab(page, "5 · Compare")  # showing the tab lists the runs: the newest run's corpus first
    wait_text(page, "#compare-message", "1 run(s) on this corpus; 1 other corpus(es)")
    wait_text(page, "#compare-corpus-info", "upload.txt: 30 sentences")
    assert "b-uniform" in page.inner_text("#compare-table") and "a-uniform" not in page.inner_text("#compare-table")
    shot(page, "compare-01-newest-corpus")

    choose(page, "compare-corpus", f"binding.txt · {A.sha256[:8]} · 2 runs")
    wait_text(page, "#compare-message", "2 run(s) on this corpus")
    wait_text(page, "#compare-corpus-info", "binding.txt: 40 sentences")
    table = page.inner_text("#compare-table")
    assert "a-uniform" in table and "a-previous" in table and "b-uniform" not in table
    assert A.sha256[:12] in table and "previous (1 head)" in table
    wait_figure(page, "d.data.length === 4")  # validation and train for each run
    fig = figure(page)
    assert sorted(fig["names"]) == sorted(f"{r} · {s}" for r in ("a-uniform", "a-previous")
                                          for s in ("validation", "train"))  # fmt: skip
    assert fig["dash"].count("dash") == 2 and fig["x"] == "step"
    raw = fig["y"][1]
    shot(page, "compare-02-corpus-a")

    fill(page, "#compare-smoothing input[type=number]", 0.9)
    wait_figure(page, "(d.layout.title?.text || '').includes('EMA 0.9')")
    smooth = figure(page)["y"][1]
    jumps = lambda ys: max(abs(a - b) for a, b in zip(ys, ys[1:], strict=False))  # noqa: E731
    assert len(smooth) == len(raw) and jumps(smooth) < jumps(raw)
    page.get_by_label("training time (s)").check()
    wait_figure(page, "d.layout.xaxis.title?.text === 'training time (s)'")
    shot(page, "compare-03-smoothed-time-axis")

    page.locator("#compare-shown").get_by_label("a-previous").uncheck()
    wait_figure(page, "d.data.length === 2")
    assert all(n.startswith("a-uniform") for n in figure(page)["names"])
    page.locator("#compare-train input[type=checkbox]").uncheck()
    wait_figure(page, "d.data.length === 1")
    shot(page, "compare-04-one-run-shown")

    page.click("#compare-edit")  # the accordion
    choose(page, "compare-run", "a-previous")
    fill(page, "#compare-name textarea, #compare-name input", "previous, long run")
    page.click("#compare-rename")
    wait_text(page, "#compare-edit-message", "a-previous is now shown as previous, long run")
    wait_text(page, "#compare-table", "previous, long run")
    assert runs["a-previous"].is_dir()  # the folder keeps its name
    # the refresh after a rename keeps the run picked and the run hidden from the plot
    assert "previous, long run" in page.input_value("#compare-run input")
    assert not page.locator("#compare-shown").get_by_label("previous, long run").is_checked()
    assert all(n.startswith("a-uniform") for n in figure(page)["names"])
    shot(page, "compare-05-renamed")

    cache = server["home"] / "attention-cache.sqlite"
    cache_before = cache.read_bytes() if cache.exists() else None
    choose(page, "compare-run", "a-uniform")
    page.click("#compare-delete")
    wait_text(page, "#compare-confirm-text", "Delete a-uniform (a-uniform)?")
    assert runs["a-uniform"].is_dir()  # asking deletes nothing
    shot(page, "compare-06-delete-asks")
    page.click("#compare-delete-no")
    wait_text(page, "#compare-edit-message", "nothing deleted")
    assert runs["a-uniform"].is_dir() and not page.locator("#compare-confirm-text").is_visible()
    page.click("#compare-delete")
    wait_text(page, "#compare-confirm-text", "Delete a-uniform")
    page.click("#compare-delete-yes")
    wait_text(page, "#compare-edit-message", "deleted a-uniform")
    wait_text(page, "#compare-message", "1 run(s) on this corpus")
    assert not runs["a-uniform"].exists() and runs["a-previous"].is_dir() and runs["b-uniform"].is_dir()
    assert (cache.read_bytes() if cache.exists() else None) == cache_before
    assert "a-uniform" not in page.inner_text("#compare-table")
    shot(page, "compare-07-deleted")
    ctx.close()
