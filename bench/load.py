"""Load test: many members × /imagine through SimCord, the real scheduler and a stand-in GPU.

    python -m bench.load [--users 200] [--jobs 5] [--step-seconds 0.1] [--steps 4]
                         [--tracemalloc] [--json PATH]

Every member asks for `--jobs` pictures with `/imagine` through SimCord (the real discord.py,
cogs, services, SQLite scheduler, worker process and delivery), one at a time: the next as soon
as the previous one is delivered — equal demand, and a queue as long as there are members (a
busy server, not a burst that drains). The worker runs the torch-free stand-in engine, which
sleeps `--step-seconds` per denoising step like a GPU of fixed speed, so the GPU is the
bottleneck and the scheduler's order decides who waits. The run ends when every job is
delivered.

What it reports, and how each figure is defined:

- **lost**: jobs whose command answered "Queued" but that did not end succeeded and delivered
  with their image (must be 0); **duplicated**: results posted more than once (must be 0).
- **fairness**: each member's mean wait (job started − job created, from the job rows) over
  their jobs after the first; the ratio of the largest to the smallest of these means (goal
  ≤ 1.2). The first job of each member is reported apart: it fills the pipeline, so someone is
  necessarily first and someone last.
- **bot overhead per job**: wall time the bot spends on one job outside the engine, summed over
  every stage that handles it — the service call behind `/imagine` (validate, queue, position),
  its share of the dispatch that claimed its batch and sent it to the worker, every worker
  event about it the scheduler records (started, progress, done: images written to disk and
  SQLite), and the delivery (rendering, the Discord edit with the image, marking it delivered)
  — plus an equal share of work that is for nobody in particular (heartbeats, slot reports).
  Wall time, so waiting for the database lock or the event loop counts. Reported as p50/p95/max
  (goal: p95 ≤ 50 ms). SimCord's own handling of the simulated HTTP calls is inside the
  delivery stage, so the figure is an upper bound.
- **memory**: resident set size of this process (bot + simulated Discord) after a warm-up and
  after the run; with `--tracemalloc`, also the growth of memory allocated by Lexicon's own
  code (bot/, cogs/, storage/), which leaves out the simulator's ever-growing message history.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.scheduler import Scheduler
from bot.services import ImagineService
from cogs.delivery import DeliveryCog
from tests.simulation import Simulation, simulated

if TYPE_CHECKING:
    from simcord.actors import MemberActor

WARM_UP_JOBS = 20
# SimCord's settle waits for every bot timer due within its window. Below the delivery's 2 s
# edit throttle, a command does not wait for throttled progress edits of other members' jobs
# (on Discord it would not either); the bot's real work per command is milliseconds.
SETTLE_SECONDS = 1.5
_TRACED = ("*/bot/*", "*/cogs/*", "*/storage/*")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    users: int
    jobs_per_user: int
    step_seconds: float
    steps: int
    queued: int
    lost: int
    duplicated: int
    wall_seconds: float
    jobs_per_second: float
    wait_mean_min: float
    wait_mean_max: float
    first_wait_min: float
    first_wait_max: float
    fairness: float  # max / min of the members' mean waits
    overhead_p50_ms: float
    overhead_p95_ms: float
    overhead_max_ms: float
    bot_cpu_ms_per_job: float
    rss_before_mib: float
    rss_after_mib: float
    lexicon_traced_growth_kib: float | None
    stage_ms_per_job: dict[str, float] = dataclasses.field(default_factory=dict)

    def markdown(self) -> str:
        traced = (
            "—"
            if self.lexicon_traced_growth_kib is None
            else f"{self.lexicon_traced_growth_kib:+.0f} KiB"
        )
        rows = [
            ("members × jobs", f"{self.users} × {self.jobs_per_user} = {self.queued} queued"),
            ("lost / duplicated", f"{self.lost} / {self.duplicated}"),
            ("wall time", f"{self.wall_seconds:.1f} s ({self.jobs_per_second:.1f} jobs/s)"),
            (
                "mean wait per member, jobs 2… (min … max)",
                f"{self.wait_mean_min:.2f} … {self.wait_mean_max:.2f} s",
            ),
            (
                "wait of each member's first job (min … max)",
                f"{self.first_wait_min:.2f} … {self.first_wait_max:.2f} s",
            ),
            ("fairness (max / min mean wait)", f"{self.fairness:.3f}"),
            (
                "bot overhead per job p50 / p95 / max",
                f"{self.overhead_p50_ms:.1f} / {self.overhead_p95_ms:.1f} / "
                f"{self.overhead_max_ms:.1f} ms",
            ),
            ("bot process CPU per job", f"{self.bot_cpu_ms_per_job:.1f} ms"),
            (
                "RSS after warm-up → after run",
                f"{self.rss_before_mib:.0f} → {self.rss_after_mib:.0f} MiB",
            ),
            ("Lexicon code's traced allocations, growth", traced),
        ]
        rows += [
            (f"… of which `{stage}` (mean per job)", f"{value:.1f} ms")
            for stage, value in self.stage_ms_per_job.items()
        ]
        return "\n".join(["| figure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


class _Overhead:
    """Wall time the bot spends per job, gathered by timing wrappers around its stages."""

    def __init__(self) -> None:
        self.per_job: dict[int, float] = defaultdict(float)
        self.per_stage: dict[str, float] = defaultdict(float)
        self.shared = 0.0
        self._batch: list[int] = []
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        self._wrap(ImagineService, "submit", lambda args, result: [result.job.id])
        self._wrap(Scheduler, "handle", lambda args, result: _event_jobs(args[1]))
        self._wrap(Scheduler, "_dispatch_generate", lambda args, result: self._take_batch())
        self._wrap(DeliveryCog, "deliver", lambda args, result: [args[1]])
        self._wrap(DeliveryCog, "_flush", lambda args, result: [args[1]])

    def reset(self) -> None:
        """Forget what was timed so far (the warm-up)."""
        self.per_job.clear()
        self.per_stage.clear()
        self.shared = 0.0

    def watch_transport(self, scheduler: Scheduler) -> None:
        transport = scheduler.transport
        real = transport.submit

        async def submit(work: Any) -> None:
            self._batch = [job.job_id for job in getattr(work, "jobs", ())]
            await real(work)

        transport.submit = submit  # type: ignore[method-assign]

    def _take_batch(self) -> list[int]:
        batch, self._batch = self._batch, []
        return batch

    def _wrap(
        self,
        owner: type,
        name: str,
        jobs_of: Callable[[tuple[Any, ...], Any], list[int]],
    ) -> None:
        real: Callable[..., Awaitable[Any]] = getattr(owner, name)
        overhead = self

        @functools.wraps(real)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = await real(*args, **kwargs)
            elapsed = time.perf_counter() - started
            overhead.per_stage[f"{owner.__name__}.{name}"] += elapsed
            ids = jobs_of(args, result)
            if ids:
                for job_id in ids:
                    overhead.per_job[job_id] += elapsed / len(ids)
            else:
                overhead.shared += elapsed
            return result

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, real))

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def milliseconds(self, job_ids: list[int]) -> list[float]:
        share = self.shared / max(1, len(job_ids))
        return [1000.0 * (self.per_job.get(job_id, 0.0) + share) for job_id in job_ids]


def _prompts_in(content: str) -> list[str]:
    """The load test's prompts (`memberNNN picture R`) a message shows, by its bold title."""
    return [part for part in content.split("**")[1::2] if " picture " in part]


