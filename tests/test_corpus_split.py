"""One line, one sequence: ``--split lines`` never cuts a line; ``auto`` says how many lines it cut, and
loading says when the tokenizer splits most words (issue 12)."""

from __future__ import annotations

import pytest

from llmcomp.cli import main
from llmcomp.text import CorpusConfig, CorpusError, load_corpus, parse_corpus, tokenize

#: the issue's line: two binding clauses, then the recalls, with a full stop between them
BOUND = "n3 owns a x7 , n1 owns a x2 . n1 : x2 , n3 : x7 ."
PLAIN = "the cat sat on the mat ."


def mixed(bound: int, plain: int) -> str:
    return "\n".join([BOUND] * bound + [PLAIN] * plain) + "\n"


def test_a_line_with_inner_full_stops_stays_one_sequence_under_lines():
    corpus = parse_corpus(mixed(12, 0), config=CorpusConfig(split="lines"))
    assert len(corpus.sentences) == 12
    assert corpus.sentences[0] == tokenize(BOUND)  # the recall keeps its binding clause
    assert not any("were cut" in n for n in corpus.notices)


def test_lines_keeps_quoted_and_exclaimed_lines_whole_too():
    text = "\n".join(['he said "stop." then he left! why?'] * 10)
    corpus = parse_corpus(text, config=CorpusConfig(split="lines"))
    assert [len(s) for s in corpus.sentences] == [len(tokenize(text.splitlines()[0]))] * 10


def test_auto_still_cuts_lines_and_says_how_many_of_how_many():
    corpus = parse_corpus(mixed(3, 9), config=CorpusConfig(split="auto"))
    assert len(corpus.sentences) == 3 * 2 + 9
    [cut] = [n for n in corpus.notices if "were cut" in n]
    assert cut.startswith("3 of 12 lines hold more than one sentence")
    assert "--split lines" in cut and "\n" not in cut


def test_paragraphs_are_meant_to_be_cut_so_nothing_is_said():
    text = "\n\n".join(["the cat sat. the dog ran.\nit was late."] * 6)
    corpus = parse_corpus(text)  # auto reads paragraphs here
    assert len(corpus.sentences) == 18
    assert not any("were cut" in n for n in corpus.notices)


def test_a_long_line_is_refused_under_lines_with_its_line_number():
    long_line = " ".join(["word"] * 40) + " . " + " ".join(["word"] * 40) + " ."
    text = mixed(0, 12) + long_line + "\n"
    assert len(parse_corpus(text).sentences) == 14  # auto: two sentences of 41 words each
    with pytest.raises(CorpusError, match="line 13 has a sentence of 82 words"):
        parse_corpus(text, config=CorpusConfig(split="lines"))


def test_the_tokenizer_notice_comes_only_when_most_words_are_split():
    numbered = "\n".join(f"n{i} owns a x{i} ." for i in range(12))  # 24 of 26 distinct words cut
    [said] = [n for n in parse_corpus(numbered).notices if "tokenizer" in n]
    assert said.startswith("the tokenizer cuts 24 of 26 distinct words") and "(n0 -> n 0)" in said
    assert "docs/tasks.md" in said
    # exactly half cut (a1 b1 against cat dog) is not "most"; punctuation coming off a word is no cut
    half = "\n".join(["a1 b1 cat dog."] * 10)
    assert not any("tokenizer" in n for n in parse_corpus(half).notices)
    assert not any("tokenizer" in n for n in parse_corpus(mixed(0, 12)).notices)


@pytest.mark.parametrize("name", ["example.txt", "binding.txt"])
def test_the_bundled_corpora_load_without_notices(name):
    from llmcomp.settings import DATA_DIR

    assert load_corpus(DATA_DIR / name).notices == []


def test_the_cli_prints_each_notice_once_and_lines_keeps_lines_whole(tmp_path, capsys):
    path = tmp_path / "bound.txt"
    path.write_text(mixed(4, 8), encoding="utf-8")
    score = ["score", "--corpus", str(path), "--attention", "uniform", "--no-cache", "--dry-run"]
    assert main(score) == 0
    err = capsys.readouterr().err
    assert err.count("note: 4 of 12 lines hold more than one sentence") == 1
    assert main([*score, "--split", "lines"]) == 0
    assert "were cut" not in capsys.readouterr().err


def test_the_corpus_tab_shows_the_notices_under_its_message():
    from llmcomp.ui.corpus_tab import view

    message = view(parse_corpus(mixed(2, 10)), "loaded")[0]
    assert message.startswith("loaded") and "2 of 12 lines hold more than one sentence" in message
    assert view(parse_corpus(mixed(0, 12)), "loaded")[0] == "loaded"
