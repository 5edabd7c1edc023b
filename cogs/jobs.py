"""`/queue` (your jobs, their places and ETAs) and `/cancel [job]`."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.discord_bot import LexiconBot
from bot.services import ServiceError
from cogs.common import LookupCog, fit_lines, shorten
from cogs.queueing import cancel_job
from cogs.text import queue_place, relative_time
from engine.jobs import GenerateRequest, TrainRequest
from storage.models import Job, JobKind, JobState


def _describe(job: Job) -> str:
    if job.kind is JobKind.TRAIN:
        return f"train **{TrainRequest.from_params(job.params).name}**"
    return f"imagine “{shorten(GenerateRequest.from_params(job.params).prompt, 60)}”"


async def active_job_choices(
    interaction: discord.Interaction[LexiconBot], current: str
) -> list[app_commands.Choice[int]]:
    """Autocomplete: the user's waiting and running jobs, newest first."""
    jobs = await interaction.client.app.storage.jobs.list_for_user(interaction.user.id)
    choices = []
    for job in jobs:
        label = shorten(f"#{job.id} {_describe(job).replace('**', '')} ({job.state.value})", 100)
        if current.strip().lstrip("#") in str(job.id) or current.lower() in label.lower():
            choices.append(app_commands.Choice(name=label, value=job.id))
    return choices[:25]


class Jobs(LookupCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Your waiting and running jobs")
    async def queue(self, interaction: discord.Interaction[LexiconBot]) -> None:
        app = self.bot.app
        jobs = await app.storage.jobs.list_for_user(interaction.user.id)
        if not jobs:
            await interaction.response.send_message(
                "You have no jobs waiting or running.", ephemeral=True
            )
            return
        lines = []
        for job in reversed(jobs):  # oldest first: the order they will run in
            if job.state is JobState.RUNNING:
                progress = job.progress
                where = (
                    f"running, step {progress.step}/{progress.total}"
                    + (
                        f", done {relative_time(progress.eta_seconds)}"
                        if progress.eta_seconds
                        else ""
                    )
                    if progress is not None
                    else "running"
                )
            else:
                where = queue_place(await app.scheduler.standing(job))
            lines.append(f"**#{job.id}** {_describe(job)} — {where}")
        more = "they are further back in line; `/cancel` takes out the ones you no longer want."
        await interaction.response.send_message(fit_lines(lines, more), ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel a job (your running one when omitted)")
    @app_commands.describe(job="The job number (see /queue)")
    @app_commands.autocomplete(job=active_job_choices)
    async def cancel(
        self,
        interaction: discord.Interaction[LexiconBot],
        job: app_commands.Range[int, 1] | None = None,
    ) -> None:
        if job is None:
            active = await self.bot.app.storage.jobs.list_for_user(interaction.user.id)
            if not active:
                raise ServiceError("You have no job waiting or running to cancel.")
            running = [j for j in active if j.state is JobState.RUNNING]
            job = (running or active)[-1].id  # the running one, else the next to run
        await cancel_job(interaction, job)


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Jobs(bot))
