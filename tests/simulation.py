"""`simulated(settings)`: the whole bot against SimCord's offline Discord, in a few lines.

    async with simulated(settings) as sim:
        alice = sim.member("alice")
        result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
        job = await sim.job_done(alice)

What it arranges, and why:

- The app core (`Lexicon`: storage, scheduler, worker process) is opened here, outside the bot,
  and handed to `create_bot(settings, app)`. SimCord owns every task the bot creates and waits
  for them to go idle after each action; the scheduler's loops wait on the worker's pipe and
  would never look idle. Outside the bot they run as they would in another process.
- The bot's own background wait — the delivery cog following the job hub — is declared to
  SimCord as an external wait (`bot.external_wait`), installed before `env.start()`.
- Commands sync to a dev guild (`LEXICON_DEV_GUILD`; a fixed id when unset) that exists before
  the bot logs in, so SimCord's strict sync check stays on. The guild has a "Lexicon managers"
  role with Manage Server and a #lexicon channel.
- `add_server()` makes another server with the same layout and syncs the commands there, for
  what must stay inside one server (moderation, shared libraries); `join()` puts an existing
  member in it.
- The settle timeout is 120 s: training and generation are real work.
- Refusals (a `ServiceError` reaching the command tree) are what the bot is for; SimCord records
  them like any error. On exit the user-facing ones are acknowledged and anything else is raised.

SimCord is a test dependency: it is imported only when `simulated()` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.app import Lexicon, default_transport
from bot.config import Settings
from bot.discord_bot import LexiconBot, create_bot
from bot.transport import LocalTransport
from cogs.errors import user_sentence
from storage.models import Job

if TYPE_CHECKING:
    import simcord
    from simcord.actors import MemberActor
    from simcord.builders import ChannelHandle, GuildHandle, RoleHandle

DEV_GUILD_ID = 1_300_000_000_000_000_000
SETTLE_TIMEOUT = 120.0
WORKER_START_SECONDS = 300.0


@dataclasses.dataclass
class Server:
    """One more server with the bot in it: a #lexicon channel and a "Lexicon managers" role."""

    guild: GuildHandle
    channel: ChannelHandle
    managers: RoleHandle

    def join(self, member: MemberActor, *, manager: bool = False) -> MemberActor:
        """The same user as `member`, now also a member here (a manager when `manager`)."""
        return self.guild.add_member(member.user, roles=[self.managers] if manager else [])


def _furnish(guild: GuildHandle) -> Server:
    channel = guild.create_text_channel("lexicon")
    managers = guild.create_role(
        "Lexicon managers", permissions=discord.Permissions(manage_guild=True)
    )
    return Server(guild, channel, managers)


