"""Secrets never reach the logs."""

from __future__ import annotations

import logging

import pytest

from bot.logging_setup import REDACTED, configure_logging

TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture
def logged(capfd: pytest.CaptureFixture[str]):
    """Lexicon's logging at DEBUG for one test; the loggers it touched are put back after.

    Left at DEBUG, the root logger would make every later test log (and pytest capture) each
    SQLite call, which slows the whole suite and its timing-sensitive tests with it."""
    root, discord = logging.getLogger(), logging.getLogger("discord")
    levels = root.level, discord.level
    configure_logging("DEBUG", secrets=["my-configured-secret-value"])
    yield capfd
    for handler in [h for h in root.handlers if getattr(h, "_lexicon", False)]:
        root.removeHandler(handler)
    root.setLevel(levels[0])
    discord.setLevel(levels[1])


def test_token_in_message_is_redacted(logged: pytest.CaptureFixture[str]) -> None:
    """A Discord-shaped token in a log message is replaced, in any logger."""
    logging.getLogger("discord.http").info("connecting with %s", TOKEN)
    err = logged.readouterr().err
    assert TOKEN not in err
    assert REDACTED in err


def test_configured_secret_and_traceback_are_redacted(logged: pytest.CaptureFixture[str]) -> None:
    """A configured secret is scrubbed from messages and from exception tracebacks."""
    log = logging.getLogger("lexicon.test")
    try:
        raise RuntimeError("login failed for my-configured-secret-value")
    except RuntimeError:
        log.exception("start-up failed")
    err = logged.readouterr().err
    assert "my-configured-secret-value" not in err
    assert "RuntimeError" in err and REDACTED in err


def test_ordinary_messages_pass_unchanged(logged: pytest.CaptureFixture[str]) -> None:
    """Redaction leaves ordinary text alone."""
    logging.getLogger("lexicon.test").warning("job 12 finished in 1.5 s")
    assert "job 12 finished in 1.5 s" in logged.readouterr().err
