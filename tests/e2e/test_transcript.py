"""The transcript in docs/DISCORD.md is what the bot says today (see `tests.e2e.transcript`)."""

from __future__ import annotations

from tests.e2e.transcript import DOC, section, transcript


async def test_the_committed_transcript_is_current() -> None:
    """A fresh run of the newcomer's journey matches the section committed in docs/DISCORD.md."""
    assert await transcript() == section(DOC.read_text()), (
        "docs/DISCORD.md's transcript is out of date: run `python -m tests.e2e.transcript`"
    )
