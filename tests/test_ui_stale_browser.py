"""No stale view, in a real headless Chromium: every output that depends on an input is redrawn or
cleared when that input changes or an error is shown, and a reload restores the corpus and source.

The app runs as ``python app.py`` (the fixtures of tests/test_ui_browser.py); screenshots go to
``test-output/``.
"""

from __future__ import annotations

import pytest
from test_ui_browser import browser, choose, fill, new_page, server, shot, tab, upload, wait_text  # noqa: F401

from llmcomp.text.binding import generate_binding_corpus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PLOT = "document.querySelector('#{id} .js-plotly-plot')"
GAUSSIAN = "Baseline: Gaussian (previous and current word)"
TITLE = "() => " + PLOT.format(id="attention-heatmap") + "?.layout?.title?.text || ''"


def has_plot(page, elem_id: str) -> bool:
    return page.evaluate("() => !!" + PLOT.format(id=elem_id) + "?.data?.length")


def plot_agrees_with_sentence_line(page) -> None:
    """Wait until the heatmap is drawn and its rows are the words of the sentence the line names."""
    page.wait_for_function("() => " + PLOT.format(id="attention-heatmap") + "?.data?.[0]?.type === 'heatmap'")
    line = page.inner_text("#sentence-text").split(":", 1)[1].rsplit(" · ", 1)[0]
    rows = page.evaluate("() => " + PLOT.format(id="attention-heatmap") + ".layout.yaxis.ticktext")
    assert " ".join(r.rsplit(" (", 1)[0] for r in rows).replace(" ", "") == line.replace(" ", ""), (rows, line)


def sentence_no(page) -> str:
    return page.input_value("#sentence-no input")


def test_attention_views_follow_their_inputs(browser, server, tmp_path):  # noqa: F811
    corpus = tmp_path / "stale.txt"
    corpus.write_text("\n".join(generate_binding_corpus(30, seed=5)) + "\n")
    ctx, page = new_page(browser, server)
    upload(page, corpus)
    wait_text(page, "#corpus-message", "loaded stale.txt")
    # the picker names the corpus in use: the upload, not the bundled file it started on
    page.wait_for_function("() => document.querySelector('#bundled-corpus input')?.value?.includes('stale.txt')")
    shot(page, "s01-picker-names-the-upload")

    # after Score the number box names the sentence the plot shows
    tab(page, "2 · Attention")
    choose(page, "source-kind", "Baseline: previous word")
    fill(page, "#sentence-no input", 6)
    page.click("#score-btn")
    wait_text(page, "#score-progress", "finished")
    wait_text(page, "#sentence-text", "Sentence 0 of 29")
    page.wait_for_function("() => document.querySelector('#sentence-no input').value === '0'")
    plot_agrees_with_sentence_line(page)
    shot(page, "s02-score-box-and-plot-agree")

    # a typed sentence number redraws the plot: the box and the plot agree without pressing Show
    fill(page, "#sentence-no input", 4)
    wait_text(page, "#sentence-text", "Sentence 4 of 29")

    # side by side and difference: drawn for sentence 4, gone once the sentence changes
    page.click("#compare-accordion")
    page.click("#compare-btn")
    wait_text(page, "#compare-sources-message", "sentence 4")
    page.wait_for_function("() => " + PLOT.format(id="difference") + "?.data?.[0]?.type === 'heatmap'")
    page.click("#next-sentence")
    wait_text(page, "#sentence-text", "Sentence 5 of 29")
    page.wait_for_function("() => !" + PLOT.format(id="difference") + "?.data?.length")
    assert not has_plot(page, "side-by-side")
    assert "sentence 4" not in page.inner_text("#compare-sources-message")
    shot(page, "s03-compare-panels-cleared-on-a-new-sentence")

    # the source changes: the heatmap drawn for the old one goes, and the line says why
    choose(page, "source-kind", "Baseline: uniform")
    wait_text(page, "#sentence-text", "the source is now")
    assert not has_plot(page, "attention-heatmap")
    assert page.inner_text("#score-progress").strip() == ""  # "scored with previous" no longer applies
    page.click("#show-btn")
    page.wait_for_function(f"() => ({TITLE})().includes('uniform')")
    ctx.close()


