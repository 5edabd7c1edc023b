"""Which of a worker's models sit on the accelerator, and what it costs to bring one back.

A worker holds several models (EngineSpec.models) but memory may fit fewer. `LruPolicy` is the
bookkeeping alone — resident models by recency, their measured footprints, a byte budget — and
decides which to evict so the next one fits. `ModelCache` applies it: it loads a model when a job
needs it, drops the least recently used ones first, and times each load (the *switch cost* the
worker reports, `protocol.ModelSwitched`, and the scheduler adds to the ETA of a job whose model
is not resident). Both are torch-free; the worker's loader (`engine.worker.local`) measures the
footprint and releases accelerator memory after an eviction.

A model a running training uses is pinned: it is never evicted under the training (its weights
would stay referenced, so eviction would free nothing). When the budget cannot be met without
evicting a pinned model, the next model loads over budget and a warning is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from engine.engine_api import Engine
from engine.protocol import ModelHeld

log = logging.getLogger("lexicon.worker")


class LruPolicy:
    """Resident models, least recently used first, under a byte budget (None: no cap)."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self._resident: OrderedDict[str, int] = OrderedDict()  # name → bytes, oldest first
        self.sizes: dict[str, int] = {}  # the last measured footprint of every model loaded

    @property
    def resident(self) -> tuple[str, ...]:
        """Resident models, least recently used first."""
        return tuple(self._resident)

    @property
    def used(self) -> int:
        return sum(self._resident.values())

    def expected_size(self, name: str) -> int:
        """`name`'s footprint as measured last; before its first load, the largest one known."""
        return self.sizes.get(name, max(self.sizes.values(), default=0))

    def touch(self, name: str) -> None:
        """`name` was just used: it becomes the most recently used."""
        self._resident.move_to_end(name)

    def room_for(self, name: str, pinned: Collection[str] = ()) -> list[str]:
        """The residents to evict, oldest first, so that `name` fits next to the others."""
        return self._over_budget(self.expected_size(name), keep={name, *pinned})

    def admit(self, name: str, size: int, pinned: Collection[str] = ()) -> list[str]:
        """Record `name` loaded with `size` bytes; the residents to evict now that its real size
        is known (it may be bigger than expected)."""
        self.sizes[name] = size
        self._resident[name] = size
        self._resident.move_to_end(name)
        return self._over_budget(0, keep={name, *pinned})

    def evict(self, name: str) -> None:
        self._resident.pop(name, None)

    def _over_budget(self, extra: int, keep: Collection[str]) -> list[str]:
        if self.budget is None:
            return []
        evict: list[str] = []
        used = self.used + extra
        for name, size in self._resident.items():
            if used <= self.budget:
                break
            if name not in keep:
                evict.append(name)
                used -= size
        return evict


@dataclass(frozen=True)
class Loaded:
    """What loading a model gave: its engine and the accelerator bytes the load kept."""

    engine: Engine
    size: int


class ModelCache:
    """The engines of a worker's models, loaded on demand under an `LruPolicy`.

    `load(name)` loads one model; `release()` runs after evictions (the worker's loader frees
    accelerator memory there). Thread-safe for the heartbeat thread's `peak_memory_bytes`."""

    def __init__(
        self,
        names: Sequence[str],
        load: Callable[[str], Loaded],
        *,
        budget: int | None = None,
        release: Callable[[], None] = lambda: None,
    ) -> None:
        if not names:
            raise ValueError("a worker holds at least one model")
        self.names = tuple(names)
        self.policy = LruPolicy(budget)
        self.switch_seconds: dict[str, float] = {}  # the last load of each model took this long
        self._load = load
        self._release = release
        self._engines: dict[str, Engine] = {}
        self._described: dict[str, ModelHeld] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Load every model once — to learn what it is and how long it takes to load — the last
        configured first, so the first ones (the deployment's default first) stay resident."""
        try:
            for name in reversed(self.names):
                self.get(name)
        except BaseException:
            self.close()
            raise

    @property
    def resident(self) -> tuple[str, ...]:
        """The models on the accelerator now, least recently used first."""
        return self.policy.resident

    @property
    def device(self) -> str:
        with self._lock:
            return next(iter(self._engines.values())).device

    def held(self) -> tuple[ModelHeld, ...]:
        """Every model, in configured order, as `WorkerReady` announces it."""
        resident = set(self.resident)
        return tuple(
            ModelHeld(
                held.name,
                held.family,
                held.width,
                held.model_hash,
                resident=held.name in resident,
                switch_seconds=round(self.switch_seconds.get(held.name, 0.0), 3),
            )
            for held in (self._described[name] for name in self.names)
        )

    def get(self, name: str, pinned: Collection[str] = ()) -> tuple[Engine, float | None]:
        """The engine of `name`, and the seconds it took to load when it was not resident (a
        switch: `pinned` models are kept, the least recently used others evicted to make room)."""
        engine = self._engines.get(name)
        if engine is not None:
            self.policy.touch(name)
            return engine, None
        started = time.perf_counter()
        self._evict(self.policy.room_for(name, pinned))
        if self.policy.budget is not None:
            expected = self.policy.used + self.policy.expected_size(name)
            if expected > self.policy.budget:
                log.warning(
                    "loading %s takes the models to about %d MiB, over the %d MiB budget "
                    "(LEXICON_WORKER_MODEL_MEMORY): the others left are in use, or it alone is "
                    "bigger",
                    name,
                    expected >> 20,
                    self.policy.budget >> 20,
                )
        loaded = self._load(name)
        with self._lock:
            self._engines[name] = loaded.engine
        self._evict(self.policy.admit(name, loaded.size, pinned))
        seconds = time.perf_counter() - started
        self.switch_seconds[name] = seconds
        engine = loaded.engine
        self._described[name] = ModelHeld(name, engine.family, engine.width, engine.model_hash)
        log.info("loaded %s in %.1f s; resident: %s", name, seconds, ", ".join(self.resident))
        return engine, seconds

    def _evict(self, names: list[str]) -> None:
        if not names:
            return
        with self._lock:
            for name in names:
                self._engines.pop(name, None)
                self.policy.evict(name)
        log.info("evicted %s to make room", ", ".join(names))
        self._release()

    def peak_memory_bytes(self) -> int:
        with self._lock:
            engines = list(self._engines.values())
        return max((engine.peak_memory_bytes() for engine in engines), default=0)

    def close(self) -> None:
        """Close the resident engines (their threads must stop before the interpreter)."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()
