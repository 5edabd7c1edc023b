"""Lists longer than one Discord message keep whole lines and say how many were left out."""

from __future__ import annotations

from cogs.common import MESSAGE_LIMIT, fit_lines


def test_lines_that_fit_are_sent_whole() -> None:
    """Nothing is left out, so nothing is said about it."""
    assert fit_lines(["one", "two"], "see elsewhere.") == "one\ntwo"


def test_lines_that_do_not_fit_end_with_how_many_are_missing_and_where() -> None:
    """Whole lines only, under the limit, with the count and the next step last."""
    lines = [f"line {number:03d} " + "x" * 90 for number in range(40)]
    text = fit_lines(lines, "narrow the list.")
    assert len(text) <= MESSAGE_LIMIT
    *shown, trailer = text.split("\n")
    assert shown == lines[: len(shown)]
    assert trailer == f"…and {len(lines) - len(shown)} more: narrow the list."
    assert len(shown) == 19  # 19 lines of 99 characters and the trailer fit in 2,000
