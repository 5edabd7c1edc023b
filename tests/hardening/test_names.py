"""Hostile embedding names in `/train`, `/embeddings import` and `/embeddings rename`."""

from __future__ import annotations

import pytest
from simcord.actors import MemberActor

from tests.e2e.conftest import photo_options, refusal
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import Stored, refused_leaving_nothing, stored
from tests.simulation import Simulation

RULE = "use 2 to 32 characters from a-z, 0-9, '-' and '_', starting with a letter or a digit"

# name → how the refusal quotes it (escaped, so it cannot break the message or spoof text).
BAD_NAMES: dict[str, tuple[str, str]] = {
    "dot-dot-slash": ("../../etc/passwd", "'../../etc/passwd'"),
    "slash": ("zorb/../../x", "'zorb/../../x'"),
    "backslash": ("C:\\zorb", "'C:\\\\zorb'"),
    "cyrillic-o": ("z\u043erb", "'z\u043erb'"),
    "small-capital-z": ("\u1d22orb", "'\u1d22orb'"),
    "nul": ("zo\x00rb", "'zo\\x00rb'"),
    "ansi-escape": ("zo\x1b[31mrb", "'zo\\x1b[31mrb'"),
    "newline": ("zo\nrb", "'zo\\nrb'"),
    "zero-width-space": ("zo\u200brb", "'zo\\u200brb'"),
    "right-to-left-override": ("\u202ezorb", "'\\u202ezorb'"),
    "sql-drop": ("x'); DROP TABLE jobs;--", '"x\'); DROP TABLE jobs;--"'),
    "sql-or": ("a%' OR '1'='1", "\"a%' OR '1'='1\""),
    "space": ("zo rb", "'zo rb'"),
}


def _sentence(shown: str) -> str:
    return f"{shown} is not a valid embedding name: {RULE}."


async def _alice_with_zorb(sim: Simulation) -> tuple[MemberActor, Stored]:
    """Alice after she imported an embedding named 'zorb', and what is stored then."""
    alice = sim.member("alice")
    await alice.slash(
        sim.channel,
        "embeddings import",
        file=("w.safetensors", hostile.good_embedding()),
        name="zorb",
    )
    await sim.job_done(alice)  # the import's library preview, so nothing changes after this
    before = await stored(sim.app)
    assert before.embeddings == 1
    return alice, before


@pytest.mark.parametrize("case", BAD_NAMES.values(), ids=BAD_NAMES.keys())
async def test_a_bad_name_is_refused_by_train(sim: Simulation, case: tuple[str, str]) -> None:
    """Path separators, look-alikes, control and zero-width characters, SQL: one sentence."""
    name, shown = case
    # Nothing stored, and the jobs table is still there to count.
    refused = await refused_leaving_nothing(sim, "train", name=name, **photo_options())
    assert refused == _sentence(shown)


@pytest.mark.parametrize(
    "name", ["../zorb", "zo\u200brb", "x');DROP TABLE embeddings;--"], ids=["path", "zwsp", "sql"]
)
async def test_a_bad_name_is_refused_by_import(sim: Simulation, name: str) -> None:
    """/embeddings import checks the name before it runs the converter; nothing is stored."""
    refused = await refused_leaving_nothing(
        sim, "embeddings import", file=("good.safetensors", hostile.good_embedding()), name=name
    )
    assert refused == _sentence(repr(name))


async def test_a_bad_new_name_is_refused_by_rename(sim: Simulation) -> None:
    """Renaming to a path or a look-alike is refused; the embedding keeps its name and file."""
    alice, before = await _alice_with_zorb(sim)
    for new_name in ("../../zorb", "z\u043erb", "zorb\x00"):
        result = await alice.slash(sim.channel, "embeddings rename", name="zorb", new_name=new_name)
        assert refusal(result) == _sentence(repr(new_name))
    (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert embedding.name == "zorb"
    assert await stored(sim.app) == before


async def test_a_fullwidth_look_alike_is_the_same_name(sim: Simulation) -> None:
    """'ｚｏｒｂ' folds to 'zorb' (NFKC), so it cannot sit beside an existing 'zorb'."""
    alice, before = await _alice_with_zorb(sim)
    result = await alice.slash(
        sim.channel, "train", name="\uff5a\uff4f\uff52\uff42", **photo_options()
    )
    assert refusal(result) == "You already have an embedding called 'zorb'."
    assert await stored(sim.app) == before


async def test_a_hostile_name_in_a_prompt_is_only_an_unknown_name(sim: Simulation) -> None:
    """`<../../etc/passwd>` in a prompt is looked up as a name, refused, and queues nothing."""
    refused = await refused_leaving_nothing(sim, "imagine", prompt="a photo of <../../etc/passwd>")
    assert refused == (
        "You have no embedding called <../../etc/passwd> and none is shared under that name; "
        "`/embeddings list` and `/library` show the names you can use."
    )
