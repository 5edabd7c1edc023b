"""The `lexicon` command line: help, unbuilt commands, start-up errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bot.cli import SUBCOMMANDS
from tests.conftest import REPO_ROOT


def test_help_lists_every_subcommand_quickly(cli) -> None:
    """`lexicon --help` lists the contract's subcommands with one line each, in under 1 s."""
    cli("--help")  # warm the filesystem cache, as a second invocation would be
    timings = []
    for _ in range(3):  # the best of three: a busy machine's pauses are not the CLI's
        started = time.perf_counter()
        result = cli("--help")
        timings.append(time.perf_counter() - started)
    elapsed = min(timings)
    assert result.returncode == 0
    for name in ("run", "worker", "train", "imagine", "embeddings", "make-tiny-model", "db"):
        assert name in SUBCOMMANDS
        assert f"    {name}" in result.stdout
    assert elapsed < 1.0, f"lexicon --help took {elapsed:.2f} s"


def test_console_script_is_declared() -> None:
    """pyproject declares the `lexicon` console script pointing at bot.cli:main."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'lexicon = "bot.cli:main"' in text


def test_run_without_token_is_one_sentence(cli) -> None:
    """`lexicon run` with no DISCORD_TOKEN exits non-zero with one sentence naming it."""
    result = cli("run")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DISCORD_TOKEN" in lines[0]
    assert "discord.com/developers/applications" in lines[0]
    assert "Traceback" not in result.stderr


def test_invalid_setting_is_one_sentence(cli) -> None:
    """A wrong variable stops start-up with one line naming it, never a traceback."""
    result = cli("run", DISCORD_TOKEN="x" * 30, LEXICON_DEVICE="gpu")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "LEXICON_DEVICE" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_dash_m_bot_is_the_same_cli() -> None:
    """`python -m bot --help` prints the same usage as the console script's parser."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: lexicon")


def test_warm_without_cuda_says_so_and_writes_nothing(cli, tmp_path) -> None:
    """`lexicon warm` on a CPU device exits 1 with one sentence and leaves the data dir alone."""
    result = cli("warm", LEXICON_DEVICE="cpu", LEXICON_MODEL="tiny")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "lexicon warm: compiling needs a CUDA GPU and LEXICON_DEVICE resolves to cpu here, so "
        "there is nothing to warm; run lexicon warm on the GPU worker's machine."
    ], result.stderr
    assert not (tmp_path / "data").exists()


def test_warm_with_compile_off_has_nothing_to_do(cli, tmp_path) -> None:
    """`lexicon warm` with LEXICON_COMPILE=off says there is nothing to compile and exits 1."""
    result = cli("warm", LEXICON_COMPILE="off")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "lexicon warm: LEXICON_COMPILE is off, so there is nothing to compile; "
        "set LEXICON_COMPILE=default to build the cache."
    )
    assert not (tmp_path / "data").exists()


def test_make_tiny_model_writes_an_sdxl_model_with_family_sdxl(cli, tmp_path) -> None:
    """`lexicon make-tiny-model DIR --family sdxl` writes a diffusers SDXL folder."""
    folder = tmp_path / "tiny-sdxl"
    result = cli("make-tiny-model", str(folder), "--family", "sdxl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote the tiny SDXL model to {folder}"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    refused = cli("make-tiny-model", str(tmp_path / "other"), "--family", "sd3")
    assert refused.returncode != 0 and "invalid choice: 'sd3'" in refused.stderr
