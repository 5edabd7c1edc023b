"""The files a member hands us and the files we hand back, measured against the peers' loaders:
zip-bomb `.pt` uploads are refused before they are unpacked and the import child runs capped and
few at a time; imported files keep their own hash for `TI hashes`; images name their model
truthfully; another member's export carries none of the owner's private training metadata."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from engine.embedding_files import write_embedding
from engine.png import read_parameters
from storage.models import Actor
from tests.bot.conftest import make_settings
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import refusal
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import NOTHING, stored
from tests.simulation import Simulation, simulated

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("make", "sentence"),
    [
        (
            lambda: hostile.zip_bomb_pt(64 * MiB),
            "This .pt file would unpack to 64.0 MiB from 64 KiB, so it was refused; save the "
            "embedding again with torch.save or as .safetensors.",
        ),
        (
            lambda: hostile.zip_bomb_pt(16 * MiB, storages=4, overlap=True),
            "This .pt file would unpack to 64.0 MiB from 17 KiB through overlapping entries, so "
            "it was refused; save the embedding again with torch.save or as .safetensors.",
        ),
    ],
    ids=["deflated", "overlapping"],
)
async def test_a_zip_bomb_pt_is_refused_before_it_is_unpacked(
    sim: Simulation, make: Callable[[], bytes], sentence: str
) -> None:
    """A .pt whose zip entries inflate or overlap far past its size: one sentence, nothing kept."""
    alice = sim.member("alice")
    result = await alice.slash(
        sim.channel, "embeddings import", file=("bomb.pt", make()), name="zorb"
    )
    assert refusal(result) == sentence
    assert await stored(sim.app) == NOTHING


def test_the_import_child_caps_its_own_memory_and_cpu_time() -> None:
    """Under engine.convert's limits a 2 GiB allocation fails and the CPU limit is hard."""
    script = (
        "import resource, torch\n"
        "from engine.convert import limit_resources\n"
        "limit_resources()\n"
        "print(resource.getrlimit(resource.RLIMIT_CPU))\n"
        "try:\n"
        "    torch.empty(2**29)\n"
        "except RuntimeError:\n"
        "    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.splitlines() == ["(30, 30)", "refused"], result.stderr


def _convert_children() -> int:
    """How many `engine.convert` children this process has right now."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        count += parent == os.getpid() and b"engine.convert" in command
    return count


async def test_at_most_two_import_children_run_at_once(sim: Simulation) -> None:
    """Three members import at once; never more than two children parse files together."""
    library = sim.app.library
    imports = [
        asyncio.ensure_future(
            library.import_file(Actor(user), "zorb.pt", hostile.a1111_pt(), "zorb")
        )
        for user in range(1, 4)
    ]
    most = 0
    while not all(task.done() for task in imports):
        most = max(most, _convert_children())
        await asyncio.sleep(0.02)
    assert [(await task).n_vectors for task in imports] == [2] * 3
    assert most == 2


def _metadata(data: bytes) -> dict[str, str]:
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    metadata: dict[str, str] = header["__metadata__"]
    return metadata


async def test_a_shared_export_leaves_out_the_owners_photo_hashes_and_seed(
    sim: Simulation,
) -> None:
    """Bob's export of Alice's shared word has no photo hashes or seed; hers keeps them; the
    vectors are the same bytes."""
    alice, bob = sim.member("alice"), sim.member("bob")
    trained = write_embedding(
        torch.full((1, 32), 0.25),
        name="zorb",
        kind="positive",
        family="tiny",
        steps=20,
        photo_hashes=["a" * 64, "b" * 64],
        extra={"seed": "1234", "train_kind": "object"},
    )
    await sim.app.storage.embeddings.create(
        alice.id,
        "zorb",
        trained,
        n_vectors=1,
        width=32,
        family="tiny",
        source="trained",
        shared=True,
    )
    mine = await alice.slash(sim.channel, "embeddings export", name="zorb")
    theirs = await bob.slash(sim.channel, "embeddings export", name="zorb")
    own_file = await mine.response.attachments[0].read()
    shared_file = await theirs.response.attachments[0].read()
    assert own_file == trained
    assert {"photo_hashes", "seed"} <= _metadata(own_file).keys()
    stripped = _metadata(shared_file)
    assert "photo_hashes" not in stripped and "seed" not in stripped
    assert stripped["train_kind"] == "object" and stripped["steps"] == "20"
    assert shared_file.endswith(own_file[-128:])  # the tensor bytes are untouched


async def test_images_name_the_model_and_the_imported_files_own_hash(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """On the real engine: `TI hashes` is the sha256 of the .pt the member imported (not of
    Lexicon's rewrite), `Model:` names the model, and a folder model gets no `Model hash`."""
    original = hostile.a1111_pt(0.03)
    settings = make_settings(tmp_path / "data", tiny_model_path)
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        imported = await alice.slash(
            sim.channel, "embeddings import", file=("zorb.pt", original), name="zorb"
        )
        assert "Imported" in imported.response.content
        stored_sha = (await sim.app.library.info(alice.id, "zorb")).sha256
        result = await alice.slash(sim.channel, "imagine", prompt="a photo of <zorb>")
        job = await sim.job_done(alice)
        assert job.state.value == "succeeded", job.error
        (attachment,) = sim.channel_message(result.response.id).attachments
        text = read_parameters(await attachment.read())
    wanted = hashlib.sha256(original).hexdigest()[:12]
    assert stored_sha[:12] != wanted  # the stored file is our rewrite
    assert f'TI hashes: "zorb: {wanted}"' in text
    assert f"Model: {tiny_model_path.name}," in text
    assert "Model hash" not in text
