"""The naming rule for embeddings, in one place.

A name becomes a word in prompts, a key in SQL and a line in Discord messages, so it is held to a
narrow ASCII pattern *after* Unicode folding (NFKC, then casefold). Anything whose folded form
does not match is refused — path separators, zero-width and control characters, look-alike
letters from other scripts and SQL metacharacters all fail the same pattern. Whether the name is
already a word of the tokenizer's vocabulary is the engine's knowledge; it is handed in as a
callable so storage never imports the engine.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from storage.errors import InvalidName

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{1,31}", re.ASCII)
_DISPLAY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}", re.ASCII)
RULE = "use 2 to 32 characters from a-z, 0-9, '-' and '_', starting with a letter or a digit"

IsReservedWord = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class EmbeddingName:
    display: str  # what the owner typed, when that is plain ASCII; else the folded form
    folded: str  # what prompts match and uniqueness is checked on


def fold(raw: str) -> str:
    """The comparison form of a name: NFKC, then casefold (so 'Zorb' and 'ＺＯＲＢ' are 'zorb')."""
    return unicodedata.normalize("NFKC", raw).casefold()


def quote(raw: str) -> str:
    """A user-supplied string made safe to show in a sentence: escaped and cut short."""
    text = raw if len(raw) <= 40 else raw[:40] + "…"
    return repr(text)


def parse_name(raw: str) -> EmbeddingName:
    """The name a user asked for, or InvalidName with a sentence that states the rule."""
    folded = fold(raw)
    if NAME_PATTERN.fullmatch(folded) is None:
        raise InvalidName(f"{quote(raw)} is not a valid embedding name: {RULE}.")
    normalized = unicodedata.normalize("NFKC", raw)
    display = normalized if _DISPLAY_PATTERN.fullmatch(normalized) else folded
    if display.lower() != folded:
        display = folded
    return EmbeddingName(display=display, folded=folded)


def fold_for_lookup(raw: str) -> str | None:
    """The folded name to look up, or None when no embedding could ever have this name."""
    folded = fold(raw)
    return folded if NAME_PATTERN.fullmatch(folded) else None


class NameRules:
    """The naming rule plus the engine's "is this already a word?" checks: one for every name,
    a stricter one for shared names (a bare word in a prompt resolves to a shared name)."""

    def __init__(
        self,
        is_reserved_word: IsReservedWord | None = None,
        reads_as_words: IsReservedWord | None = None,
    ) -> None:
        self._is_reserved_word = is_reserved_word
        self._reads_as_words = reads_as_words

    def check(self, raw: str) -> EmbeddingName:
        """A valid, unreserved name, or InvalidName with one sentence."""
        name = parse_name(raw)
        if self._is_reserved_word is not None and self._is_reserved_word(name.folded):
            raise InvalidName(
                f"'{name.folded}' is already a word the model knows; "
                "pick a made-up word like 'zorb'."
            )
        return name

    def check_shareable(self, name: EmbeddingName) -> None:
        """Refuse, with one sentence, a name that would read as ordinary words in a prompt."""
        if self._reads_as_words is not None and self._reads_as_words(name.folded):
            raise InvalidName(
                f"'{name.folded}' reads as ordinary words to the model, so it cannot be a shared "
                f"name; pick a made-up word like 'zorb', or add a digit as in '{name.folded}1'."
            )
