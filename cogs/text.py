"""What job messages say, from queued to finished. Plain functions of a job and its progress.

Times are Discord relative timestamps (`<t:…:R>`): each reader's client shows "in 2 minutes"
and keeps counting, so a message stays true between edits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import discord

from bot.hub import JobUpdate
from bot.scheduler import Standing
from bot.services import job_notes
from cogs.common import shorten
from engine.jobs import GenerateRequest, TrainRequest
from storage.models import Job, JobKind

PROMPT_SHOWN = 200
BAR_CELLS = 10


def job_title(job: Job) -> str:
    """`training of **zorb**` or `**a photo of zorb**` — what the job is about, in a few words."""
    if job.kind is JobKind.TRAIN:
        return f"training of **{TrainRequest.from_params(job.params).name}**"
    prompt = shorten(GenerateRequest.from_params(job.params).prompt, PROMPT_SHOWN)
    return "**" + prompt.replace("*", "\\*") + "**"


def relative_time(seconds: float, now: datetime | None = None) -> str:
    """`<t:…:R>`: Discord shows it as "in 40 seconds" in each reader's client."""
    moment = (now or discord.utils.utcnow()) + timedelta(seconds=max(0.0, seconds))
    return f"<t:{int(moment.timestamp())}:R>"


def notes_text(job: Job) -> str:
    """The job's notes, one line each (empty when there are none)."""
    return "".join(f"\n-# {note}" for note in job_notes(job))


def queued_text(job: Job, standing: Standing) -> str:
    """Where the job stands in line: "next up" or "#N in line", and when it should start (or
    which model's worker it waits for)."""
    if standing.position is None:
        return f"Starting {job_title(job)} (job #{job.id})…" + notes_text(job)
    return f"Queued {job_title(job)} (job #{job.id}) — {queue_place(standing)}." + notes_text(job)


def queue_place(standing: Standing) -> str:
    """`next up, expected to start <t:…:R>` or `#3 in line, …`, with `(includes ~12 s to load
    **sdxl**)` when its model must be loaded first; while no live worker holds the job's model,
    `waiting for a worker that serves **sd15**`."""
    position, eta_seconds, switch = standing.position, standing.eta_seconds, standing.switch
    if standing.waiting_for is not None:
        return waiting_text(standing.waiting_for)
    place = "next up" if position == 1 else f"#{position} in line"
    when = (
        f"expected to start {relative_time(eta_seconds)}"
        if eta_seconds is not None and eta_seconds >= 1
        else "expected to start in a moment"
    )
    if switch is not None and switch.seconds >= 1:
        when += f" (includes {about(switch.seconds)} to load **{switch.model}**)"
    return f"{place}, {when}"


def waiting_text(model: str) -> str:
    """What a job whose model no live worker holds is doing, and what its owner can do."""
    return (
        f"waiting for a worker that serves **{model}**; it starts when one is back, "
        "or `/cancel` it and pick another `model:`"
    )


def about(seconds: float) -> str:
    """`~12 s`, or `~3 min` from 90 seconds on."""
    if seconds < 90:
        return f"~{round(seconds)} s"
    return f"~{round(seconds / 60)} min"


def bar(fraction: float) -> str:
    """`▰▰▰▱▱▱▱▱▱▱ 30 %`."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * BAR_CELLS)
    return "▰" * filled + "▱" * (BAR_CELLS - filled) + f" {fraction * 100:.0f} %"


def progress_text(job: Job, update: JobUpdate, waiting_for: str | None = None) -> str:
    """Live progress in words, with a bar and when it should be done. After a worker stopped
    (`retry`), `waiting_for` names the job's model while no live worker holds it."""
    if update.kind == "retry":
        stopped = f"The worker stopped during {job_title(job)} (job #{job.id})"
        if waiting_for is not None:
            return f"{stopped}; it will run again, {waiting_text(waiting_for)}."
        return f"{stopped}; it will run again."
    if update.kind == "started" or update.step is None or not update.total:
        return f"Started {job_title(job)} (job #{job.id})…" + notes_text(job)
    fraction = update.step / update.total
    done = f", done {relative_time(update.eta_seconds)}" if update.eta_seconds else ""
    if job.kind is JobKind.TRAIN:
        name = TrainRequest.from_params(job.params).name
        stage = (
            "studying your photos"
            if fraction < 0.5
            else "getting the details right"
            if fraction < 0.9
            else "finishing up"
        )
        return f"Training **{name}** (job #{job.id}) — {stage}: {bar(fraction)}{done}."
    return f"Imagining {job_title(job)} (job #{job.id}) — {bar(fraction)}{done}." + notes_text(job)


def failed_text(job: Job) -> str:
    reason = job.error or "the worker gave no reason."
    return f"The {job_title(job)} (job #{job.id}) failed: {reason}"


def cancelled_text(job: Job) -> str:
    return f"Cancelled {job_title(job)} (job #{job.id})."
