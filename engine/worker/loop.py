"""The GPU worker loop: run what the scheduler hands over, report everything back.

The loop knows nothing about torch; it drives an `Engine` (`engine.engine_api`: the real one in
`engine.diffusers_engine`, or a fast stand-in for load tests) and talks through a `Channel` (a
multiprocessing pipe for the embedded worker, Redis streams for remote ones). One thread runs
the loop; a second thread sends heartbeats so the bot can tell a busy worker from a dead one.
A heartbeat names every job the worker holds, from the moment it is received until its outcome
is sent — queued behind a batch, starting (a model warming up, photos decoding, latents
encoding inside `start_training`) or running — so no lease runs out while the worker has it.

Scheduling inside a worker is deliberately simple, because fairness lives in the bot:
- a generate batch runs as soon as it arrives, ahead of training;
- training runs in slices of `train_slice_steps`, so a batch that arrives mid-training starts
  within one slice;
- between denoising steps and training slices the inbox is polled, so a cancel takes effect at
  the next step.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from engine import protocol
from engine.engine_api import Engine, TrainingRun, UserInputError
from engine.errors import Cancelled
from engine.jobs import Progress
from engine.worker.cache import ModelCache
from engine.worker_config import WorkerConfig

log = logging.getLogger("lexicon.worker")


class Channel(Protocol):
    """A duplex message link to the bot."""

    def send(self, message: protocol.FromWorker) -> None: ...

    def poll(self, timeout: float) -> protocol.ToWorker | None:
        """The next message, waiting up to `timeout` seconds; None when none came."""
        ...


@dataclass
class _Training:
    job: protocol.TrainJob
    run: TrainingRun
    started: float
    last_checkpoint_step: int


class Worker:
    """Serves the models of `models` (by configured name): each request names its model, and
    a batch holds requests for one model only (the scheduler never mixes them). A model that is
    not resident is loaded first, and the switch reported (`ModelSwitched`)."""

    def __init__(self, models: ModelCache, channel: Channel, config: WorkerConfig) -> None:
        self.models = models
        self.channel = channel
        self.config = config
        self._send_lock = threading.Lock()
        self._batches: deque[protocol.GenerateBatch] = deque()
        self._trainings: deque[protocol.TrainJob] = deque()
        self._training: _Training | None = None
        self._cancelled: set[int] = set()
        self._held: set[int] = set()  # job ids received and not yet answered with an outcome
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()

    # --- plumbing --------------------------------------------------------------------------

    def send(self, message: protocol.FromWorker) -> None:
        message = protocol.from_worker(message, self.config.worker_id)
        with self._send_lock:
            self.channel.send(message)
        if isinstance(message, protocol.JobOutcome):
            with self._held_lock:
                self._held.discard(message.job_id)

    def _heartbeats(self) -> None:
        while not self._stopping.wait(self.config.heartbeat_interval):
            with self._held_lock:
                ids = tuple(sorted(self._held))
            try:
                memory = self.models.peak_memory_bytes()
                self.send(protocol.Heartbeat(self.config.worker_id, ids, memory))
            except (OSError, EOFError):
                return

    def _accept(self, message: protocol.ToWorker) -> None:
        if isinstance(message, protocol.GenerateBatch):
            self._hold(job.job_id for job in message.jobs)
            self._batches.append(message)
        elif isinstance(message, protocol.TrainJob):
            self._hold([message.job_id])
            self._trainings.append(message)
        elif isinstance(message, protocol.CancelJob):
            self._cancelled.add(message.job_id)
        elif isinstance(message, protocol.Shutdown):
            self._stopping.set()

    def _hold(self, job_ids: Iterable[int]) -> None:
        """From now until its outcome, every heartbeat names the job (its lease is kept)."""
        with self._held_lock:
            self._held.update(job_ids)

    def _drain(self, timeout: float = 0.0) -> None:
        message = self.channel.poll(timeout)
        while message is not None:
            self._accept(message)
            if self._stopping.is_set():
                return
            message = self.channel.poll(0.0)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until a Shutdown arrives; returns after releasing unfinished work."""
        held = self.models.held()
        device = self.models.device
        self.send(protocol.WorkerReady(self.config.worker_id, device, self.config.max_batch, held))
        self.send(protocol.SlotFree(self.config.worker_id, "generate"))
        self.send(protocol.SlotFree(self.config.worker_id, "train"))
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        try:
            self._serve()
        except (OSError, EOFError):
            log.warning("the bot went away; the worker stops")
        finally:
            self._stopping.set()
            with contextlib.suppress(OSError, EOFError):
                self._release_unfinished()
            # A daemon thread still running at interpreter shutdown can abort the process.
            beat.join(timeout=self.config.heartbeat_interval + 1)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            idle = not (self._batches or self._trainings or self._training)
            self._drain(self.config.heartbeat_interval if idle else 0.0)
            if self._stopping.is_set():
                break
            if self._batches:
                self._run_batch(self._batches.popleft())
            elif self._training or self._trainings:
                self._run_training_slice()

    def _release_unfinished(self) -> None:
        pending = [job for batch in self._batches for job in batch.jobs]
        for job in pending:
            self.send(protocol.JobReleased(job.job_id, job.attempt))
        if self._training:
            run = self._training
            self.send(
                protocol.TrainCheckpoint(
                    run.job.job_id, run.job.attempt, run.run.step, run.run.checkpoint()
                )
            )
            self.send(protocol.JobReleased(run.job.job_id, run.job.attempt))
        for train_job in self._trainings:
            self.send(protocol.JobReleased(train_job.job_id, train_job.attempt))

    # --- generate --------------------------------------------------------------------------

    def _run_batch(self, batch: protocol.GenerateBatch) -> None:
        jobs = [job for job in batch.jobs if job.job_id not in self._cancelled]
        outcomes: list[protocol.FromWorker] = [
            protocol.JobCancelled(job.job_id, job.attempt)
            for job in batch.jobs
            if job.job_id in self._cancelled
        ]
        if jobs:
            try:
                outcomes += self._generate(jobs)
            except UserInputError:
                # One bad request must not sink the others: run each alone to find it.
                for job in jobs:
                    outcomes += self._generate([job])
        # Free the slot before sending the results: the scheduler can hand over the next batch
        # while it stores these images, so the GPU does not wait on the bot's disk writes.
        self.send(protocol.SlotFree(self.config.worker_id, "generate"))
        for outcome in outcomes:
            self.send(outcome)

    def _generate(self, jobs: list[protocol.GenerateJob]) -> list[protocol.FromWorker]:
        """Run one engine batch; returns each job's outcome message (not yet sent)."""
        ids = tuple(job.job_id for job in jobs)
        started = time.monotonic()
        for job in jobs:
            self.send(
                protocol.JobStarted(job.job_id, job.attempt, self.config.worker_id, len(jobs), ids)
            )
        last_report = 0.0

        def on_step(step: int, total: int, previews: list[bytes] | None) -> bool:
            nonlocal last_report
            self._drain()
            now = time.monotonic()
            if step == total or previews or now - last_report >= self.config.progress_interval:
                last_report = now
                elapsed = now - started
                eta = elapsed / step * (total - step) if step else None
                for index, job in enumerate(jobs):
                    if job.job_id not in self._cancelled:
                        preview = previews[index] if previews else None
                        progress = Progress(step, total, None, eta, preview)
                        self.send(protocol.ProgressReport(job.job_id, job.attempt, progress))
            if self._stopping.is_set():
                return True  # shutting down: give the batch back rather than finish it
            return all(job.job_id in self._cancelled for job in jobs)

        try:
            engine = self._engine_for(jobs[0].request.model)
            results = engine.generate([job.request for job in jobs], on_step)
        except Cancelled:
            return [
                protocol.JobCancelled(job.job_id, job.attempt)
                if job.job_id in self._cancelled
                else protocol.JobReleased(job.job_id, job.attempt)
                for job in jobs
            ]
        except UserInputError as error:
            if len(jobs) > 1:
                raise
            return [
                protocol.JobFailed(jobs[0].job_id, jobs[0].attempt, str(error), retryable=False)
            ]
        except Exception as error:  # an engine fault: log it, let the bot retry elsewhere
            log.exception("generate batch %s failed", ids)
            return [
                protocol.JobFailed(job.job_id, job.attempt, _fault_sentence(error), True)
                for job in jobs
            ]
        seconds = time.monotonic() - started
        return [
            protocol.JobCancelled(job.job_id, job.attempt)
            if job.job_id in self._cancelled
            else protocol.GenerateDone(job.job_id, job.attempt, tuple(images), seconds)
            for job, images in zip(jobs, results, strict=True)
        ]

    # --- train -----------------------------------------------------------------------------

    def _run_training_slice(self) -> None:
        if self._training is None:
            job = self._trainings.popleft()
            if job.job_id in self._cancelled:
                self.send(protocol.JobCancelled(job.job_id, job.attempt))
                self.send(protocol.SlotFree(self.config.worker_id, "train"))
                return
            self.send(
                protocol.JobStarted(
                    job.job_id, job.attempt, self.config.worker_id, 1, (job.job_id,)
                )
            )
            try:
                engine = self._engine_for(job.request.model)
                run = engine.start_training(job.request, job.resume_from)
            except UserInputError as error:
                self._end_training(
                    job, protocol.JobFailed(job.job_id, job.attempt, str(error), False)
                )
                return
            except Exception as error:
                log.exception("training job %s could not start", job.job_id)
                self._end_training(
                    job, protocol.JobFailed(job.job_id, job.attempt, _fault_sentence(error), True)
                )
                return
            self._training = _Training(job, run, time.monotonic(), run.step)

        training = self._training
        job, run = training.job, training.run
        if job.job_id in self._cancelled:
            self._end_training(job, protocol.JobCancelled(job.job_id, job.attempt))
            return
        try:
            steps = min(self.config.train_slice_steps, run.total - run.step)
            progress = run.run_steps(steps) if steps > 0 else Progress(run.step, run.total)
            self.send(protocol.ProgressReport(job.job_id, job.attempt, progress))
            if run.step >= run.total:
                result = run.finish()
                seconds = time.monotonic() - training.started
                self._end_training(
                    job, protocol.TrainDone(job.job_id, job.attempt, result, seconds)
                )
            elif run.step - training.last_checkpoint_step >= self.config.checkpoint_every:
                self.send(
                    protocol.TrainCheckpoint(job.job_id, job.attempt, run.step, run.checkpoint())
                )
                training.last_checkpoint_step = run.step
        except Cancelled:
            self._end_training(job, protocol.JobCancelled(job.job_id, job.attempt))
        except UserInputError as error:
            self._end_training(job, protocol.JobFailed(job.job_id, job.attempt, str(error), False))
        except Exception as error:
            log.exception("training job %s failed", job.job_id)
            self._end_training(
                job, protocol.JobFailed(job.job_id, job.attempt, _fault_sentence(error), True)
            )

    def _engine_for(self, model: str) -> Engine:
        """The engine of `model`, loaded first when it is not resident (the switch is reported;
        the running training's model stays). An empty name (a request from before models had
        names) means the first model the worker holds."""
        name = model or self.models.names[0]
        if name not in self.models.names:
            raise ModelNotHeld(model)
        training = self._training.job.request.model if self._training else None
        pinned = () if training is None else (training or self.models.names[0],)
        engine, seconds = self.models.get(name, pinned)
        if seconds is not None:
            self.send(
                protocol.ModelSwitched(
                    self.config.worker_id, name, round(seconds, 3), self.models.resident
                )
            )
        return engine

    def _end_training(self, job: protocol.TrainJob, outcome: protocol.FromWorker) -> None:
        self._training = None
        self.send(outcome)
        self.send(protocol.SlotFree(self.config.worker_id, "train"))


class ModelNotHeld(LookupError):
    """A job named a model this worker does not hold (the scheduler routes by model, so this is
    a routing fault: the job is retried, elsewhere)."""


def _fault_sentence(error: BaseException) -> str:
    return f"The GPU worker hit an internal error ({type(error).__name__}); it will be retried."
