"""Scale-out simulation: throughput with 1, 2, 4, 8 Redis workers, and where the bot saturates.

    python -m bench.scaleout [--workers 1 2 4 8] [--jobs 400] [--step-seconds 0.02 0] [--repeat 3]

Each run starts its own redis-server (no persistence) and N stand-in worker processes
(`engine.worker.redis.serve` with the torch-free stand-in engine, which sleeps a fixed time per
denoising step, as a GPU of fixed speed would), queues `--jobs` one-image /imagine jobs from
`--users` users, then opens the bot core (scheduler + RedisTransport, in this process) and times
until every job has succeeded. The bot's CPU time is measured on this process alone: when it
nears one core (100 %), the bot — SQLite writes, the scheduler, decoding results — is the limit,
not the workers. `--step-seconds 0` removes the "GPU" entirely, so only that overhead remains.

Prints one Markdown table row per run (docs/SCALING.md holds a measured table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bot.services import ImagineOptions

REPO = Path(__file__).resolve().parent.parent
STEPS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    import redis

    port = _free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(500):
        with contextlib.suppress(redis.exceptions.ConnectionError):
            client.ping()
            break
        time.sleep(0.01)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def serve_worker(url: str, worker_id: str, step_seconds: float, max_batch: int) -> int:
    """The worker side, in a child process."""
    from engine.redis_wire import liveness_for
    from engine.worker.redis import serve
    from engine.worker_config import EngineSpec, ModelSource, WorkerConfig

    heartbeat, ttl = liveness_for(30.0)
    models = (ModelSource("standin", "standin"),)
    spec = EngineSpec("standin", models, "cpu", Path(tempfile.gettempdir()), step_seconds)
    config = WorkerConfig(worker_id, max_batch=max_batch, heartbeat_interval=heartbeat)
    return serve(url, spec, config, ttl=ttl)


async def one_run(
    workers: int, jobs: int, users: int, step_seconds: float, max_batch: int, tmp: Path
) -> dict[str, float]:
    import redis

    from bot.app import Lexicon
    from bot.config import Settings
    from bot.redis_transport import RedisTransport

    with redis_server(tmp) as url:
        command = [sys.executable, "-m", "bench.scaleout", "--serve-worker", url]
        processes = [
            subprocess.Popen([*command, f"w{i}", str(step_seconds), str(max_batch)], cwd=REPO)  # noqa: ASYNC220
            for i in range(workers)
        ]
        try:
            client = redis.Redis.from_url(url)
            while client.scard("lexicon:workers") < workers:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            values: dict[str, object] = {
                "engine": "standin",
                "model": "standin",
                "data_dir": tmp / "data",
                "queue": url,
                "allowed_sizes": ["64x64"],
                "max_queued_per_user": jobs,
                "max_batch": max_batch,
            }
            settings = Settings(**values)  # type: ignore[arg-type]
            async with await Lexicon.open(settings, start_worker=False) as app:
                ids = []
                for i in range(jobs):
                    submitted = await app.imagine.submit(
                        i % users + 1, ImagineOptions(f"job {i}", seed=i, steps=STEPS)
                    )
                    ids.append(submitted.job.id)
            started, cpu = time.perf_counter(), time.process_time()
            app = await Lexicon.open(settings, RedisTransport(url))
            try:
                # One subscriber for all jobs (a waiter per job would re-read every job on every
                # update and measure itself rather than the bot).
                with app.hub.subscribe() as updates:
                    waiting = set(ids)
                    while waiting:
                        update = await updates.get()
                        if update.is_final:
                            waiting.discard(update.job_id)
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu
                states = {(await app.storage.jobs.get(j)).state.value for j in ids}
                assert states == {"succeeded"}, states
            finally:
                await app.close()
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    return {"wall": wall, "jobs_per_s": jobs / wall, "bot_cpu": cpu / wall}


PROFILE: dict[str, list[float]] = {}


def profile_scheduler() -> None:
    """Time each event the scheduler handles, and each dispatch round, by type."""
    from bot.scheduler import Scheduler

    handle, dispatch = Scheduler.handle, Scheduler._dispatch

    def timed(name: str, started: float) -> None:
        entry = PROFILE.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - started

    async def timed_handle(self: Scheduler, event: object) -> None:
        started = time.perf_counter()
        await handle(self, event)  # type: ignore[arg-type]
        timed(type(event).__name__, started)

    async def timed_dispatch(self: Scheduler) -> None:
        started = time.perf_counter()
        await dispatch(self)
        timed("dispatch (claim + submit)", started)

    Scheduler.handle = timed_handle  # type: ignore[method-assign]
    Scheduler._dispatch = timed_dispatch  # type: ignore[method-assign]


def print_profile() -> None:
    print("\n| bot work | count | total s | ms each |\n|---|---|---|---|")
    for name, (count, seconds) in sorted(PROFILE.items(), key=lambda item: -item[1][1]):
        print(f"| {name} | {count:.0f} | {seconds:.2f} | {1000 * seconds / count:.2f} |")
    PROFILE.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--step-seconds", type=float, nargs="+", default=[0.02, 0.0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    parser.add_argument(
        "--profile", action="store_true", help="also print the bot's time per event type"
    )
    parser.add_argument("--serve-worker", nargs=4, metavar=("URL", "ID", "STEP", "BATCH"))
    args = parser.parse_args()
    if args.serve_worker:
        url, worker_id, step, batch = args.serve_worker
        raise SystemExit(serve_worker(url, worker_id, float(step), int(batch)))
    import logging

    logging.basicConfig(level=logging.ERROR)
    if args.profile:
        profile_scheduler()
    print(f"{os.cpu_count()} CPUs; {args.jobs} jobs from {args.users} users, {STEPS} steps each,")
    print(f"batches of up to {args.max_batch}.\n")
    print("| step time | workers | ideal jobs/s | measured jobs/s | speed-up | bot CPU |")
    print("|---|---|---|---|---|---|")
    for step_seconds in args.step_seconds:
        base = None
        for workers in args.workers:
            runs = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(
                        asyncio.run(
                            one_run(
                                workers,
                                args.jobs,
                                args.users,
                                step_seconds,
                                args.max_batch,
                                Path(tmp),
                            )
                        )
                    )
            result = sorted(runs, key=lambda run: run["jobs_per_s"])[len(runs) // 2]
            base = base or result["jobs_per_s"]
            ideal = (
                f"{workers * args.max_batch / (STEPS * step_seconds):.0f}" if step_seconds else "∞"
            )
            print(
                f"| {step_seconds * 1000:.0f} ms | {workers} | {ideal} | "
                f"{result['jobs_per_s']:.1f} | {result['jobs_per_s'] / base:.2f}x | "
                f"{result['bot_cpu'] * 100:.0f} % |",
                flush=True,
            )
            if args.profile:
                print_profile()


if __name__ == "__main__":
    main()
