"""The newcomer's journey through SimCord, written down as the user guide in docs/DISCORD.md.

    python -m tests.e2e.transcript            # regenerate the section of docs/DISCORD.md
    python -m tests.e2e.transcript --print    # only print it

One member, Alice, goes through everything a newcomer does — /help, /train with three photos,
the card, the three ways to write a word, a negative embedding, Reroll, Info, /queue, /cancel,
sharing, /library, export and import, a refusal and /settings — on the stand-in engine. What she
typed and what the bot answered (text, embed titles and fields, buttons, attachment names) is
written as Markdown between the markers below. `tests/e2e/test_transcript.py` runs it again and
checks the committed section is what the bot says today.

Only what does not depend on timing is written: a job's message once it is delivered (not the
throttled progress in between), relative times and user ids as placeholders.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from tests.e2e.conftest import photo_options, standin_settings
from tests.simulation import Simulation, simulated

if TYPE_CHECKING:
    from simcord.actors import MemberActor
    from simcord.results import InteractionResult

START, END = "<!-- transcript:start -->", "<!-- transcript:end -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "DISCORD.md"


class Transcript:
    """Markdown lines: what the member did, then what the bot showed."""

    def __init__(self, sim: Simulation, member: MemberActor) -> None:
        self.sim, self.member = sim, member
        self.lines: list[str] = []

    def typed(self, what: str) -> None:
        self.lines += ["", f"**{self.member.name}:** {what}", ""]

    def shown(
        self, message: discord.Message | Any, *, private: bool | None = None, seeds: bool = True
    ) -> None:
        """A message as the member sees it (`seeds=False`: its random seeds as placeholders)."""
        private = bool(getattr(message, "ephemeral", False)) if private is None else private
        lines = [f"> **{'Lexicon (only you can see this)' if private else 'Lexicon'}:**"]
        lines += [f"> {line}".rstrip() for line in (message.content or "").splitlines()]
        for embed in message.embeds:
            title = f" **{embed.title}**" if embed.title else ""
            image = embed.image.url if embed.image else None
            shows = f" with image `{image.rsplit('/', 1)[-1]}`" if image else ""
            lines.append(f"> - *embed*{title}{shows}")
            lines += [f">   {line}".rstrip() for line in (embed.description or "").splitlines()]
            for field in embed.fields:
                lines.append(f">   - {field.name}: {(field.value or '').replace(chr(10), ' / ')}")
        labels = _labels(getattr(message, "components", []))
        if labels:
            lines.append("> - buttons: " + " · ".join(f"[{label}]" for label in labels))
        names = [attachment.filename for attachment in message.attachments]
        if names:
            lines.append("> - attached: " + ", ".join(f"`{name}`" for name in names))
        text = _clean("\n".join(lines))
        if not seeds:
            text = re.sub(r"\bseeds? [0-9][0-9–, ]*[0-9]", "seed …", text)
        self.lines += text.splitlines()

    def answer(self, result: InteractionResult) -> None:
        """The command's own reply, or its one private refusal."""
        if result.response is not None:
            self.shown(result.response)
        for followup in result.followups:
            self.shown(followup)

    async def job(self, result: InteractionResult, *, seeds: bool = True) -> discord.Message:
        """Wait for the member's newest job and show its message as delivered."""
        await self.sim.job_done(self.member)
        assert result.response is not None
        message = self.sim.channel_message(result.response.id)
        self.shown(message, private=False, seeds=seeds)
        return message


def _labels(components: Any) -> list[str]:
    """Button labels, in order, from discord.py components or raw component payloads."""
    labels: list[str] = []
    for component in components or []:
        if isinstance(component, dict):
            label, children = component.get("label"), component.get("components")
        else:
            label, children = getattr(component, "label", None), getattr(component, "children", [])
        if label:
            labels.append(str(label))
        labels += _labels(children)
    return labels


def _clean(text: str) -> str:
    text = re.sub(r"<t:\d+:[RrTtDdFf]>", "<t:…:R>", text)
    return re.sub(r"<@!?\d+>", "@member", text)


async def journey(sim: Simulation) -> list[str]:
    alice = sim.member("alice")
    say = Transcript(sim, alice)
    channel = sim.channel

    say.typed("`/help`")
    say.answer(await alice.slash(channel, "help"))

    say.typed("`/train name:zorb photo1:… photo2:… photo3:…` (three photos of her cat)")
    trained = await alice.slash(channel, "train", name="zorb", **photo_options())
    card = await say.job(trained)

    say.typed("presses **How to use** on the card")
    say.answer(await alice.click(card, label="How to use"))

    for seed, prompt in enumerate(
        ("a photo of <zorb> on a beach", "zorb in a garden", "(zorb:1.2), portrait"), start=1
    ):
        say.typed(f"`/imagine prompt:{prompt} seed:{seed}`")
        result = await say.job(await alice.slash(channel, "imagine", prompt=prompt, seed=seed))

    say.typed("`/embeddings export name:zorb`")
    exported = await alice.slash(channel, "embeddings export", name="zorb")
    say.answer(exported)
    assert exported.response is not None
    data = await exported.response.attachments[0].read()

    say.typed("`/embeddings import file:blurry.safetensors name:blurx negative:True`")
    file = ("blurry.safetensors", data)
    imported = await alice.slash(
        channel, "embeddings import", file=file, name="blurx", negative=True
    )
    say.answer(imported)

    say.typed("`/imagine prompt:a cat in the snow negative:<blurx> seed:4`")
    await say.job(
        await alice.slash(
            channel, "imagine", prompt="a cat in the snow", negative="<blurx>", seed=4
        )
    )

    say.typed("`/imagine prompt:a cat, <blurx> seed:5` (a negative word in the positive prompt)")
    await say.job(await alice.slash(channel, "imagine", prompt="a cat, <blurx>", seed=5))

    say.typed("presses **Reroll** on the `(zorb:1.2)` result (new seeds)")
    await say.job(await alice.click(result, label="Reroll"), seeds=False)

    say.typed("presses **Info** on that result")
    say.answer(await alice.click(result, label="Info"))

    say.typed("`/queue`")
    say.answer(await alice.slash(channel, "queue"))

    say.typed("`/cancel` (nothing is running)")
    say.answer(await alice.slash(channel, "cancel"))

    say.typed("`/imagine prompt:a <qqqq> on a hill` (a word nobody trained)")
    say.answer(await alice.slash(channel, "imagine", prompt="a <qqqq> on a hill"))

    say.typed("`/embeddings share name:zorb`")
    say.answer(await alice.slash(channel, "embeddings share", name="zorb"))

    say.typed("`/library`")
    say.answer(await alice.slash(channel, "library"))

    say.typed("`/settings`")
    say.answer(await alice.slash(channel, "settings"))
    return say.lines


async def transcript() -> str:
    """The journey as Markdown, in a fresh data directory."""
    with tempfile.TemporaryDirectory() as data_dir:
        async with simulated(standin_settings(Path(data_dir) / "data")) as sim:
            lines = await journey(sim)
    return "\n".join(lines).strip() + "\n"


def with_transcript(doc: str, text: str) -> str:
    """`doc` with the text between the transcript markers replaced by `text`."""
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{text}{END}{tail}"


def section(doc: str) -> str:
    """The text between the transcript markers of `doc`."""
    return doc.split(START, 1)[1].split(END, 1)[0].removeprefix("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print it; leave the doc alone")
    args = parser.parse_args(argv)
    text = asyncio.run(transcript())
    if args.print:
        sys.stdout.write(text)
    else:
        DOC.write_text(with_transcript(DOC.read_text(), text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
