"""The torch-free vocabulary check used to refuse names the model already knows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.tiny import write_clip_tokenizer
from engine.vocabulary import clip_tokens, is_single_token, reads_as_words

# Common prompt words a stranger could share to hijack prompts (issue 15, item 7), and
# made-up names that must stay shareable.
READS_AS_WORDS = ["photorealistic", "highres", "4k", "bokeh", "watermark", "easynegative"]
MADE_UP = ["zorb", "sks-dog", "mychar1", "zorbix", "badhandv4", "ng_deepnegative_v1_75t"]


def test_known_words_are_single_tokens() -> None:
    """Whole CLIP words are known (case-insensitively); invented names are not."""
    assert is_single_token("cat") and is_single_token("Photo") and is_single_token("painting")
    assert not is_single_token("zorb") and not is_single_token("my-cat")


def test_vocabulary_does_not_import_torch() -> None:
    """The bot process imports engine.vocabulary without loading torch."""
    code = (
        "import sys, engine.vocabulary as v; v.is_single_token('cat'); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("word", READS_AS_WORDS)
def test_common_prompt_words_read_as_words(word: str) -> None:
    """Words CLIP knows in pieces (`photo`+`realistic`, `bo`+`keh`, a number and a unit) count."""
    assert reads_as_words(word) and reads_as_words(word.upper())


@pytest.mark.parametrize("name", MADE_UP)
def test_made_up_names_do_not_read_as_words(name: str) -> None:
    """A stray letter, a digit or a dash in the cut makes a name made-up."""
    assert not reads_as_words(name)


def test_clip_tokens_match_the_real_clip_tokenizer(tmp_path: Path) -> None:
    """The torch-free BPE cuts names exactly as transformers' CLIPTokenizer does."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(tmp_path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    for name in [*READS_AS_WORDS, *MADE_UP, "masterpiece", "verybadimagenegative", "Zorb_2"]:
        assert clip_tokens(name) == tokenizer.tokenize(name), name
