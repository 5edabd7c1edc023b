"""What decoding a stranger's photo may cost: memory measured in a fresh process, time, and
how many decodes the bot runs at once (issue 15, items 2 and 3)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.services import TrainOptions
from engine.photos import DEFAULT_MAX_DECODE_BYTES, PhotoError, load_photo, normalise_photos
from storage.errors import QuotaExceeded
from tests.bot.conftest import three_photos
from tests.engine.photo_files import flat_png
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import stored
from tests.simulation import Simulation

MIB = 1024 * 1024
# One decode's peak RSS rise: the budget plus what importing Pillow's plugins and zlib costs.
PEAK_BOUND = DEFAULT_MAX_DECODE_BYTES + 32 * MIB

# Decodes one photo in a fresh interpreter; prints how far its peak RSS (VmHWM) rose.
_MEASURE = """
import json, sys
from storage.errors import QuotaExceeded
from engine.photos import PhotoError, load_photo

def high_water():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM"))

data = open(sys.argv[1], "rb").read()
before = high_water()
try:
    outcome = "decoded %dx%d" % load_photo(data, 1, "x").image.size
except PhotoError as error:
    outcome = str(error)
print(json.dumps({"rise": high_water() - before, "outcome": outcome}))
"""


def measured_decode(data: bytes, tmp_path: Path) -> dict[str, Any]:
    """`load_photo` of `data` in a subprocess: {"rise": peak RSS rise in bytes, "outcome"}."""
    path = tmp_path / "photo.bin"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# (bytes, what happens) for 40 MP files of a few KB that cost 0.8–0.95 GB to decode before.
HEAVY: dict[str, tuple[Callable[[], bytes], str]] = {
    "16-bit-rgba-png": (lambda: hostile.deep_png(6), "would take 381.5 MiB of memory to read"),
    "16-bit-grey-png": (lambda: hostile.deep_png(0), "would take 305.2 MiB of memory to read"),
    "8-bit-rgba-png": (
        lambda: hostile.deep_png(6, bit_depth=8),
        "would take 381.5 MiB of memory to read",
    ),
    "palette-png": (hostile.palette_png, "would take 419.6 MiB of memory to read"),
    "40-mp-webp": (hostile.huge_webp, "would take 686.6 MiB of memory to read"),
    "33-mp-16-bit-grey-png": (
        lambda: flat_png(8000, 4150, bit_depth=16, colour_type=0),
        "decoded 1974x1024",
    ),
    "40-mp-rgb-png": (
        lambda: flat_png(8000, 5000, bit_depth=8, colour_type=2),
        "decoded 1638x1024",
    ),
}


@pytest.mark.parametrize("case", HEAVY.values(), ids=HEAVY.keys())
def test_a_heavy_photo_is_refused_or_decoded_within_the_memory_bound(
    case: tuple[Callable[[], bytes], str], tmp_path: Path
) -> None:
    """16-bit, alpha, palette and WebP bombs are refused from the header; what passes decodes
    (shrunk to 1024 px) with a peak RSS rise under the budget plus import overhead."""
    make, outcome = case
    measured = measured_decode(make(), tmp_path)
    assert outcome in measured["outcome"]
    assert measured["rise"] < PEAK_BOUND, measured


def test_a_progressive_jpeg_scan_bomb_is_refused_in_under_a_second() -> None:
    """A 270 KB JPEG repeating one scan 1000 times (58 s to decode before) is refused at once."""
    bomb = hostile.scan_bomb_jpeg(1000)
    started = time.perf_counter()
    with pytest.raises(PhotoError) as refused:
        load_photo(bomb, 2, "scans.jpg")
    assert time.perf_counter() - started < 1.0
    assert str(refused.value) == (
        "Photo 2 (scans.jpg) has more than 16 progressive scans, which no camera writes; "
        "save it again as an ordinary JPEG."
    )


def test_an_ordinary_progressive_jpeg_is_decoded_at_draft_scale() -> None:
    """A 36 MP progressive JPEG with libjpeg's 10 scans passes and comes out 1024 px square."""
    photo = load_photo(hostile.scan_bomb_jpeg(0), 1)
    assert photo.image.size == (1024, 1024) and photo.image.mode == "RGB"


async def test_six_concurrent_trains_decode_at_most_two_at_a_time(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six members' /train decode two at a time (LEXICON_PHOTO_DECODES); a seventh member's
    work on the default thread pool is not held up behind them."""
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_normalise(photos: Sequence[bytes], *args: Any, **kwargs: Any) -> list[bytes]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.4)  # a hostile photo that takes a while to decode
        with lock:
            running -= 1
        return normalise_photos(photos, *args, **kwargs)

    monkeypatch.setattr("bot.services.normalise_photos", slow_normalise)
    trains = [
        asyncio.create_task(
            sim.app.train.submit(100 + n, TrainOptions(f"zorb{n}", three_photos(n)))
        )
        for n in range(6)
    ]
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    await asyncio.to_thread(time.perf_counter)  # someone else's thread-pool work
    waited = time.perf_counter() - started
    submitted = await asyncio.gather(*trains)
    assert most == sim.app.settings.photo_decodes == 2
    assert waited < 0.3, waited
    assert [s.job.user_id for s in submitted] == [100 + n for n in range(6)]


async def test_a_member_at_the_queue_cap_is_refused_before_the_photos_are_decoded(
    slow_sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the queue cap, /train's photos are never decoded: the cap's sentence comes first."""
    sim = slow_sim
    alice, mia = sim.member("alice"), sim.member("mia", manager=True)
    await mia.slash(sim.channel, "admin limits", max_queued_per_user=1)
    running = await alice.slash(sim.channel, "imagine", prompt="a red cube", steps=20)
    assert "Queued" in running.response.content
    decoded: list[int] = []
    monkeypatch.setattr("bot.services.normalise_photos", lambda *a, **k: decoded.append(1))
    with pytest.raises(QuotaExceeded) as refused:
        photos = [*three_photos()[:2], ("scans.jpg", hostile.scan_bomb_jpeg())]
        await sim.app.train.submit(alice.id, TrainOptions("zorb", photos), guild_id=sim.guild.id)
    assert str(refused.value) == (
        "You already have 1 jobs waiting or running, the most allowed; "
        "wait for one to finish or cancel one."
    )
    assert decoded == []
    assert (await stored(sim.app)).jobs == 1  # only the running /imagine
    await sim.job_done(alice)
