"""Hostile input through the offline CLI (`python -m bot …` on the stand-in engine): one
sentence on stderr, exit status 1, and nothing stored in the data dir."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from engine.png import read_parameters
from tests.bot.conftest import photo_bytes
from tests.conftest import run_lexicon
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import stored_files

STANDIN = {
    "LEXICON_ENGINE": "standin",
    "LEXICON_MODEL": "standin",
    "LEXICON_ALLOWED_SIZES": "64x64",
    "LEXICON_TORCH_THREADS": "1",
}


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_lexicon(list(args), tmp_path, timeout=120, **STANDIN)


def _refused(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line the CLI printed, checked to be a clean refusal."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("lexicon ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"lexicon {command}: ")
    return lines[0].removeprefix(f"lexicon {command}: ")


def _nothing_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with sqlite3.connect(data / "lexicon.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
    assert stored_files(data) == frozenset()


def _photos(tmp_path: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = tmp_path / f"p{index}.png"
        path.write_bytes(photo_bytes(60 + index))
        paths.append(str(path))
    return paths


def test_cli_train_with_two_photos(tmp_path: Path) -> None:
    """`lexicon train` with two photos: the photo-count sentence."""
    result = _cli(tmp_path, "train", *_photos(tmp_path, 2), "--name", "zorb")
    assert _refused(result, "train") == "Training needs 3 to 5 photos; 2 were attached."
    _nothing_stored(tmp_path)


def test_cli_train_with_a_path_as_name_and_a_fake_photo(tmp_path: Path) -> None:
    """A name with path separators is refused first; a text file named .png after it."""
    photos = _photos(tmp_path, 2)
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    bad_name = _cli(tmp_path, "train", *photos, str(fake), "--name", "../../etc/zorb")
    assert _refused(bad_name, "train") == (
        "'../../etc/zorb' is not a valid embedding name: use 2 to 32 characters from a-z, 0-9, "
        "'-' and '_', starting with a letter or a digit."
    )
    bad_photo = _cli(tmp_path, "train", *photos, str(fake), "--name", "zorb")
    assert _refused(bad_photo, "train") == (
        "Photo 3 (fake.png) is not an image Lexicon can read; use JPEG, PNG or WebP."
    )
    _nothing_stored(tmp_path)


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["x" * 10_000], "The prompt is 10000 characters long; the most is 1500."),
        (["a cube", "--steps", "999"], "steps must be between 1 and 50; got 999."),
        (["a cube", "--guidance", "nan"], "guidance must be between 0 and 30; got nan."),
        (["a cube", "--seed", "-7"], "seed must be between 0 and 4294967295; got -7."),
        (  # the CLI names no Discord command to look in
            ["a <qqqq> on a hill"],
            "You have no embedding called <qqqq> and none is shared under that name.",
        ),
    ],
    ids=["10000-chars", "steps-999", "guidance-nan", "seed-negative", "unknown-name"],
)
def test_cli_imagine_refuses_bad_values(tmp_path: Path, args: list[str], sentence: str) -> None:
    """`lexicon imagine` with a huge prompt or out-of-range numbers: one sentence."""
    result = _cli(tmp_path, "imagine", *args, "--out", str(tmp_path / "out.png"))
    assert _refused(result, "imagine") == sentence
    assert not (tmp_path / "out.png").exists()
    _nothing_stored(tmp_path)


def test_cli_imagine_on_a_named_model_and_an_unknown_one(tmp_path: Path) -> None:
    """`--model` picks one of LEXICON_MODELS (the job row records it); an unknown name is one
    sentence listing the names, and nothing is stored for it."""
    models = {k: v for k, v in STANDIN.items() if k != "LEXICON_MODEL"}
    models["LEXICON_MODELS"] = "a=standin,b=standin"
    out = tmp_path / "b.png"
    made = run_lexicon(["imagine", "a cube", "--model", "b", "--out", str(out)], tmp_path, **models)
    assert made.returncode == 0, made.stderr
    assert out.is_file()
    with sqlite3.connect(tmp_path / "data" / "lexicon.sqlite3") as db:
        assert db.execute("SELECT model FROM jobs").fetchall() == [("b",)]
    unknown = run_lexicon(["imagine", "a cube", "--model", "xl"], tmp_path, **models)
    assert _refused(unknown, "imagine") == (
        "There is no model called **xl** here; choose one of **a**, **b**."
    )
    with sqlite3.connect(tmp_path / "data" / "lexicon.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_cli_import_of_a_pickle_that_writes_a_file(tmp_path: Path) -> None:
    """`lexicon embeddings import evil.pt`: refused for safety; the payload's file never appears."""
    target = tmp_path / "owned.txt"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(hostile.pickle_that_writes(target))
    result = _cli(tmp_path, "embeddings", "import", str(evil), "--name", "zorb")
    assert _refused(result, "embeddings") == (
        "This file contains code or objects other than tensors, so it was refused for safety."
    )
    assert not target.exists()
    _nothing_stored(tmp_path)


