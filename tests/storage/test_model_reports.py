"""What workers last reported of each model (migration 0010): kept under the model's configured
source, replaced by the next report, recalled only while the source is the same."""

from __future__ import annotations

import sqlite3

import pytest

from storage import Storage
from storage.model_reports import ModelReport

SD15 = ModelReport("sd15", "/models/sd15", "sd1", 768, "a1b2c3d4e5")
XL = ModelReport("xl", "/models/sdxl", "sdxl", 2048, "f6e5d4c3b2")


async def test_reports_come_back_for_the_sources_configured_now(store: Storage) -> None:
    reports = store.model_reports
    await reports.remember([SD15, XL])
    configured = {"sd15": "/models/sd15", "xl": "/models/sdxl"}
    assert await reports.recall(configured) == [SD15, XL]
    # xl now runs from another checkpoint: its old report says nothing about it.
    assert await reports.recall({**configured, "xl": "/models/pony"}) == [SD15]
    assert await reports.recall({"sd15": "/models/sd15"}) == [SD15]  # xl no longer configured


async def test_a_new_report_replaces_the_last_one(store: Storage) -> None:
    reports = store.model_reports
    await reports.remember([SD15])
    moved = ModelReport("sd15", "/models/sd15-pruned", "sd1", 768, "0badc0ffee")
    await reports.remember([moved])
    assert await reports.recall({"sd15": "/models/sd15"}) == []
    assert await reports.recall({"sd15": "/models/sd15-pruned"}) == [moved]


async def test_a_family_storage_does_not_know_is_refused_and_nothing_is_kept(
    store: Storage,
) -> None:
    reports = store.model_reports
    with pytest.raises(sqlite3.IntegrityError):
        await reports.remember([SD15, ModelReport("odd", "/models/odd", "sd9", 768, "00")])
    assert await reports.recall({"sd15": "/models/sd15", "odd": "/models/odd"}) == []
