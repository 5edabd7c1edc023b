"""What job messages say, from queued to finished. Plain functions of a job and its progress."""

from __future__ import annotations

from bot.hub import JobUpdate
from cogs.common import duration, shorten
from engine.jobs import GenerateRequest, TrainRequest
from storage.models import Job, JobKind

PROMPT_SHOWN = 200


def job_title(job: Job) -> str:
    """`training **zorb**` or `**a photo of zorb**` — what the job is about, in a few words."""
    if job.kind is JobKind.TRAIN:
        return f"training of **{TrainRequest.from_params(job.params).name}**"
    prompt = shorten(GenerateRequest.from_params(job.params).prompt, PROMPT_SHOWN)
    return "**" + prompt.replace("*", "\\*") + "**"


def queued_text(job: Job, position: int | None, eta_seconds: float | None) -> str:
    if position is None:
        return f"Starting {job_title(job)} (job #{job.id})…"
    return (
        f"Queued {job_title(job)} (job #{job.id}) — #{position} in line, "
        f"expected in {duration(eta_seconds)}."
    )


def progress_text(job: Job, update: JobUpdate) -> str:
    """One line of live progress; training shows the loss, both show what is left."""
    if update.kind == "retry":
        return f"The worker stopped during {job_title(job)} (job #{job.id}); it will run again."
    if update.kind == "started" or update.step is None or not update.total:
        return f"Started {job_title(job)} (job #{job.id})…"
    parts = [f"step {update.step}/{update.total}"]
    if update.loss is not None:
        parts.append(f"loss {update.loss:.4f}")
    if update.eta_seconds is not None:
        parts.append(f"{duration(update.eta_seconds)} left")
    verb = "Training" if job.kind is JobKind.TRAIN else "Imagining"
    subject = (
        f"**{TrainRequest.from_params(job.params).name}**"
        if job.kind is JobKind.TRAIN
        else job_title(job)
    )
    return f"{verb} {subject} (job #{job.id}) — {', '.join(parts)}."


def failed_text(job: Job) -> str:
    reason = job.error or "the worker gave no reason."
    return f"The {job_title(job)} (job #{job.id}) failed: {reason}"


def cancelled_text(job: Job) -> str:
    return f"Cancelled {job_title(job)} (job #{job.id})."
