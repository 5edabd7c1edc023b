"""A1111 prompt-weighting syntax: the parser's fragments and weights."""

from __future__ import annotations

import pytest

from engine.prompt import BREAK, Fragment, parse_prompt_attention, split_on_breaks


def _pairs(text: str) -> list[tuple[str, float]]:
    return [(f.text, round(f.weight, 10)) for f in parse_prompt_attention(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("((x))", [("x", 1.21)]),
        ("[x]", [("x", round(1 / 1.1, 10))]),
        ("[[x]]", [("x", round(1 / 1.21, 10))]),
        ("(x:1.3)", [("x", 1.3)]),
        ("(x: 0.5 )", [("x", 0.5)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.573),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1),
            ],
        ),
        ("", [("", 1.0)]),
    ],
)
def test_weights_match_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    """Weights and merging follow A1111's parse_prompt_attention (its own doctest cases)."""
    assert _pairs(text) == expected


def test_escapes_are_literal_characters() -> None:
    """\\( \\) \\[ \\] and \\\\ produce the characters themselves with weight 1."""
    assert _pairs(r"\(literal\]") == [("(literal]", 1.0)]
    assert _pairs(r"a \[b\] \\ c") == [(r"a [b] \ c", 1.0)]
    assert _pairs(r"(\(x\):1.5)") == [("(x)", 1.5)]


def test_unbalanced_brackets_never_crash() -> None:
    """Unmatched opens apply to the end and stray closes stay text, as in A1111."""
    assert _pairs("(((") == [("", 1.0)]
    assert _pairs("a ((b") == [("a ", 1.0), ("b", 1.21)]
    assert _pairs("a) b]") == [("a) b]", 1.0)]
    assert _pairs("[[[x") == [("x", round(1.1**-3, 10))]
    assert _pairs("x:1.2)") == [("x:1.2)", 1.0)]
    assert _pairs("(x:1.2.3)") == [("x:1.2.3)", 1.1)]


def test_break_splits_and_is_not_reweighted() -> None:
    """BREAK is a chunk marker between fragments, even inside brackets."""
    assert parse_prompt_attention("a BREAK b") == [Fragment("a"), BREAK, Fragment("b")]
    assert parse_prompt_attention("(a BREAK b)") == [Fragment("a", 1.1), BREAK, Fragment("b", 1.1)]
    assert parse_prompt_attention("aBREAK b") == [Fragment("aBREAK b")]
    groups = split_on_breaks(parse_prompt_attention("BREAK x BREAK"))
    assert groups == [[Fragment("")], [Fragment("x")], [Fragment("")]]
