"""Every cog loads, no two commands share a name, and the bot opens and releases what it uses."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
from collections import Counter

import pytest
from discord import app_commands
from discord.ext import commands

import bot.discord_bot as discord_bot
from bot.app import Lexicon
from bot.config import Settings
from bot.discord_bot import EXTENSIONS, create_bot
from bot.health import heartbeat_path
from bot.transport import LocalTransport
from tests.bot.conftest import worker_pid

CONTRACT = {
    "train",
    "imagine",
    "embeddings",
    "library",
    "queue",
    "cancel",
    "admin",
    "settings",
    "help",
}


def _qualified_names(command: app_commands.Command | app_commands.Group) -> list[str]:
    if isinstance(command, app_commands.Group):
        names = [command.qualified_name]
        for child in command.commands:
            names += _qualified_names(child)
        return names
    return [command.qualified_name]


def test_no_two_cogs_define_the_same_command() -> None:
    """Importing every extension, each command name (and subcommand path) appears once."""
    names: list[str] = []
    for extension in EXTENSIONS:
        module = importlib.import_module(extension)
        assert callable(getattr(module, "setup", None)), f"{extension} has no setup()"
        for _, cog in inspect.getmembers(module, inspect.isclass):
            if issubclass(cog, commands.Cog) and cog.__module__.startswith(extension):
                for command in cog.__cog_app_commands__:
                    if command.parent is None:
                        names += _qualified_names(command)
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    assert duplicates == []
    assert {name.split()[0] for name in names} == CONTRACT


async def test_setup_hook_loads_every_cog_into_one_tree(settings: Settings) -> None:
    """With a borrowed app core, every extension loads and the tree has the contract's commands."""
    app = await Lexicon.open(settings, start_worker=False)
    bot = create_bot(settings, app)
    try:
        await bot.setup_hook()
        assert bot.failed_extensions == {}
        assert set(bot.extensions) == set(EXTENSIONS)
        assert {command.name for command in bot.tree.get_commands()} == CONTRACT
        imagine = bot.tree.get_command("imagine")
        assert isinstance(imagine, app_commands.Command)
        size = next(p for p in imagine.parameters if p.name == "size")
        assert [choice.value for choice in size.choices] == settings.allowed_sizes
        for _ in range(200):  # the heartbeat loop's first beat runs once the loop task starts
            if heartbeat_path(settings.data_dir).exists():
                break
            await asyncio.sleep(0.01)
        assert heartbeat_path(settings.data_dir).exists()
    finally:
        await bot.close()
        await app.close()
    assert bot.extensions == {}


async def test_a_broken_cog_is_logged_and_the_others_load(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An extension that raises in setup is logged with its traceback; the rest still load."""
    monkeypatch.setattr(discord_bot, "EXTENSIONS", ("tests.cogs.broken_cog", *EXTENSIONS))
    app = await Lexicon.open(settings, start_worker=False)
    bot = create_bot(settings, app)
    try:
        with caplog.at_level(logging.ERROR, logger="lexicon.discord"):
            await bot.setup_hook()
        assert list(bot.failed_extensions) == ["tests.cogs.broken_cog"]
        assert set(bot.extensions) == set(EXTENSIONS)
        record = next(r for r in caplog.records if "tests.cogs.broken_cog" in r.getMessage())
        assert record.exc_info is not None
    finally:
        await bot.close()
        await app.close()


async def test_a_bot_without_an_app_opens_and_closes_its_own(settings: Settings) -> None:
    """`create_bot(settings)` opens the app core in setup_hook and closes it in close()."""
    bot = create_bot(settings)
    with pytest.raises(RuntimeError, match="not open yet"):
        _ = bot.app
    await bot.setup_hook()
    transport = bot.app.scheduler.transport
    assert isinstance(transport, LocalTransport)
    try:
        await bot.app.wait_for_worker(120)
        assert bot.extensions
        pid = worker_pid(transport)
    finally:
        await bot.close()
    with pytest.raises(RuntimeError, match="not open yet"):
        _ = bot.app
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker process is gone
