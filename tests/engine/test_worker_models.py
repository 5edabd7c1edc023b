"""A real worker loop on CPU with two tiny models (SD 1.x and SDXL) and a memory budget that fits
one: jobs for each in turn evict the other, every switch is reported with its load time, and an
image rendered after switching back equals a fresh engine's."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from engine import protocol
from engine.diffusers_engine import DiffusersEngine
from engine.jobs import GenerateRequest
from engine.model import LoadedModel
from engine.worker.local import model_cache
from engine.worker.loop import Worker
from engine.worker_config import EngineSpec, ModelSource, WorkerConfig

# The tiny models keep about 15 MB (SD 1.x) and 30 MB (SDXL) of weights: either fits, not both.
BUDGET = 40 * 1024**2


class _Pipe:
    """A `Channel` to a worker thread: what it sends lands in `sent`."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[protocol.ToWorker] = queue.Queue()
        self.sent: queue.Queue[protocol.FromWorker] = queue.Queue()

    def send(self, message: protocol.FromWorker) -> None:
        self.sent.put(message)

    def poll(self, timeout: float) -> protocol.ToWorker | None:
        try:
            return self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
        except queue.Empty:
            return None

    def until(self, kind: type, job_id: int | None = None) -> list[protocol.FromWorker]:
        """Everything sent up to the first `kind` (about `job_id`), that one included."""
        seen: list[protocol.FromWorker] = []
        while True:
            message = self.sent.get(timeout=120)
            seen.append(message)
            if isinstance(message, kind) and getattr(message, "job_id", job_id) == job_id:
                return seen


def _request(model: str) -> GenerateRequest:
    return GenerateRequest("a red cube on a table", 7, 3, 6.0, 64, 64, model=model)


def test_a_budget_for_one_model_switches_and_renders_as_a_fresh_engine(
    engine_data_dir: Path, tiny_model: LoadedModel, tiny_sdxl_model: LoadedModel
) -> None:
    """sd → xl → sd → xl under a one-model budget: three switches, each evicting the other, and
    the SDXL image after switching back equals that of an engine loaded after the cache closed."""
    spec = EngineSpec(
        "diffusers",
        (ModelSource("sd", "tiny"), ModelSource("xl", "tiny-sdxl")),
        "cpu",
        engine_data_dir,
        model_memory=BUDGET,
    )
    models = model_cache(spec)
    sizes = models.policy.sizes
    assert max(sizes.values()) <= BUDGET < sum(sizes.values())
    assert models.resident == ("sd",)

    pipe = _Pipe()
    worker = Worker(models, pipe, WorkerConfig("w1", heartbeat_interval=0.2))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        ready = pipe.until(protocol.WorkerReady)[-1]
        assert isinstance(ready, protocol.WorkerReady)
        assert [(m.name, m.family, m.resident) for m in ready.models] == [
            ("sd", "tiny", True),
            ("xl", "tiny-sdxl", False),
        ]
        assert all(m.switch_seconds > 0 for m in ready.models)

        switches: list[protocol.ModelSwitched] = []
        images: dict[int, bytes] = {}
        for job_id, model in enumerate(("xl", "sd", "xl", "xl"), start=1):
            job = protocol.GenerateJob(job_id, 1, _request(model))
            pipe.inbox.put(protocol.GenerateBatch((job,)))
            for message in pipe.until(protocol.GenerateDone, job_id):
                if isinstance(message, protocol.ModelSwitched):
                    switches.append(message)
                if isinstance(message, protocol.GenerateDone):
                    images[job_id] = message.images[0].png
    finally:
        pipe.inbox.put(protocol.Shutdown())
        thread.join(timeout=30)
        models.close()  # as a worker exits: the PNG encoder threads stop with the engines
    encoders = [t.name for t in threading.enumerate() if t.name.startswith(("png", "deflate"))]
    assert encoders == []

    assert [(s.model, s.resident) for s in switches] == [
        ("xl", ("xl",)),
        ("sd", ("sd",)),
        ("xl", ("xl",)),
    ]  # the fourth job found its model resident: no switch
    assert all(s.worker_id == "w1" and s.seconds > 0 for s in switches)
    # A later engine in the same process renders: closing the cache did not break its encoders.
    fresh = DiffusersEngine.load("tiny-sdxl", "cpu", engine_data_dir)
    expected = fresh.generate([_request("xl")], lambda *_: False)[0][0].png
    assert images[1] == images[3] == images[4] == expected
