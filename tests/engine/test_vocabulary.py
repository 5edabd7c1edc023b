"""The torch-free vocabulary check used to refuse names the model already knows."""

from __future__ import annotations

import subprocess
import sys

from engine.vocabulary import is_single_token


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