def _event_jobs(event: Any) -> list[int]:
    job_id = getattr(event, "job_id", None)
    return [job_id] if isinstance(job_id, int) else []


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _traced_kib() -> float:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in _TRACED]
    )
    return sum(stat.size for stat in snapshot.statistics("filename")) / 1024


def load_settings(data_dir: Path, steps: int) -> Settings:
    """Production defaults (queue cap 5, rate limit 20/min, batch 8) on the stand-in engine."""
    return Settings.model_validate(
        {
            "model": "standin",
            "engine": "standin",
            "data_dir": data_dir,
            "device": "cpu",
            "allowed_sizes": ["64x64"],
            "default_steps": steps,
        }
    )


async def run_load(
    data_dir: Path,
    *,
    users: int = 200,
    jobs_per_user: int = 5,
    step_seconds: float = 0.1,
    steps: int = 4,
    trace_memory: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Run the load test in a fresh data dir and return its figures (see the module doc)."""
    say = progress or (lambda text: None)
    overhead = _Overhead()
    overhead.install()
    try:
        async with simulated(
            load_settings(data_dir, steps),
            standin_step_seconds=step_seconds,
            settle_timeout=SETTLE_SECONDS,
        ) as sim:
            overhead.watch_transport(sim.app.scheduler)
            return await _drive(
                sim, overhead, users, jobs_per_user, step_seconds, steps, trace_memory, say
            )
    finally:
        overhead.uninstall()
        if tracemalloc.is_tracing():
            tracemalloc.stop()


async def _drive(
    sim: Simulation,
    overhead: _Overhead,
    users: int,
    jobs_per_user: int,
    step_seconds: float,
    steps: int,
    trace_memory: bool,
    say: Callable[[str], None],
) -> LoadReport:
    # Warm-up: first-use costs (imports, caches, the worker's first batch) are not growth.
    warm = sim.member("warm-up")
    for index in range(WARM_UP_JOBS):
        await warm.slash(sim.channel, "imagine", prompt=f"warm-up {index}")
        if index % 4 == 3:
            await sim.job_done(warm)
    overhead.reset()
    if trace_memory:
        tracemalloc.start(1)
    rss_before = _rss_mib()
    traced_before = _traced_kib() if trace_memory else 0.0

    members = [sim.member(f"member{index:03d}") for index in range(users)]
    by_id = {member.id: member for member in members}
    asked = dict.fromkeys(by_id, 0)  # member id → jobs asked for so far
    queued: dict[int, str] = {}  # job id → its prompt (unique)
    waiting: set[int] = set()  # queued, not delivered yet
    cpu_started, started = time.process_time(), time.perf_counter()

    async def ask(member: MemberActor) -> None:
        round_ = asked[member.id]
        asked[member.id] += 1
        prompt = f"{member.name} picture {round_}"
        result = await member.slash(sim.channel, "imagine", prompt=prompt, seed=round_)
        # The response is live: a fast job may already show its result, not "Queued".
        assert result.response is not None and not result.response.ephemeral, result
        job = await sim.latest_job(member)
        assert job.params["prompt"] == prompt and job.id not in queued, job
        queued[job.id] = prompt
        waiting.add(job.id)

    for member in members:
        await ask(member)
    first_job = min(queued)
    db = sim.app.storage.db
    delivered: list[int] = []

    async def some_delivered() -> bool:
        rows = await db.fetch_all(
            "SELECT id, user_id FROM jobs WHERE delivered = 1 AND id >= ?", (first_job,)
        )
        delivered[:] = [row[1] for row in rows if row[0] in waiting]
        waiting.difference_update(row[0] for row in rows)
        return bool(delivered) or not waiting

    while waiting:
        await sim.until(some_delivered, limit=600, what="a job to be delivered")
        for user_id in delivered:
            if asked[user_id] < jobs_per_user:
                await ask(by_id[user_id])
        if len(queued) % (10 * users) < len(delivered):
            say(f"{len(queued) - len(waiting)} of {users * jobs_per_user} jobs delivered")

    jobs = sim.app.storage.jobs

    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    rss_after = _rss_mib()
    traced_growth = _traced_kib() - traced_before if trace_memory else None

    posted: dict[str, int] = defaultdict(int)  # prompt → messages showing its image
    for message in sim.channel.history():
        if any(a.filename.endswith(".png") for a in message.attachments):
            for prompt in _prompts_in(message.content):
                posted[prompt] += 1
    lost = duplicated = 0
    waits: dict[int, list[float]] = defaultdict(list)
    for job_id, prompt in queued.items():
        job = await jobs.get(job_id)
        if job.state.value != "succeeded" or not job.delivered or posted[prompt] == 0:
            lost += 1
            continue
        duplicated += posted[prompt] - 1
        assert job.started_at is not None
        waits[job.user_id].append((job.started_at - job.created_at).total_seconds())
    # A member's first job fills the pipeline (someone is necessarily first and someone
    # last); from the second on every member waits one full round of the others.
    means = [statistics.fmean(values[1:] or values) for values in waits.values()] or [0.0]
    first = [values[0] for values in waits.values()] or [0.0]
    costs = sorted(overhead.milliseconds(list(queued)))
    return LoadReport(
        users=users,
        jobs_per_user=jobs_per_user,
        step_seconds=step_seconds,
        steps=steps,
        queued=len(queued),
        lost=lost,
        duplicated=duplicated,
        wall_seconds=wall,
        jobs_per_second=len(queued) / wall,
        wait_mean_min=min(means),
        wait_mean_max=max(means),
        first_wait_min=min(first),
        first_wait_max=max(first),
        fairness=max(means) / max(min(means), 1e-9),
        overhead_p50_ms=_percentile(costs, 50),
        overhead_p95_ms=_percentile(costs, 95),
        overhead_max_ms=costs[-1] if costs else 0.0,
        bot_cpu_ms_per_job=1000.0 * cpu / max(1, len(queued)),
        rss_before_mib=rss_before,
        rss_after_mib=rss_after,
        lexicon_traced_growth_kib=traced_growth,
        stage_ms_per_job={
            stage: 1000.0 * total / max(1, len(queued))
            for stage, total in sorted(overhead.per_stage.items())
        },
    )


def _percentile(sorted_values: list[float], percent: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(percent / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per member")
    parser.add_argument("--step-seconds", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lexicon-load-") as folder:
        report = asyncio.run(
            run_load(
                Path(folder) / "data",
                users=args.users,
                jobs_per_user=args.jobs,
                step_seconds=args.step_seconds,
                steps=args.steps,
                trace_memory=args.tracemalloc,
                progress=lambda text: print(text, file=sys.stderr, flush=True),
            )
        )
    print(report.markdown())
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    return 0 if report.lost == 0 and report.duplicated == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