def test_an_error_and_a_stale_title_go_when_the_field_is_corrected(browser, server):  # noqa: F811
    ctx, page = new_page(browser, server)
    tab(page, "2 · Attention")  # the local LLM on the bundled corpus
    fill(page, "#local-layers textarea", "last-4")
    page.click("#show-btn")
    page.wait_for_function(f"() => ({TITLE})().includes('last-4')", timeout=180_000)
    fill(page, "#local-layers textarea", "all")  # the title said last-4 while the box said all
    wait_text(page, "#sentence-text", "the source is now local LLM (layers all")
    assert "last-4" not in page.evaluate(TITLE)
    shot(page, "s04-title-never-disagrees-with-the-form")

    fill(page, "#local-layers textarea", "40")
    page.click("#show-btn")
    page.locator("#sentence-text .llmc-error").wait_for()  # not the "source is now ... layers 40" line before it
    assert "40" in page.inner_text("#sentence-text .llmc-error")
    assert not has_plot(page, "attention-heatmap")  # no plot beside the error
    shot(page, "s05-layer-40-error")
    fill(page, "#local-layers textarea", "all")
    wait_text(page, "#sentence-text", "the source is now local LLM (layers all")
    assert page.locator("#sentence-text .llmc-error").count() == 0
    shot(page, "s06-error-gone-after-the-fix")
    ctx.close()


# While window.__hold is set, direct (queue=False) requests such as a field's change event are held back
# until window.__release(): a loaded server may handle that event after a click made later.
HOLD_CHANGES = """
const realFetch = window.fetch.bind(window);
window.__held = [];
window.__answered = 0;
window.fetch = (input, init) => {
  const url = String(input?.url ?? input);
  if (!window.__hold || !url.includes('/run/predict')) return realFetch(input, init);
  return new Promise(resolve => window.__held.push(resolve))
    .then(() => realFetch(input, init))
    .then(response => { window.__answered += 1; return response; });
};
window.__release = () => { const held = window.__held; window.__held = []; held.forEach(go => go()); return held.length; };
"""


def held_back(page, change) -> int:
    """Do ``change`` (a field edit) with its change events held back; how many were held."""
    page.evaluate("() => { window.__hold = true; }")
    change()
    page.wait_for_function("() => window.__held.length > 0")
    return page.evaluate("() => { window.__hold = false; return window.__held.length; }")


def release(page, held: int) -> None:
    """Let the held change events through, and wait until the server has answered them all."""
    page.evaluate("() => window.__release()")
    page.wait_for_function(f"() => window.__answered >= {held}")
    page.wait_for_timeout(1500)  # their outputs, had they any, are on the page by now


def test_show_draws_what_the_form_says_when_the_fields_change_arrives_late(browser, server):  # noqa: F811
    ctx, page = new_page(browser, server, init_script=HOLD_CHANGES)
    tab(page, "2 · Attention")  # the local LLM on the bundled corpus
    held = held_back(page, lambda: fill(page, "#local-layers textarea", "last-4"))
    page.click("#show-btn")  # drawn for last-4, the form's value, not the session's older "all"
    page.wait_for_function(f"() => ({TITLE})().includes('last-4')", timeout=180_000)
    release(page, held)  # the change arrives after the plot it would have cleared
    assert "last-4" in page.evaluate(TITLE)  # a plot drawn for this very form stays
    assert "the source is now" not in page.inner_text("#sentence-text")
    shot(page, "s10-late-change-keeps-the-plot-of-the-form")
    ctx.close()


def test_start_trains_the_source_the_form_shows_when_its_change_arrives_late(browser, server):  # noqa: F811
    ctx, page = new_page(browser, server, init_script=HOLD_CHANGES)
    tab(page, "2 · Attention")
    held = held_back(page, lambda: choose(page, "source-kind", "Baseline: previous word"))
    tab(page, "3 · Train")
    fill(page, "#train-steps input", 6)
    fill(page, "#train-eval input", 3)
    fill(page, "#train-layers input[type=number]", 1)
    page.click("#start-btn")  # the session still says local LLM: the form must go in first
    wait_text(page, "#train-message", "started")
    assert "previous (1 head)" in page.inner_text("#train-message")
    release(page, held)
    wait_text(page, "#train-status", "finished")
    shot(page, "s11-start-trains-the-form-source")
    ctx.close()


