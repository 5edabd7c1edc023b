"""Messages between the bot's scheduler and a GPU worker, whatever carries them.

The local transport sends these objects through a multiprocessing pipe; the Redis transport
encodes them with `encode`/`decode` below. Torch-free: the bot imports this module.

What a worker reports about a job carries its `worker_id` (the worker loop stamps it), so the
scheduler stores a result only from the worker that holds the job's lease. `decode` reads
bytes from another machine: it refuses oversized or over-deep input (`DecodeError`) before
building anything, so one poison entry cannot take down the reader that meets it.

A worker has two kinds of slot: one *generate* batch at a time and one *training* job at a time.
Training runs in slices of a few steps so a generate batch can run between slices; the scheduler
hands a new batch only when the worker reports the slot free (`SlotFree`), which keeps the queue
— and therefore fairness — in the bot rather than in a worker's backlog.
"""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal, get_args

from engine.jobs import (
    EmbeddingPayload,
    GeneratedImage,
    GenerateRequest,
    Progress,
    TrainRequest,
    TrainResult,
)

SlotKind = Literal["generate", "train"]


@dataclass(frozen=True)
class JobAttempt:
    """The job, and which run of it, a message is about: a retried job runs as a new attempt, and
    the bot stores a report only while its attempt is the job's current one."""

    job_id: int
    attempt: int
    # Who sent a worker's report (stamped by `from_worker`); empty in what the bot sends.
    worker_id: str = field(default="", kw_only=True)


# --- bot → worker -------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateJob(JobAttempt):
    """One queued `/imagine` inside a batch."""

    request: GenerateRequest


@dataclass(frozen=True)
class GenerateBatch:
    """Compatible generate jobs (same `batch_key`) to run as one UNet batch."""

    jobs: tuple[GenerateJob, ...]


@dataclass(frozen=True)
class TrainJob(JobAttempt):
    """One `/train`; `resume_from` is the last checkpoint when this is a retry."""

    request: TrainRequest
    resume_from: bytes | None = None


@dataclass(frozen=True)
class CancelJob:
    job_id: int


@dataclass(frozen=True)
class Shutdown:
    """Finish or release current work, then exit."""


# --- worker → bot -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelHeld:
    """One model a worker serves: its configured name, family, text-encoder width and the hash
    that identifies its weights; whether it is on the accelerator now (`resident`) and how many
    seconds its last load took (`switch_seconds`: what a job waits for when it is not)."""

    name: str
    family: str
    width: int
    model_hash: str
    resident: bool = True
    switch_seconds: float = 0.0


@dataclass(frozen=True)
class WorkerReady:
    """The models are loaded; the worker accepts work for them in these slots."""

    worker_id: str
    device: str
    max_batch: int
    models: tuple[ModelHeld, ...]


@dataclass(frozen=True)
class ModelSwitched:
    """The worker loaded `model` (it was not resident) in `seconds`; `resident` lists the models
    on its accelerator now, the others were evicted. Bounds: `MAX_SWITCH_SECONDS`."""

    worker_id: str
    model: str
    seconds: float
    resident: tuple[str, ...]


@dataclass(frozen=True)
class JobStarted(JobAttempt):
    worker_id: str  # positional here: the worker names itself when it starts a job
    batch_size: int = 1  # how many jobs share this engine batch (for tests and metrics)
    batch_job_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProgressReport(JobAttempt):
    """How far a running job is (a worker's report; the scheduler stores it as a job's progress)."""

    progress: Progress


@dataclass(frozen=True)
class TrainCheckpoint(JobAttempt):
    """Training state at `step`, so that a retry resumes there rather than at step 0."""

    step: int
    data: bytes


@dataclass(frozen=True)
class GenerateDone(JobAttempt):
    """The job's images; `seconds`: how long its engine batch ran, for start estimates."""

    images: tuple[GeneratedImage, ...]
    seconds: float


@dataclass(frozen=True)
class TrainDone(JobAttempt):
    """The trained embedding; `seconds`: how long training ran, for start estimates."""

    result: TrainResult
    seconds: float


@dataclass(frozen=True)
class JobFailed(JobAttempt):
    """`retryable` is False when retrying cannot help (bad input); the error is for the user."""

    error: str
    retryable: bool = False


@dataclass(frozen=True)
class JobCancelled(JobAttempt):
    """The job stopped because it was cancelled."""


@dataclass(frozen=True)
class JobReleased(JobAttempt):
    """The worker gave the job back unfinished (it is shutting down); run it elsewhere."""


