"""Tokenizer, corpus loading and validation, vocabulary."""

import pytest

from llmcomp.text import CorpusConfig, CorpusError, Vocab, detokenize, load_corpus, parse_corpus, tokenize
from llmcomp.text.tokenizer import split_sentences


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("The Cat sat.", ["the", "cat", "sat", "."]),
        ("Don't stop", ["don't", "stop"]),
        ("Don\u2019t stop", ["don't", "stop"]),  # curly apostrophe folds to '
        ("the daughter's cat", ["the", "daughter's", "cat"]),
        ("a well-known fact", ["a", "well-known", "fact"]),
        ("wait \u2014 no", ["wait", "\u2014", "no"]),
        ("wait \u2013 no", ["wait", "\u2014", "no"]),  # en dash folds to em dash
        ("\u201cHi,\u201d she said", ['"', "hi", ",", '"', "she", "said"]),
        ("'quoted'", ["'", "quoted", "'"]),
        ("Café Ünïcode ŁÓDŹ", ["café", "ünïcode", "łódź"]),
        ("pi is 3.14, or 1,000 x", ["pi", "is", "3.14", ",", "or", "1,000", "x"]),
        ("a - b", ["a", "-", "b"]),
    ],
)
def test_tokenizer_rules(text, tokens):
    assert tokenize(text) == tokens


def test_sentence_split_keeps_closing_quotes():
    toks = tokenize('He said "stop." Then he left! Why?')
    assert split_sentences(toks) == [["he", "said", '"', "stop", ".", '"'], ["then", "he", "left", "!"], ["why", "?"]]


def test_detokenize_attaches_punctuation():
    assert detokenize(["hello", ",", "world", "."]) == "hello, world."


def lines(n, words="the cat sat on the mat"):
    return "\n".join(f"{words} number {i} ." for i in range(n))


def test_one_sentence_per_line_and_split_is_deterministic():
    c = parse_corpus(lines(50))
    assert len(c.sentences) == 50
    assert len(c.val_idx) == 5 and not set(c.val_idx) & set(c.train_idx)
    again = parse_corpus(lines(50))
    assert again.val_idx == c.val_idx
    other = parse_corpus(lines(50), config=CorpusConfig(seed=99))
    assert other.val_idx != c.val_idx


def test_paragraphs_are_joined_and_split_into_sentences():
    text = "The cat sat\non the mat. It was happy.\n\nThe dog\nbarked. " + "\n\n".join(["A b c."] * 10)
    c = parse_corpus(text)
    assert c.sentences[0] == ["the", "cat", "sat", "on", "the", "mat", "."]
    assert c.sentences[1] == ["it", "was", "happy", "."]
    assert c.sentences[2] == ["the", "dog", "barked", "."]


def test_stats():
    s = parse_corpus(lines(20)).stats()
    assert s.sentences == 20 and s.words == 20 * 9 and s.max_length == 9
    assert s.length_histogram == {9: 20}
    assert s.top_words[0] == ("the", 40)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"   \n\n  \n", "empty"),
        (b"\x00\x01\x02binary\x00" * 20, "binary"),
        ("caf\u00e9 au lait.\n".encode("latin-1") * 20, "not UTF-8"),
        (b"one. two. three.", "at least 10"),
    ],
)
def test_bad_corpus_gets_one_line_error(data, message):
    with pytest.raises(CorpusError, match=message) as e:
        parse_corpus(data, name="upload.txt")
    assert "\n" not in str(e.value)


def test_too_long_line_names_the_line():
    text = lines(12) + "\n" + " ".join(["word"] * 70) + "\n"
    with pytest.raises(CorpusError, match="line 13 has a sentence of 70 words"):
        parse_corpus(text)


def test_file_over_size_limit_is_rejected_before_reading(tmp_path):
    p = tmp_path / "big.txt"
    p.write_text(lines(200))
    with pytest.raises(CorpusError, match="limit is 1,000"):
        load_corpus(p, CorpusConfig(max_bytes=1000))
    assert p.read_text() == lines(200)  # the input is untouched


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="no corpus file"):
        load_corpus(tmp_path / "nope.txt")


def test_bundled_example_corpus_loads():
    from llmcomp.settings import EXAMPLE_CORPUS

    c = load_corpus(EXAMPLE_CORPUS)
    s = c.stats()
    assert 300 <= s.sentences <= 1000 and 200 <= s.vocab <= 2000


def test_vocab_specials_round_trip_and_unknowns():
    v = Vocab.build([["b", "a", "a"], ["c"]])
    assert v.itos[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert v.itos[4] == "a"  # most frequent first
    assert v.encode(["a", "zzz"]) == [4, v.unk_id]
    assert v.unknown(["a", "zzz", "<s>"]) == ["zzz", "<s>"]
    again = Vocab.from_json(v.to_json())
    assert again == v and again.fingerprint() == v.fingerprint()
    assert Vocab.build([["a"]]).fingerprint() != v.fingerprint()
