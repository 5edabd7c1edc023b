"""A1111's prompt-weighting syntax, parsed into weighted text fragments. Pure Python.

Users arrive knowing AUTOMATIC1111's syntax, so it is followed exactly as its
`parse_prompt_attention` behaves (weights, merging of equal neighbours, tolerance of unbalanced
brackets), with two deliberate differences that only touch inputs A1111 mishandles:

- `BREAK` is a chunk break wherever it appears. A1111 marks a break with weight -1 and then lets
  enclosing brackets multiply that marker, so `(a BREAK b)` there encodes the word "break" with
  weight -1.1 instead of breaking.
- A weight that is not a number, such as `(x:1.2.3)`, is kept as literal text instead of raising.

Syntax: `(x)` ×1.1, `((x))` ×1.21, `[x]` ÷1.1, `(x:1.3)` explicit weight, `\\(` `\\)` `\\[` `\\]`
`\\\\` literal characters, and an unclosed `(` or `[` applies to the end of the prompt.

`min_chunks` is a lower bound on the 75-token chunks the encoder will cut a prompt into, counted
without the tokenizer, so the bot can refuse an over-long prompt before it is queued; the worker
counts exactly.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

CHUNK_TOKENS = 75  # tokens per chunk; BOS and EOS make it 77
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

_TOKEN = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\] | \\\\ | \\     # escapes, and a lone backslash
    | \(                                      # open round
    | \[                                      # open square
    | :\s*([+-]?[.\d]+)\s*\)                  # explicit weight closing a round bracket
    | \)                                      # close round
    | ]                                       # close square
    | [^\\()\[\]:]+                           # plain text
    | :                                       # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
# Where an embedding name can stand: the encoder's name matcher needs no `\w<>-` on either side,
# so an embedding is always a whole run of these characters.
_NAME_RUN = re.compile(r"[\w<>-]+")
_NAME_SHAPE = re.compile(r"<?[a-z0-9][a-z0-9_-]{1,31}>?")
# CLIP's pre-tokenizer makes each letter run and each digit a piece of one or more tokens.
_LETTERS_OR_DIGIT = re.compile(r"[^\W\d_]+|\d")


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text sharing one weight; `is_break` marks a `BREAK` (text is empty)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


BREAK = Fragment("", 1.0, is_break=True)


def parse_prompt_attention(text: str) -> list[Fragment]:
    """Split `text` into weighted fragments and BREAK markers, A1111-style.

    >>> parse_prompt_attention("an (important) word")  # doctest: +NORMALIZE_WHITESPACE
    [Fragment(text='an ', weight=1.0, is_break=False),
     Fragment(text='important', weight=1.1, is_break=False),
     Fragment(text=' word', weight=1.0, is_break=False)]
    """
    # Mutable [text, weight] pairs; `None` text marks a BREAK, which brackets never reweight.
    parts: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for part in parts[start:]:
            if part[0] is not None:
                part[1] *= multiplier

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        weight = _number(match.group(1))
        if token.startswith("\\"):
            parts.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(parts))
        elif token == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), weight)
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for index, piece in enumerate(_BREAK.split(token)):
                if index > 0:
                    parts.append([None, 1.0])
                parts.append([piece, 1.0])

    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not parts:
        parts = [["", 1.0]]

    merged: list[list] = []
    for part in parts:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and part[0] is not None
            and previous[0] is not None
            and previous[1] == part[1]
        ):
            previous[0] += part[0]
        else:
            merged.append(part)
    return [BREAK if t is None else Fragment(t, float(w)) for t, w in merged]


def split_on_breaks(fragments: list[Fragment]) -> list[list[Fragment]]:
    """The fragments between BREAK markers (always at least one, possibly empty, group)."""
    groups: list[list[Fragment]] = [[]]
    for fragment in fragments:
        if fragment.is_break:
            groups.append([])
        else:
            groups[-1].append(fragment)
    return groups


def name_matcher(names: Collection[str]) -> re.Pattern[str] | None:
    """Bare `name` or `<name>`, word-bounded, longest name first, case-insensitive."""
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=lambda n: (-len(n), n)))
    return re.compile(
        rf"(?<![\w<>-])(?:<({alternatives})>|({alternatives}))(?![\w<>-])",
        re.IGNORECASE,
    )


def min_chunks(text: str) -> int:
    """At least how many chunks the encoder cuts `text` into, whatever embeddings it names.

    Never more than the exact count: a run that could be an embedding name counts one token
    (an embedding has at least one vector), any other run counts its letter runs and digits
    after CLIP's NFC and lowercasing (each at least one token), punctuation counts nothing, and
    every BREAK but a trailing one closes a chunk of its own.
    """
    groups = split_on_breaks(parse_prompt_attention(text))
    chunks = 0
    for number, group in enumerate(groups):
        tokens = sum(_min_tokens(fragment.text) for fragment in group)
        last = number == len(groups) - 1
        if tokens or not last or len(groups) == 1:
            chunks += max(1, math.ceil(tokens / CHUNK_TOKENS))
    return chunks


def _min_tokens(text: str) -> int:
    count = 0
    for run in _NAME_RUN.findall(unicodedata.normalize("NFC", text).lower()):
        count += 1 if _NAME_SHAPE.fullmatch(run) else len(_LETTERS_OR_DIGIT.findall(run))
    return count


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