@dataclass(frozen=True)
class WorkerLost:
    """Raised by a transport, not a worker: the worker process is gone (crash, kill, exit)."""

    worker_id: str
    reason: str


@dataclass(frozen=True)
class SlotFree:
    """The worker can take another batch (generate) or training job (train)."""

    worker_id: str
    slot: SlotKind


@dataclass(frozen=True)
class Heartbeat:
    worker_id: str
    job_ids: tuple[int, ...] = field(default=())
    peak_memory_bytes: int = 0  # the accelerator's peak allocation so far (0 on CPU)


ToWorker = GenerateBatch | TrainJob | CancelJob | Shutdown
# A job attempt's last report: after it the worker holds nothing of that job.
JobOutcome = GenerateDone | TrainDone | JobFailed | JobCancelled | JobReleased
FromWorker = (
    WorkerReady
    | ModelSwitched
    | JobStarted
    | ProgressReport
    | TrainCheckpoint
    | JobOutcome
    | SlotFree
    | Heartbeat
    | WorkerLost
)

# --- a plain codec for transports that cross machines ------------------------------------

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        GenerateJob,
        ModelHeld,
        *get_args(ToWorker),
        *get_args(FromWorker),
        GenerateRequest,
        TrainRequest,
        EmbeddingPayload,
        GeneratedImage,
        Progress,
        TrainResult,
    )
}


# A switch cost a reader believes: loading a model never takes longer (a bigger value is a bug).
MAX_SWITCH_SECONDS = 3600.0

# Bounds on what `decode` accepts: the encoded size (callers pass theirs) and the nesting depth.
# Our messages nest at most 6 levels (batch → jobs → job → request → embeddings → payload).
MAX_DEPTH = 16


class DecodeError(ValueError):
    """An entry that is not a protocol message, or is too big or too deep to read; the message
    says which, in one sentence for the log."""


def from_worker(message: FromWorker, worker_id: str) -> FromWorker:
    """`message` signed by `worker_id` when it is a report about a job attempt."""
    if isinstance(message, JobAttempt) and not message.worker_id:
        return replace(message, worker_id=worker_id)
    return message


def _to_plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {
            "__t": type(value).__name__,
            **{f.name: _to_plain(getattr(value, f.name)) for f in fields(value)},
        }
    if isinstance(value, bytes):
        return {"__b": b64encode(value).decode("ascii")}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


# Field annotations (strings: this module uses postponed annotations) whose values `decode`
# checks, so a report with, say, a list for a job id is refused here and not deep in a handler.
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "bool": (bool,),
    "float": (int, float),
    "bytes": (bytes,),
    "int | None": (int, type(None)),
    "str | None": (str, type(None)),
    "float | None": (int, float, type(None)),
    "bytes | None": (bytes, type(None)),
}


def _build(cls: type, kwargs: dict[str, Any]) -> Any:
    for f in fields(cls):
        expected = _PLAIN_TYPES.get(str(f.type))
        if expected and f.name in kwargs and not isinstance(kwargs[f.name], expected):
            raise DecodeError(f"{cls.__name__}.{f.name} is a {type(kwargs[f.name]).__name__}")
        if str(f.type) == "tuple[str, ...]" and f.name in kwargs:
            value = kwargs[f.name]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DecodeError(f"{cls.__name__}.{f.name} is not a list of strings")
        if isinstance(kwargs.get(f.name), list):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)


def _from_plain(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise DecodeError(f"the message nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if "__b" in value:
            return b64decode(value["__b"], validate=True)
        if "__t" in value:
            cls = _TYPES[value["__t"]]
            kwargs = {k: _from_plain(v, depth + 1) for k, v in value.items() if k != "__t"}
            return _build(cls, kwargs)
        return {k: _from_plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_plain(v, depth + 1) for v in value]
    return value


def encode(message: object) -> bytes:
    """Serialise a protocol message (a dataclass above) to bytes; no pickle involved."""
    return json.dumps(_to_plain(message), separators=(",", ":")).encode("utf-8")


def decode(data: bytes, max_bytes: int | None = None) -> Any:
    """The inverse of `encode`; only the dataclasses of this protocol can come out.

    DecodeError for anything else: more than `max_bytes`, nesting deeper than MAX_DEPTH (the
    JSON parser's own recursion limit stops far deeper input before it can exhaust the stack),
    unknown types, missing or extra fields, bad base64."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DecodeError(f"the entry is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        return _from_plain(json.loads(data))
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError(f"the message nests deeper than {MAX_DEPTH} levels") from None
    except (KeyError, ValueError, TypeError) as error:
        raise DecodeError(f"not a Lexicon message ({type(error).__name__}: {error})") from None