def test_a_reload_restores_the_corpus_and_source_but_never_the_key(browser, server, tmp_path):  # noqa: F811
    corpus = tmp_path / "kept.txt"
    corpus.write_text("\n".join(generate_binding_corpus(20, seed=6)) + "\n")
    key = "planted-reload-key-must-not-come-back"
    ctx, page = new_page(browser, server)
    upload(page, corpus)
    wait_text(page, "#corpus-message", "loaded kept.txt")
    tab(page, "2 · Attention")
    choose(page, "source-kind", "OpenAI-compatible API")
    fill(page, "#openai-key input", key)
    fill(page, "#openai-model textarea", "my-model")
    page.click("#openai-mode label:has-text('pair')")
    choose(page, "source-kind", GAUSSIAN)
    page.locator("#source-heads input[type=number]").fill("3")
    page.locator("#source-heads input[type=number]").press("Enter")
    wait_text(page, "#sentence-text", "the source is now gaussian (3 heads)")  # the server has the change

    page.reload()
    wait_text(page, "#corpus-summary", "kept.txt")
    wait_text(page, "#corpus-message", "restored after the reload")
    page.wait_for_function("() => document.querySelector('#bundled-corpus input')?.value?.includes('kept.txt')")
    tab(page, "2 · Attention")
    page.wait_for_function(f"() => document.querySelector('#source-kind input')?.value === '{GAUSSIAN}'")
    assert page.input_value("#source-heads input[type=number]") == "3"
    choose(page, "source-kind", "OpenAI-compatible API")
    assert page.input_value("#openai-model textarea") == "my-model"
    assert page.locator("#openai-mode input[value=pair]").is_checked()
    assert page.input_value("#openai-key input") == ""  # the key is never kept
    assert key not in page.content()
    choose(page, "source-kind", GAUSSIAN)
    page.click("#show-btn")
    wait_text(page, "#sentence-text", "Sentence 0 of 19")  # the restored corpus is the session's too
    plot_agrees_with_sentence_line(page)
    shot(page, "s07-reload-restored")
    ctx.close()


def test_a_long_line_names_what_the_page_offers(browser, server, tmp_path):  # noqa: F811
    long = tmp_path / "long.txt"
    long.write_text("\n".join(["the cat sat on the mat."] * 12 + [" ".join(["word"] * 80)]) + "\n")
    ctx, page = new_page(browser, server)
    page.click("#corpus-split-mode label:has-text('lines')")
    upload(page, long)
    wait_text(page, "#corpus-message", "80 words")
    text = page.inner_text("#corpus-message")
    assert "choose split auto" in text and "max_words" not in text and "still using example.txt" in text
    shot(page, "s08-long-line-message")
    ctx.close()


def test_an_estimate_goes_when_the_source_changes_and_stays_for_its_own(browser, server):  # noqa: F811
    ctx, page = new_page(browser, server)
    tab(page, "2 · Attention")
    choose(page, "source-kind", "Baseline: previous word")
    wait_text(page, "#sentence-text", "the source is now previous")  # the server has the change
    page.click("#estimate-btn")
    wait_text(page, "#estimate", "free")
    page.wait_for_timeout(1000)  # the picker's own change has been handled: the estimate made for it stays
    assert "free" in page.inner_text("#estimate")
    choose(page, "source-kind", GAUSSIAN)
    page.wait_for_function("() => !document.querySelector('#estimate').innerText.includes('free')")
    ctx.close()


def test_the_answer_field_follows_the_mode_and_the_devices_are_this_machines(browser, server):  # noqa: F811
    """Sparse answers exist in sentence mode only: another mode hides the field and sets it back to dense; top-k
    shows for sparse only. The LLM device list is what this machine has, filled once the page has loaded."""
    ctx, page = new_page(browser, server)
    tab(page, "2 · Attention")
    choose(page, "source-kind", "OpenAI-compatible API")
    page.wait_for_selector("#openai-answer", state="visible")
    assert not page.locator("#openai-top-k").is_visible()
    page.click("#openai-answer label:has-text('sparse')")
    page.wait_for_selector("#openai-top-k", state="visible")
    page.click("#openai-mode label:has-text('prefix')")
    page.wait_for_selector("#openai-answer", state="hidden")
    page.wait_for_selector("#openai-top-k", state="hidden")
    page.click("#openai-mode label:has-text('sentence')")
    page.wait_for_selector("#openai-answer", state="visible")
    assert page.locator("#openai-answer input[value=dense]").is_checked()  # set back, not left at sparse
    choose(page, "source-kind", "Local LLM: SmolLM2-135M, offline (default)")
    page.click("#source-advanced-box")
    page.click("#local-device input")
    options = [o.split("\n")[-1] for o in page.get_by_role("option").all_inner_texts()]  # less the ✓ mark
    assert options == ["auto", "cpu"], options  # this machine has no GPU: nothing else is offered
    shot(page, "s09-answer-and-device-fields")
    ctx.close()
