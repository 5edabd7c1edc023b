"""The worker's model cache: which models stay on the accelerator under a byte budget (the LRU
policy, pure bookkeeping) and how the cache loads, evicts and times models (with stand-in
engines, so no torch is involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.protocol import ModelHeld
from engine.standin import StandInEngine
from engine.worker.cache import Loaded, LruPolicy, ModelCache
from engine.worker.local import STANDIN_BYTES, model_cache
from engine.worker_config import EngineSpec, ModelSource


def test_without_a_budget_nothing_is_evicted() -> None:
    """No cap: every model stays resident, whatever its size."""
    policy = LruPolicy(None)
    for name in ("a", "b", "c"):
        assert policy.room_for(name) == []
        assert policy.admit(name, 10**12) == []
    assert policy.resident == ("a", "b", "c")


def test_the_least_recently_used_model_makes_room() -> None:
    """Two of three fit: loading the third evicts the one used longest ago, not the oldest
    loaded."""
    policy = LruPolicy(200)
    policy.admit("a", 100)
    policy.admit("b", 100)
    policy.touch("a")
    assert policy.room_for("c") == ["b"]  # c is unmeasured: expected as big as the largest
    policy.evict("b")
    assert policy.admit("c", 100) == []
    assert policy.resident == ("a", "c")
    assert policy.used == 200


def test_a_model_bigger_than_expected_evicts_more_after_its_load() -> None:
    """The real size, known after the load, evicts what the estimate left."""
    policy = LruPolicy(300)
    policy.admit("a", 100)
    policy.admit("b", 100)
    assert policy.room_for("c") == []
    assert policy.admit("c", 250) == ["a", "b"]


def test_pinned_models_are_never_evicted() -> None:
    """The running training's model stays, even when the budget then cannot be met."""
    policy = LruPolicy(100)
    policy.admit("a", 100)
    assert policy.room_for("b", pinned={"a"}) == []
    assert policy.admit("b", 100, pinned={"a"}) == []
    assert policy.resident == ("a", "b")
    assert policy.room_for("c") == ["a", "b"]


def test_a_known_size_is_used_for_the_next_load() -> None:
    """A model measured once is expected at its measured size, not the largest one's."""
    policy = LruPolicy(150)
    policy.admit("small", 50)
    policy.admit("big", 100)
    policy.evict("small")
    assert policy.room_for("small") == []
    assert policy.room_for("other") == ["big"]


def _cache(sizes: dict[str, int], budget: int | None) -> tuple[ModelCache, list[str]]:
    loads: list[str] = []

    def load(name: str) -> Loaded:
        loads.append(name)
        return Loaded(StandInEngine(), sizes[name])

    return ModelCache(tuple(sizes), load, budget=budget), loads


def test_start_loads_every_model_and_keeps_the_first_configured() -> None:
    """Each model loads once at start (last first), so the deployment's default stays
    resident; WorkerReady then says which are resident and what each load cost."""
    cache, loads = _cache({"sd": 100, "xl": 100}, budget=100)
    cache.start()
    assert loads == ["xl", "sd"]
    assert cache.resident == ("sd",)
    held = cache.held()
    assert [(h.name, h.resident) for h in held] == [("sd", True), ("xl", False)]
    assert all(h.switch_seconds >= 0 for h in held)
    engine = StandInEngine()
    assert held[0] == ModelHeld(
        "sd",
        engine.family,
        engine.width,
        engine.model_hash,
        resident=True,
        switch_seconds=held[0].switch_seconds,
    )


def test_a_switch_evicts_loads_and_is_timed() -> None:
    """A job for a model not resident loads it (the other evicted) and reports the seconds; a
    job for a resident one costs nothing."""
    cache, loads = _cache({"sd": 100, "xl": 100}, budget=150)
    cache.start()
    engine, seconds = cache.get("sd")
    assert seconds is None and engine is not None
    _, seconds = cache.get("xl")
    assert seconds is not None and seconds >= 0
    assert cache.switch_seconds["xl"] == seconds
    assert cache.resident == ("xl",)
    assert loads == ["xl", "sd", "xl"]


def test_a_worker_holds_at_least_one_model() -> None:
    """An empty model list is a configuration bug, refused at once."""
    with pytest.raises(ValueError, match="at least one model"):
        ModelCache((), lambda name: Loaded(StandInEngine(), 0))


def test_the_standin_worker_honours_the_memory_setting(tmp_path: Path) -> None:
    """LEXICON_WORKER_MODEL_MEMORY=1MiB on stand-ins (1 MiB each): one model is resident and a
    job for the other evicts it; without the setting both stay."""
    models = (ModelSource("a", "standin"), ModelSource("b", "standin"))
    capped = model_cache(EngineSpec("standin", models, "cpu", tmp_path, model_memory=STANDIN_BYTES))
    assert capped.resident == ("a",)
    _, seconds = capped.get("b")
    assert seconds is not None and capped.resident == ("b",)
    free = model_cache(EngineSpec("standin", models, "cpu", tmp_path))
    assert sorted(free.resident) == ["a", "b"]
