"""Exceptions shared by the engine's long-running jobs (training now, generation alike)."""

from __future__ import annotations


class Cancelled(Exception):
    """The job's owner cancelled it; raised between steps, never in the middle of one, so the
    model and any checkpoint already handed out stay consistent."""
