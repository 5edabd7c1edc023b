"""The embedding naming rule: pattern after folding, reserved words, uniqueness."""

from __future__ import annotations

import pytest

from storage import Actor, InvalidName, NameTaken, NotFound, Storage, parse_name
from storage.names import NameRules
from tests.storage.conftest import is_reserved_word, make_embedding

RULE_SENTENCE = "is not a valid embedding name: use 2 to 32 characters from a-z, 0-9"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("a/b", id="slash"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("..", id="dot-dot"),
        pytest.param("../../etc/passwd", id="traversal"),
        pytest.param("zo\u200brb", id="zero-width-space"),
        pytest.param("\u200bzorb", id="leading-zero-width-space"),
        pytest.param("zo\x00rb", id="nul"),
        pytest.param("zo\nrb", id="newline"),
        pytest.param("zorb\n", id="trailing-newline"),
        pytest.param("zo\x1brb", id="escape"),
        pytest.param("z\u043erb", id="cyrillic-o"),
        pytest.param("\u0430bc", id="cyrillic-a"),
        pytest.param("'; DROP TABLE embeddings; --", id="sql-injection"),
        pytest.param("zorb'--", id="quote"),
        pytest.param("z%", id="like-wildcard"),
        pytest.param("a", id="too-short"),
        pytest.param("", id="empty"),
        pytest.param("a" * 33, id="too-long"),
        pytest.param("-zorb", id="leading-dash"),
        pytest.param("_zorb", id="leading-underscore"),
        pytest.param("zo rb", id="space"),
        pytest.param(" zorb", id="leading-space"),
        pytest.param("<zorb>", id="angle-brackets"),
        pytest.param("zorb:1.2", id="weight-syntax"),
    ],
)
def test_names_outside_the_pattern_are_refused_with_the_rule(raw: str) -> None:
    """Separators, invisible and control characters, look-alikes, SQL and bad lengths fail."""
    with pytest.raises(InvalidName) as caught:
        parse_name(raw)
    message = str(caught.value)
    assert RULE_SENTENCE in message
    assert message.endswith(".") and message.count(". ") == 0
    assert "\x00" not in message and "\n" not in message and "\u200b" not in message


@pytest.mark.parametrize(
    ("raw", "display", "folded"),
    [
        ("zorb", "zorb", "zorb"),
        ("Zorb", "Zorb", "zorb"),
        ("ZORB_2-x", "ZORB_2-x", "zorb_2-x"),
        ("ｚｏｒｂ", "zorb", "zorb"),  # fullwidth letters fold to ASCII under NFKC
        ("\u212aorb", "Korb", "korb"),  # the Kelvin sign is compatibility-equal to K
        ("9lives", "9lives", "9lives"),
        ("a" * 32, "a" * 32, "a" * 32),
    ],
)
def test_valid_names_fold_to_their_comparison_form(raw: str, display: str, folded: str) -> None:
    """Valid names keep an ASCII display form and compare by their folded form."""
    name = parse_name(raw)
    assert (name.display, name.folded) == (display, folded)


def test_reserved_words_are_refused_with_a_suggestion() -> None:
    """A word the tokenizer already knows is refused, folded first, with a made-up example."""
    rules = NameRules(is_reserved_word)
    with pytest.raises(InvalidName) as caught:
        rules.check("Cat")
    assert str(caught.value) == (
        "'cat' is already a word the model knows; pick a made-up word like 'zorb'."
    )
    assert rules.check("zorb").folded == "zorb"


async def test_the_repository_applies_the_reserved_word_check(store: Storage) -> None:
    """Creating or renaming to a vocabulary word is refused and nothing is stored."""
    with pytest.raises(InvalidName, match="already a word the model knows"):
        await make_embedding(store, 1, "dog")
    own = await make_embedding(store, 1, "zorb")
    with pytest.raises(InvalidName, match="already a word the model knows"):
        await store.embeddings.rename(Actor(1), own.id, "photo")
    assert [e.name for e in await store.embeddings.list_owned(1)] == ["zorb"]


async def test_a_name_is_unique_perActor(store: Storage) -> None:
    """The same owner cannot have two embeddings of one name; another owner can."""
    await make_embedding(store, 1, "zorb")
    with pytest.raises(NameTaken) as caught:
        await make_embedding(store, 1, "zorb", data=b"other vectors")
    assert str(caught.value) == (
        "You already have an embedding called 'zorb'; pick another name or delete that one first."
    )
    other = await make_embedding(store, 2, "zorb")
    assert other.owner_id == 2


async def test_case_fold_collisions_count_as_the_same_name(store: Storage) -> None:
    """'Zorb' and 'zorb' (and fullwidth 'ｚｏｒｂ') are one name for uniqueness and lookup."""
    first = await make_embedding(store, 1, "Zorb")
    for twin in ("zorb", "ZORB", "ｚｏｒｂ"):
        with pytest.raises(NameTaken):
            await make_embedding(store, 1, twin, data=twin.encode())
    found = await store.embeddings.get_by_name(1, "zORB")
    assert (found.id, found.name, found.name_folded) == (first.id, "Zorb", "zorb")


async def test_a_shared_name_is_unique_in_the_library(store: Storage) -> None:
    """A second shared 'zorb' is refused in the same server's library when shared or created
    shared; private ones are fine, and so is a 'zorb' in another server's library."""
    await make_embedding(store, 1, "zorb", shared=True, guild_id=10)
    private = await make_embedding(store, 2, "Zorb")
    with pytest.raises(NameTaken) as caught:
        await store.embeddings.share(Actor(2, guild_id=10), private.id)
    assert str(caught.value) == (
        "The shared library already has an embedding called 'zorb'; rename yours before sharing it."
    )
    with pytest.raises(NameTaken, match="shared library already has"):
        await make_embedding(store, 3, "ZORB", shared=True, guild_id=10)
    assert (await store.embeddings.get(private.id, 2)).is_shared is False
    assert await store.embeddings.count_shared(guild_id=10) == 1
    elsewhere = await store.embeddings.share(Actor(2, guild_id=20), private.id)
    assert (elsewhere.is_shared, elsewhere.shared_guild_id) == (True, 20)
    assert await store.embeddings.count_shared(guild_id=10) == 1


async def test_renaming_a_shared_embedding_keeps_library_names_unique(store: Storage) -> None:
    """A shared embedding cannot be renamed to a name another shared embedding has."""
    await make_embedding(store, 1, "zorb", shared=True)
    mine = await make_embedding(store, 2, "blip", shared=True)
    with pytest.raises(NameTaken, match="shared library already has"):
        await store.embeddings.rename(Actor(2), mine.id, "Zorb")
    renamed = await store.embeddings.rename(Actor(2), mine.id, "BLIP")
    assert (renamed.name, renamed.name_folded) == ("BLIP", "blip")


async def test_lookups_of_impossible_names_find_nothing(store: Storage) -> None:
    """A lookup with a name that breaks the rule is simply NotFound, never an SQL error."""
    await make_embedding(store, 1, "zorb", shared=True)
    with pytest.raises(NotFound):
        await store.embeddings.get_by_name(1, "'; DROP TABLE embeddings; --")
    assert await store.embeddings.resolve(1, ["zo\u200brb", "%", "zorb"]) == {
        "zorb": await store.embeddings.get_by_name(1, "zorb")
    }