def test_cli_export_to_pt_writes_a1111s_layout(tmp_path: Path) -> None:
    """`embeddings export --out x.pt` writes a pickle that `torch.load(weights_only=True)` reads
    as A1111's dict, with the imported vectors; `.ckpt` is refused in one sentence."""
    import torch

    source = tmp_path / "zorb.safetensors"
    source.write_bytes(hostile.good_embedding())
    assert _cli(tmp_path, "embeddings", "import", str(source), "--name", "zorb").returncode == 0
    out = tmp_path / "out" / "zorb.pt"
    result = _cli(tmp_path, "embeddings", "export", "zorb", "--out", str(out))
    assert result.returncode == 0, result.stderr
    loaded = torch.load(out, weights_only=True)
    assert loaded.keys() == {
        "string_to_token",
        "string_to_param",
        "name",
        "step",
        "sd_checkpoint",
        "sd_checkpoint_name",
    }
    assert loaded["string_to_token"] == {"*": 265} and loaded["name"] == "zorb"
    assert list(loaded["string_to_param"]) == ["*"]
    assert torch.equal(loaded["string_to_param"]["*"], torch.full((2, 32), 0.05))

    refused = _cli(tmp_path, "embeddings", "export", "zorb", "--out", str(tmp_path / "z.ckpt"))
    assert _refused(refused, "embeddings") == (
        "Embeddings can be exported as .safetensors, .pt, .bin, not .ckpt; pick one of those."
    )
    assert not (tmp_path / "z.ckpt").exists()


def test_cli_imagine_from_an_image_then_upscale_it(tmp_path: Path) -> None:
    """`lexicon imagine --image --strength` renders img2img; `lexicon upscale` of that PNG
    writes it at twice the size with A1111's Hires keys."""
    start = tmp_path / "start.png"
    start.write_bytes(photo_bytes(5))
    out = tmp_path / "out.png"
    made = _cli(
        tmp_path, "imagine", "a cube", "--image", str(start), "--strength", "0.5", "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    assert "Denoising strength: 0.5" in read_parameters(out.read_bytes())
    upscaled = _cli(tmp_path, "upscale", str(out))
    assert upscaled.returncode == 0, upscaled.stderr
    bigger = tmp_path / "out-upscaled.png"
    assert Image.open(bigger).size == (128, 128)
    assert upscaled.stdout.startswith(f"{bigger}  seed ")


@pytest.mark.parametrize(
    ("make", "sentence"),
    [
        (hostile.bomb_png, "Photo 1 (image.png) has too many pixels to be a photo"),
        (lambda: b"not a picture", "Photo 1 (image.png) is not an image Lexicon can read"),
    ],
    ids=["bomb", "text"],
)
def test_cli_imagine_refuses_a_hostile_image(
    tmp_path: Path, make: Callable[[], bytes], sentence: str
) -> None:
    """`lexicon imagine --image` of a bomb or a text file: one sentence, nothing stored."""
    image = tmp_path / "image.png"
    image.write_bytes(make())
    result = _cli(tmp_path, "imagine", "a cube", "--image", str(image), "--strength", "0.5")
    assert _refused(result, "imagine").startswith(sentence)
    _nothing_stored(tmp_path)


def test_cli_upscale_of_a_foreign_or_missing_png(tmp_path: Path) -> None:
    """A PNG Lexicon never stored, or no file at all: one sentence each, nothing stored."""
    foreign = tmp_path / "foreign.png"
    foreign.write_bytes(photo_bytes(9))
    assert _refused(_cli(tmp_path, "upscale", str(foreign)), "upscale") == (
        "This PNG is not an image Lexicon stored here."
    )
    missing = tmp_path / "missing.png"
    assert _refused(_cli(tmp_path, "upscale", str(missing)), "upscale") == (
        f"{missing} is not a file."
    )
