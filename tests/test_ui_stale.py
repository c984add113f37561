"""No stale view, the server's half: a heatmap is drawn only for the source the session holds when it is
done, and the session records which source the heatmap on screen was drawn for (``drawn_for``), so that a
field's change event handled after a draw leaves a plot made for that very form in place (the browser half
is tests/test_ui_stale_browser.py)."""

from __future__ import annotations

from test_key_policy import app_context

from llmcomp.app.sources import SourceSettings
from llmcomp.text import Corpus
from llmcomp.ui.attention_actions import heatmap
from llmcomp.ui.state import Session

WORDS = ["the", "cat", "sat", "on", "the", "mat", "."]
UNIFORM, PREVIOUS = SourceSettings(kind="uniform"), SourceSettings(kind="previous")


class EditedWhileComputing(Session):
    """A session whose form another request changes while the heatmap is computed: every read of
    ``settings`` after the first sees the edit (as a field's change event, handled meanwhile, would)."""

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if name == "settings":
            object.__setattr__(self, "settings", PREVIOUS)
        return value


def test_a_heatmap_is_drawn_for_the_source_it_was_computed_for(tmp_path):
    ctx = app_context(tmp_path)
    state = Session(settings=UNIFORM, corpus=Corpus([WORDS] * 4, name="cats"))
    fig, line, _ = heatmap(ctx, state, 1, 0)
    assert fig is not None and "uniform" in fig.layout.title.text
    assert state.drawn_for == UNIFORM


def test_a_source_changed_while_computing_draws_nothing_and_says_why(tmp_path):
    ctx = app_context(tmp_path)
    state = EditedWhileComputing(settings=UNIFORM, corpus=Corpus([WORDS] * 4, name="cats"))
    fig, line, _ = heatmap(ctx, state, 1, 0)
    assert fig is None  # computed for uniform, but the form now says previous word
    assert "the source is now" in line and PREVIOUS.label() in line
    assert state.drawn_for is None  # nothing on screen: a later change must clear, never keep, what is there
