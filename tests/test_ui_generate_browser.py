"""The Generate tab as a playground, in real headless Chromium (the fixtures of test_ui_browser.py):
the next-word probabilities table, the note when the text recites a training sentence, and an error
that clears the last text, heatmap and table. Screenshots: test-output/gen-*.png."""

from __future__ import annotations

import pytest
from test_ui_browser import browser, choose, fill, new_page, server, shot, tab, upload, wait_text  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PARROT = "\n".join(["the cat sat on the mat ."] * 12)  # learned by heart in a few dozen steps


def heatmap_drawn(page) -> bool:
    return page.evaluate("() => !!document.querySelector('#gen-heatmap .js-plotly-plot')")


def test_probabilities_copy_note_and_an_error_that_clears_the_last_generation(browser, server, tmp_path):  # noqa: F811
    corpus = tmp_path / "parrot.txt"
    corpus.write_text(PARROT, encoding="utf-8")
    ctx, page = new_page(browser, server)
    upload(page, corpus)
    wait_text(page, "#corpus-message", "loaded parrot.txt: 12 sentences")
    tab(page, "2 · Attention")
    choose(page, "source-kind", "Baseline: previous word")
    tab(page, "3 · Train")
    fill(page, "#train-steps input", 120)
    fill(page, "#train-batch input", 8)
    fill(page, "#train-eval input", 40)
    fill(page, "#train-layers input[type=number]", 1)
    choose(page, "train-width", "16")
    page.click("#start-btn")
    wait_text(page, "#train-status", "finished")

    tab(page, "4 · Generate")
    page.wait_for_function("() => document.querySelector('#gen-checkpoint input')?.value?.length > 0")
    fill(page, "#gen-temperature input[type=number]", 0)
    fill(page, "#gen-prompt textarea", "the cat")
    page.click("#gen-btn")
    page.wait_for_function("() => document.querySelector('#gen-text textarea')?.value === 'the cat sat on the mat.'")
    wait_text(page, "#gen-notes", "copies training sentence")
    assert "of parrot.txt word for word" in page.inner_text("#gen-notes")
    wait_text(page, "#gen-probs", "likeliest next words")
    table = page.inner_text("#gen-probs")
    for word in ("sat", "mat"):
        assert word in table
    page.wait_for_function(
        "() => document.querySelector('#gen-heatmap .js-plotly-plot')?.data?.[0]?.type === 'heatmap'"
    )
    shot(page, "gen-01-probabilities-and-copy-note")

    fill(page, "#gen-prompt textarea", "zebra")
    page.click("#gen-btn")
    wait_text(page, "#gen-notes", "none of the prompt words are in the vocabulary")
    notes = page.inner_text("#gen-notes")
    assert "e.g. the, cat" in notes and ", ." not in notes and "e.g. ." not in notes  # words, never "."
    page.wait_for_function("() => document.querySelector('#gen-text textarea')?.value === ''")
    page.wait_for_function("() => !document.querySelector('#gen-heatmap .js-plotly-plot')")
    assert "sat" not in page.inner_text("#gen-probs")
    assert "copies training sentence" not in notes
    shot(page, "gen-02-error-clears-the-last-generation")
    ctx.close()
