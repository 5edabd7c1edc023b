"""The delivery cog: job progress and results reach Discord, through restarts and token expiry.

One dispatcher task follows the app's job hub. Progress becomes edits of the job's message, at
most one per `EDIT_INTERVAL` per message (the latest state wins; a trailing edit catches up).
A finished job is delivered once: while its interaction token is valid, by editing the original
response; after that (or after a restart past it), by a channel message that replies to the
original and mentions the user. The job row is then marked delivered.

Nothing is lost across a restart: the dispatcher starts with `list_undelivered_finished()`, and
a slow sweep retries deliveries that failed for a passing reason — Discord's own errors (5xx) and
rate limits, for as long as they last. A permanent one (the channel is gone, the bot may not
post there) is logged and given up at once; any other refusal after `MAX_ATTEMPTS` tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import discord
from discord.ext import commands, tasks

from bot.discord_bot import LexiconBot
from bot.hub import JobUpdate
from cogs.delivery._render import Outgoing, render_final
from cogs.queueing import progress_view
from cogs.text import job_title, progress_text, queued_text
from storage.errors import StorageError
from storage.models import Job

log = logging.getLogger("lexicon.discord.delivery")

EDIT_INTERVAL = 2.0  # seconds between two edits of one message (Discord rate-limits edits)
TOKEN_MARGIN = timedelta(seconds=30)  # stop using a token this long before it expires
SWEEP_SECONDS = 60.0
MAX_ATTEMPTS = 5
QUEUE_REFRESHED = 5  # the first waiting jobs, whose messages follow the line (the rest: /queue)
_GIVE_UP_STATUSES = (403, 404)


@dataclass
class _Live:
    """A job whose message shows live progress."""

    job: Job | None = None
    last_edit: float = -math.inf  # time.monotonic() of the last edit of its message
    latest: JobUpdate | None = None  # newest update not shown yet
    preview: bytes | None = None  # newest preview image not shown yet
    flush: asyncio.Task[None] | None = None


class DeliveryCog(commands.Cog, name="Delivery"):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot
        self._live: dict[int, _Live] = {}
        self._runner: asyncio.Task[None] | None = None
        self._submissions: dict[int, int] = {}  # user id → submissions in flight
        self._quiet_events: dict[int, asyncio.Event] = {}
        self._delivering: set[int] = set()
        self._failures: dict[int, int] = {}
        self._places: dict[int, int] = {}  # queued job id → the place its message shows
        self._line_moved = False  # a job left the line since the waiting messages were shown
        self._line_shown = -math.inf  # time.monotonic() of the last refresh of those messages

    async def cog_load(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="lexicon-delivery")
        self.sweep.start()

    async def cog_unload(self) -> None:
        self.sweep.cancel()
        pending = [self._runner] + [live.flush for live in self._live.values()]
        running = [task for task in pending if task is not None and not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # --- what the commands tell us -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def submitting(self, user_id: int) -> AsyncIterator[None]:
        """Hold this user's deliveries while a command submits and announces a job, so a fast
        job's result is never overwritten by its own "queued" message."""
        self._submissions[user_id] = self._submissions.get(user_id, 0) + 1
        try:
            yield
        finally:
            left = self._submissions.pop(user_id) - 1
            if left:
                self._submissions[user_id] = left
            else:
                event = self._quiet_events.pop(user_id, None)
                if event is not None:
                    event.set()

    async def _quiet(self, user_id: int) -> None:
        """Until no command of this user is between submitting and announcing."""
        while user_id in self._submissions:
            await self._quiet_events.setdefault(user_id, asyncio.Event()).wait()

    def note_edit(self, job_id: int) -> None:
        """A command just edited the job's message: progress waits its turn after it."""
        self._live.setdefault(job_id, _Live()).last_edit = time.monotonic()

    # --- the dispatcher ----------------------------------------------------------------------

    async def _run(self) -> None:
        app = self.bot.app
        with app.hub.subscribe() as updates:
            await self.deliver_backlog()
            while True:
                update = await self.bot.wait_external(
                    updates.get(), "job updates from the Lexicon scheduler"
                )
                try:
                    await self._on_update(update)
                except Exception:
                    log.exception("could not show update %s of job %d", update.kind, update.job_id)

    async def _on_update(self, update: JobUpdate) -> None:
        if update.kind == "started" or update.is_final:
            self._line_moved = True
        if update.is_final:
            await self.deliver(update.job_id, update.user_id)
        elif update.kind in ("started", "progress", "retry"):
            self._progress(update)
        if self._line_moved and time.monotonic() >= self._line_shown + EDIT_INTERVAL:
            await self._refresh_line()

    async def deliver_backlog(self) -> None:
        """Deliver what finished while no bot was listening (a restart, a lost update)."""
        try:
            jobs = await self.bot.app.storage.jobs.list_undelivered_finished()
        except StorageError:
            log.exception("could not list undelivered jobs")
            return
        for job in jobs:
            await self.deliver(job.id, job.user_id)

    @tasks.loop(seconds=SWEEP_SECONDS)
    async def sweep(self) -> None:
        if self.sweep.current_loop == 0:
            return  # the dispatcher delivers the backlog when it starts
        try:
            await self.deliver_backlog()
        except Exception:
            log.exception("the delivery sweep failed")

    # --- progress ----------------------------------------------------------------------------

    def _progress(self, update: JobUpdate) -> None:
        live = self._live.setdefault(update.job_id, _Live())
        live.latest = update
        if update.preview_png:
            live.preview = update.preview_png
        if live.flush is None or live.flush.done():
            delay = max(0.0, live.last_edit + EDIT_INTERVAL - time.monotonic())
            live.flush = asyncio.create_task(self._flush(update.job_id, live, delay))

    async def _flush(self, job_id: int, live: _Live, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if live.latest is not None:
            await self._quiet(live.latest.user_id)
        # A command may have edited the message while we waited (its "Queued" announcement):
        # that edit starts the interval again.
        wait = live.last_edit + EDIT_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        update, preview = live.latest, live.preview
        live.latest, live.preview = None, None
        if update is None or self._live.get(job_id) is not live:
            return
        try:
            if live.job is None:
                live.job = await self.bot.app.storage.jobs.get(job_id)
            job = live.job
            if job.channel_id is None or job.message_id is None:
                return
            live.last_edit = time.monotonic()
            fields: dict[str, Any] = {
                "content": progress_text(
                    job,
                    update,
                    self.bot.app.scheduler.waiting_for(job) if update.kind == "retry" else None,
                ),
                "view": progress_view(job.id),
            }
            if preview is not None:
                fields["attachments"] = [discord.File(io.BytesIO(preview), "preview.png")]
            await self._edit(job, **fields)
        except (discord.HTTPException, StorageError) as error:
            log.info("could not show progress of job %d: %s", job_id, error)
        if live.latest is not None and self._live.get(job_id) is live:
            live.flush = asyncio.create_task(self._flush(job_id, live, EDIT_INTERVAL))

    # --- the line ----------------------------------------------------------------------------

    async def _refresh_line(self) -> None:
        """A job left the line: show the waiting jobs' new places, at most once per
        `EDIT_INTERVAL`. The dispatcher calls this itself, with no timer of its own: moves in
        between are shown at the next update, and while a line moves, a job runs and reports."""
        self._line_moved, self._line_shown = False, time.monotonic()
        app = self.bot.app
        try:  # one query: under load every query waits its turn behind the worker's reports
            waiting = await app.scheduler.line(QUEUE_REFRESHED)
        except StorageError as error:
            log.info("could not read the queue: %s", error)
            return
        for job, place in waiting:
            if job.message_id is None or self._places.get(job.id) == place:
                continue
            live = self._live.get(job.id)
            if live is not None and live.latest is not None:
                continue  # progress is about to replace the message
            if live is not None and time.monotonic() < live.last_edit + EDIT_INTERVAL:
                self._line_moved = True  # edited a moment ago: show its place at a later update
                continue
            self._places[job.id] = place
            try:
                standing = await app.scheduler.standing(job, place)
                await self._edit(job, content=queued_text(job, standing))
            except (discord.HTTPException, StorageError) as error:
                log.info("could not move job %d up the line: %s", job.id, error)
            self.note_edit(job.id)
        still = {job.id for job, _ in waiting}
        for job_id in [j for j in self._places if j not in still]:
            del self._places[job_id]

    # --- results -----------------------------------------------------------------------------

    async def deliver(self, job_id: int, user_id: int | None = None) -> None:
        """Deliver a finished job's result once (idempotent; safe to call from anywhere)."""
        if job_id in self._delivering:
            return
        self._delivering.add(job_id)
        try:
            if user_id is not None:
                await self._quiet(user_id)
            live = self._live.pop(job_id, None)
            if live is not None and live.flush is not None and not live.flush.done():
                live.flush.cancel()
                await asyncio.gather(live.flush, return_exceptions=True)
            app = self.bot.app
            job = await app.storage.jobs.get(job_id)
            if job.delivered or not job.is_final:
                return
            if job.channel_id is not None:
                outgoing = await render_final(app, job, self._upload_limit(job))
                try:
                    await self._send_final(job, outgoing)
                except discord.HTTPException as error:
                    if not self._give_up(job, error):
                        return  # the sweep tries again
            await app.storage.jobs.mark_delivered(job.id)
            self._failures.pop(job.id, None)
        finally:
            self._delivering.discard(job_id)

    def _give_up(self, job: Job, error: discord.HTTPException) -> bool:
        failures = self._failures[job.id] = self._failures.get(job.id, 0) + 1
        passing = error.status >= 500 or error.status == 429  # an outage: wait it out
        if error.status in _GIVE_UP_STATUSES or (failures >= MAX_ATTEMPTS and not passing):
            log.warning(
                "gave up delivering job %d to channel %s: %s", job.id, job.channel_id, error
            )
            self._failures.pop(job.id, None)
            return True
        log.info("could not deliver job %d yet (%s); will retry", job.id, error)
        return False

    async def _send_final(self, job: Job, outgoing: Outgoing) -> None:
        if outgoing.remove:
            await self._remove(job)
            return
        if self._token_valid(job) and job.message_id is not None:
            try:
                await self._webhook(job).edit_message(
                    job.message_id,
                    content=outgoing.content,
                    embeds=outgoing.embeds,
                    attachments=outgoing.files(),
                    view=outgoing.view(),
                )
                return
            except discord.HTTPException as error:
                log.info(
                    "job %d: the interaction route failed (%s); using the channel", job.id, error
                )
        assert job.channel_id is not None
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        original = (
            channel.get_partial_message(job.message_id) if job.message_id is not None else None
        )
        if not outgoing.mention_in_channel:
            if original is not None:
                await original.edit(content=outgoing.content, attachments=[], view=None)
            return
        kwargs: dict[str, Any] = {
            "content": f"<@{job.user_id}> {outgoing.content}",
            "files": outgoing.files(),
            "allowed_mentions": discord.AllowedMentions(
                users=[discord.Object(job.user_id)], replied_user=False
            ),
        }
        if outgoing.embeds:
            kwargs["embeds"] = outgoing.embeds
        view = outgoing.view()
        if view is not None:
            kwargs["view"] = view
        if original is not None:
            kwargs["reference"] = original.to_reference(fail_if_not_exists=False)
        await channel.send(**kwargs)
        if original is not None:
            with contextlib.suppress(discord.HTTPException):
                await original.edit(
                    content=f"The {job_title(job)} (job #{job.id}) is done: see the reply below.",
                    attachments=[],
                    view=None,
                )

    # --- routes ------------------------------------------------------------------------------

    def _token_valid(self, job: Job) -> bool:
        expires = job.token_expires_at
        return (
            bool(job.interaction_token)
            and expires is not None
            and (discord.utils.utcnow() < expires - TOKEN_MARGIN)
        )

    def _webhook(self, job: Job) -> discord.Webhook:
        assert job.interaction_token is not None and self.bot.application_id is not None
        return discord.Webhook.partial(
            self.bot.application_id, job.interaction_token, client=self.bot
        )

    async def _edit(self, job: Job, **fields: Any) -> None:
        """Edit the job's message: through the interaction token while valid, else as the bot."""
        assert job.channel_id is not None and job.message_id is not None
        if self._token_valid(job):
            try:
                await self._webhook(job).edit_message(job.message_id, **fields)
                return
            except discord.NotFound:
                pass  # the token ran out early: fall back to the bot's own permission
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        await channel.get_partial_message(job.message_id).edit(**fields)

    async def _remove(self, job: Job) -> None:
        """Delete the job's message (already gone is fine)."""
        if job.message_id is None:
            return
        assert job.channel_id is not None
        with contextlib.suppress(discord.NotFound):
            if self._token_valid(job):
                await self._webhook(job).delete_message(job.message_id)
                return
            channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            await channel.get_partial_message(job.message_id).delete()

    def _upload_limit(self, job: Job) -> int:
        guild = self.bot.get_guild(job.guild_id) if job.guild_id is not None else None
        return (
            guild.filesize_limit
            if guild is not None
            else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        )
