"""Messages that quote untrusted text (a file's name or words, an imported record) reach a terminal as one
safe line: control characters escaped, whitespace collapsed, length bounded (issue 11, item 14 and 16)."""

from __future__ import annotations

import json

import pytest

from llmcomp.cli import main
from llmcomp.errors import LLMCompError, one_line
from llmcomp.text.corpus import CorpusError, parse_corpus

ESC, BEL, BS = "\x1b", "\x07", "\x08"
RAW_CONTROLS = ("\x1b", "\x07", "\x08", "\x9b", "\x00", "\x7f")


def lines(n: int) -> str:
    return "".join(f"the cat number {i} sat on the mat .\n" for i in range(n))


def assert_safe(text: str) -> None:
    """No raw control character (ESC, BEL, BS, CSI, NUL, DEL) anywhere in what a person is shown."""
    assert not any(c in text for c in RAW_CONTROLS), repr(text)


# --- one_line itself ------------------------------------------------------------------------------------
def test_one_line_escapes_control_characters_and_collapses_whitespace():
    text = f"a\tb\n\n  c{ESC}[2J{BEL}d{BS}e\x9bf\x7fg\u202eh\r\nend"
    out = one_line(text)
    assert out == "a b c\\x1b[2J\\x07d\\x08e\\x9bf\\x7fg\\u202eh end"
    assert_safe(out)
    assert "\n" not in out and "\u202e" not in out  # a right-to-left override would make the line lie


def test_one_line_cuts_long_text_to_the_limit_and_says_so():
    out = one_line("x" * 1000, limit=50)
    assert len(out) == 50 and out.endswith("…")
    assert one_line("short", limit=50) == "short"  # nothing cut, nothing added
    assert len(one_line(ESC * 1000)) == 400  # the default limit holds after escaping (4 characters each)


def test_one_line_of_an_exception_is_its_message_or_its_type():
    assert one_line(ValueError(f"bad\n{ESC}[31mred")) == "bad \\x1b[31mred"
    assert one_line(KeyError()) == "KeyError"  # an empty message still says something
    assert one_line(LLMCompError("   ")) == "LLMCompError"


# --- the command line prints every error through it -----------------------------------------------------
def test_cli_error_quoting_a_hostile_file_name_is_one_escaped_line(tmp_path, capsys):
    name = tmp_path / f"no{ESC}]0;owned{BEL}such{BS}\nfile.txt"  # sets the window title, rings, spans lines
    assert main(["train", "--corpus", str(name), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no corpus file at "), err
    assert_safe(err)
    assert "\\x1b]0;owned\\x07such\\x08 file.txt" in err  # escaped, still readable


def test_cli_prints_a_library_error_quoting_raw_text_as_one_escaped_line(tmp_path, capsys):
    """The checkpoint loader quotes the path as given: the command line's printing is what makes it safe."""
    folder = tmp_path / f"ck{ESC}[2J{BEL}\nnext"
    folder.mkdir()
    assert main(["generate", "--checkpoint", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert_safe(err)
    assert "ck\\x1b[2J\\x07 next is not a checkpoint" in err


# --- corpora: control characters are refused, naming the line --------------------------------------------
@pytest.mark.parametrize("char", [ESC, BEL, BS, "\x9b", "\x7f"])
def test_a_control_character_in_a_corpus_is_refused_naming_its_line(char):
    text = lines(12) + f"the {char}[31mred cat .\n" + lines(3)
    with pytest.raises(CorpusError, match=r"upload\.txt line 13 holds a control character") as err:
        parse_corpus(text.encode(), name="upload.txt")
    msg = str(err.value)
    assert_safe(msg) and "\n" not in msg
    assert f"\\x{ord(char):02x}" in msg  # which character, written so that it cannot act


def test_tabs_form_feeds_and_windows_line_ends_are_still_plain_text():
    text = lines(11).replace(" sat", "\tsat") + "\f" + lines(1).replace("\n", "\r\n")
    assert len(parse_corpus(text.encode(), name="ok.txt").sentences) == 12


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_called_utf16_not_binary(encoding):
    data = lines(12).encode(encoding)
    if not encoding.endswith(("le", "be")):
        assert data[:2] in (b"\xff\xfe", b"\xfe\xff")  # Python writes a byte-order mark for these
    else:
        data = ("\ufeff" + lines(12)).encode(encoding)  # what Notepad's "Unicode" saves: a BOM, then the text
    with pytest.raises(CorpusError) as err:
        parse_corpus(data, name="notes.txt")
    msg = str(err.value)
    assert "UTF-16" in msg or "UTF-32" in msg
    assert "save it as UTF-8" in msg and "binary" not in msg


# --- cache import: what it reports quotes the file names safely -----------------------------------------
def test_cache_import_report_is_escaped(tmp_path, capsys):
    bad = tmp_path / "share.jsonl"
    bad.write_text(json.dumps({"key": "row:" + "1" * 64, "json": [99, -1, "x"]}) + "\n", encoding="utf-8")
    cache = tmp_path / f"c{ESC}]0;owned{BEL}.sqlite"  # a cache named to retitle the terminal
    assert main(["cache", "import", str(bad), "--cache", str(cache)]) == 1  # a line was rejected
    out = capsys.readouterr()
    text = out.out + out.err
    assert_safe(text)
    assert "c\\x1b]0;owned\\x07.sqlite" in out.out and "rejected 1" in out.out
    assert out.err.startswith("rejected line 1: ") and out.err.count("\n") == 1