@dataclasses.dataclass
class Simulation:
    """A running simulated Discord with the Lexicon bot in it, and a server to play in."""

    env: simcord.Env
    settings: Settings
    app: Lexicon
    guild: GuildHandle
    channel: ChannelHandle
    managers: RoleHandle
    standin_step_seconds: float = 0.0

    @property
    def bot(self) -> LexiconBot:
        bot = self.env.bot
        assert isinstance(bot, LexiconBot)
        return bot

    def member(self, name: str, *, manager: bool = False) -> MemberActor:
        """A new member of the server (with Manage Server when `manager`)."""
        user = self.env.create_user(name)
        return self.guild.add_member(user, roles=[self.managers] if manager else [])

    async def add_server(self, name: str) -> Server:
        """Another server, with Lexicon's commands synced to it as to the dev guild."""
        server = _furnish(self.env.create_guild(name))
        scope = discord.Object(id=server.guild.id)
        self.bot.tree.copy_global_to(guild=scope)
        await self.bot.tree.sync(guild=scope)
        await self.env.settle()
        return server

    async def advance_time(self, seconds: float) -> None:
        await self.env.advance_time(seconds)

    async def settle(self) -> None:
        await self.env.settle()

    async def until(
        self,
        condition: Callable[[], bool | Awaitable[bool]],
        *,
        limit: float = 120.0,
        what: str = "the condition",
    ) -> None:
        """Let real time pass (the worker is outside the simulation) until `condition` holds;
        the bot has settled when this returns."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            await self.env.settle()
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                await self.env.settle()
                return
            if loop.time() > deadline:
                raise TimeoutError(f"gave up after {limit:.0f} s waiting for {what}")
            await asyncio.sleep(0.05)

    def channel_message(self, message_id: int) -> discord.Message:
        """A message of the test channel as the bot's discord.py sees it (attachments readable)."""
        for message in self.channel.history():
            if message.id == message_id:
                return message
        raise LookupError(f"no message {message_id} in #{self.channel.name}")

    async def latest_job(self, member: MemberActor) -> Job:
        """The newest job of a member (whatever its state)."""
        jobs = await self.app.storage.jobs.list_for_user(member.id, states=None, limit=1)
        assert jobs, f"{member.name} has no jobs"
        return jobs[0]

    async def job_done(self, member_or_job: MemberActor | int, *, limit: float = 120.0) -> Job:
        """Wait until a job (a member's newest, or by id) is finished and delivered."""
        if isinstance(member_or_job, int):
            job_id = member_or_job
        else:
            job_id = (await self.latest_job(member_or_job)).id

        async def delivered() -> bool:
            return (await self.app.storage.jobs.get(job_id)).delivered

        await self.until(delivered, limit=limit, what=f"job #{job_id} to be delivered")
        return await self.app.storage.jobs.get(job_id)

    async def restart_bot(self) -> None:
        """A restart as in production: the app core (worker, database) closes and opens again,
        and a new bot object logs in to the same simulated Discord (`env.restart_bot`)."""
        await self.app.close()
        self.app = await open_app(self.settings, self.standin_step_seconds)
        bot = create_bot(self.settings, self.app)
        _install_external_wait(self.env, bot)
        await self.env.restart_bot(bot)

    def unexpected_errors(self) -> list[BaseException]:
        """Errors the bot raised that are not refusals meant for a user (acknowledges all)."""
        return [error for error in self.env.errors if user_sentence(error) is None]


async def open_app(settings: Settings, standin_step_seconds: float = 0.0) -> Lexicon:
    """The app core with its worker started (optionally a slowed-down stand-in engine)."""
    transport = default_transport(settings)
    if standin_step_seconds and isinstance(transport, LocalTransport):
        transport.spec = dataclasses.replace(
            transport.spec, standin_step_seconds=standin_step_seconds
        )
    app = await Lexicon.open(settings, transport)
    try:
        await app.wait_for_worker(WORKER_START_SECONDS)
    except BaseException:
        await app.close()
        raise
    return app


def _install_external_wait(env: simcord.Env, bot: LexiconBot) -> None:
    async def external_wait(awaitable: Awaitable[Any], reason: str) -> Any:
        return await env.external_wait(awaitable, reason=reason)

    bot.external_wait = external_wait


@contextlib.asynccontextmanager
async def simulated(
    settings: Settings,
    *,
    standin_step_seconds: float = 0.0,
    settle_timeout: float = SETTLE_TIMEOUT,
) -> AsyncIterator[Simulation]:
    """A started SimCord `Env` with `create_bot(settings, app)` logged in (see the module doc)."""
    import simcord

    if settings.dev_guild is None:
        settings = settings.model_copy(update={"dev_guild": DEV_GUILD_ID})
    assert settings.dev_guild is not None
    app = await open_app(settings, standin_step_seconds)
    opened: list[Simulation] = []
    try:
        bot = create_bot(settings, app)
        env = simcord.Env(bot, settle_timeout=settle_timeout)
        server = _furnish(env.create_guild("Lexicon test server", id=settings.dev_guild))
        _install_external_wait(env, bot)
        await env.start()
        try:
            sim = Simulation(
                env,
                settings,
                app,
                server.guild,
                server.channel,
                server.managers,
                standin_step_seconds,
            )
            opened.append(sim)
            yield sim
        finally:
            await env.shutdown()
        unexpected = sim.unexpected_errors()
        if unexpected:
            raise BaseExceptionGroup("the bot raised unexpected errors", unexpected)
    finally:
        await (opened[0].app if opened else app).close()
