"""`create_bot()`: the Discord side of Lexicon, built around one opened `Lexicon` app core.

The bot is slash-command only and asks for the `guilds` intent alone. `setup_hook` opens the app
core (unless one was handed in), loads each extension on its own (a
broken cog is logged with its traceback and the others still load), starts the heartbeat the
container healthcheck reads, and syncs commands to the dev guild — globally only when asked.
`close()` releases what `setup_hook` opened, in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import discord
from discord.ext import commands, tasks

from bot.app import Lexicon
from bot.config import Settings
from bot.health import touch_heartbeat
from bot.ratelimit import RateLimiter

log = logging.getLogger("lexicon.discord")

T = TypeVar("T")
HEARTBEAT_SECONDS = 10.0

# The extensions `setup_hook` loads, one by one, in this order. Named as strings (the bot never
# imports a cog): each registers what it owns — commands, persistent buttons, the error handler —
# in its own `setup`. Errors come first so every later failure has a handler; delivery before the
# commands so results of jobs finished while the bot was away go out as soon as it starts.
EXTENSIONS: tuple[str, ...] = (
    "cogs.errors",
    "cogs.buttons",
    "cogs.delivery",
    "cogs.imagine",
    "cogs.train",
    "cogs.embeddings",
    "cogs.jobs",
    "cogs.admin",
    "cogs.settings",
    "cogs.help",
)

# How the bot waits for input from outside Discord (the scheduler's job updates). Production
# awaits it plainly; `tests.simulation` swaps in SimCord's `env.external_wait` so the simulated
# world knows the wait is intentional.
ExternalWait = Callable[[Awaitable[Any], str], Awaitable[Any]]


async def _plain_wait(awaitable: Awaitable[Any], reason: str) -> Any:
    return await awaitable


class LexiconBot(commands.Bot):
    """A slash-command bot that owns (or borrows) one `Lexicon` app core."""

    def __init__(
        self, settings: Settings, app: Lexicon | None = None, *, sync_global: bool = False
    ):
        super().__init__(
            command_prefix=commands.when_mentioned,  # unused: every command is a slash command
            intents=discord.Intents(guilds=True),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self._app = app
        self._owns_app = app is None
        self.sync_global = sync_global
        self.external_wait: ExternalWait = _plain_wait
        self.failed_extensions: dict[str, BaseException] = {}
        # Discord's clock (SimCord's, in tests), so limits follow the time members see.
        self.rate_limiter = RateLimiter(
            settings.rate_limit, clock=lambda: discord.utils.utcnow().timestamp()
        )
        self.lookup_limiter = RateLimiter(
            settings.lookup_rate_limit, clock=lambda: discord.utils.utcnow().timestamp()
        )

    @property
    def app(self) -> Lexicon:
        """The app core; available from `setup_hook` on."""
        if self._app is None:
            raise RuntimeError("the Lexicon app core is opened in setup_hook; it is not open yet")
        return self._app

    async def wait_external(self, awaitable: Awaitable[T], reason: str) -> T:
        """Await input from outside Discord (see `ExternalWait`)."""
        result: T = await self.external_wait(awaitable, reason)
        return result

    async def setup_hook(self) -> None:
        if self._app is None:
            self._app = await Lexicon.open(self.settings)
        for extension in reversed(list(self.extensions)):
            await self.unload_extension(extension)  # a second login (a simulated restart)
        self.failed_extensions.clear()
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception as error:
                self.failed_extensions[extension] = error
                log.exception("could not load %s; the other cogs still load", extension)
        if not self.heartbeat.is_running():
            self.heartbeat.start()
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Dev guild: copy and sync there (instant). Global sync only when asked (slow)."""
        if self.settings.dev_guild is not None:
            guild = discord.Object(id=self.settings.dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to the dev guild %s", len(synced), guild.id)
        if self.sync_global:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))

    @tasks.loop(seconds=HEARTBEAT_SECONDS)
    async def heartbeat(self) -> None:
        touch_heartbeat(self.settings.data_dir)

    @heartbeat.error
    async def _heartbeat_failed(self, error: BaseException) -> None:
        log.error("the heartbeat stopped: %s", error)

    async def close(self) -> None:
        self.heartbeat.cancel()
        for extension in reversed(list(self.extensions)):
            try:
                await self.unload_extension(extension)
            except Exception:
                log.exception("could not unload %s", extension)
        await super().close()
        if self._owns_app and self._app is not None:
            app, self._app = self._app, None
            await app.close()


def create_bot(
    settings: Settings, app: Lexicon | None = None, *, sync_global: bool = False
) -> LexiconBot:
    """The configured bot. With `app`, it uses that app core and leaves closing it to the
    caller; without, `setup_hook` opens one and `close()` closes it."""
    return LexiconBot(settings, app, sync_global=sync_global)
