"""FileStore paths and writes, and the start-up sweep that repairs what a crash leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import FileStore, InvalidFileId, NotFound, Storage
from storage.files import TEMP_PREFIX, sha256_of
from tests.storage.conftest import make_embedding, stored_hashes


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    """The same bytes land at one path named by their sha256; a second put changes nothing."""
    files = FileStore(tmp_path)
    sha = files.put("images", b"png bytes")
    assert sha == sha256_of(b"png bytes")
    path = files.path("images", sha)
    assert path == tmp_path / "images" / sha[:2] / f"{sha}.png"
    before = path.stat().st_mtime_ns
    assert files.put("images", b"png bytes") == sha
    assert path.stat().st_mtime_ns == before
    assert files.read("images", sha) == b"png bytes"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize(
    "sha",
    [
        "../../etc/passwd",
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "g" * 64,
        "/" + "a" * 63,
        "a" * 63 + "\n",
        "",
    ],
)
def test_only_a_sha256_can_name_a_file(tmp_path: Path, sha: str) -> None:
    """Anything but 64 lowercase hex digits is refused before any path is built."""
    files = FileStore(tmp_path)
    with pytest.raises(InvalidFileId, match="is not a sha256 file id"):
        files.path("embeddings", sha)
    with pytest.raises(InvalidFileId):
        files.read("embeddings", sha)


def test_reading_a_missing_file_is_not_found(tmp_path: Path) -> None:
    """A well-formed id without a file is NotFound, not an OSError."""
    with pytest.raises(NotFound, match="missing"):
        FileStore(tmp_path).read("embeddings", "0" * 64)


async def test_sweep_removes_orphans_and_temp_files_only(store: Storage) -> None:
    """Unreferenced stored files and temp leftovers go; referenced and foreign files stay."""
    kept = await make_embedding(store, 1, "zorb")
    orphan = store.files.put("embeddings", b"nobody's vectors")
    orphan_image = store.files.put("images", b"nobody's picture")
    temp = store.files.path("embeddings", kept.sha256).parent / f"{TEMP_PREFIX}cut-off"
    temp.write_bytes(b"half a fi")
    foreign = store.files.root / "embeddings" / "README.txt"
    foreign.write_text("an operator's note")
    report = await store.sweep()
    assert set(report.removed_orphans) == {
        store.files.path("embeddings", orphan),
        store.files.path("images", orphan_image),
    }
    assert report.removed_temp == (temp,)
    assert report.foreign == (foreign,)
    assert stored_hashes(store) == {kept.sha256} and foreign.exists() and not temp.exists()
    assert await store.sweep() == type(report)(foreign=(foreign,))


async def test_sweep_marks_embeddings_with_missing_files_unusable(store: Storage) -> None:
    """A row whose file vanished is marked unusable (not deleted); a restored file revives it."""
    embedding = await make_embedding(store, 1, "zorb", shared=True, data=b"precious")
    store.files.path("embeddings", embedding.sha256).unlink()
    report = await store.sweep()
    assert report.marked_unusable == (embedding.id,)
    assert [m.referenced_by for m in report.missing] == [(f"embedding #{embedding.id} 'zorb'",)]
    assert (await store.embeddings.get(embedding.id, 1)).usable is False
    assert await store.embeddings.list_shared() == []
    store.files.put("embeddings", b"precious")
    report = await store.sweep()
    assert report.marked_usable == (embedding.id,) and report.missing == ()
    assert (await store.embeddings.get(embedding.id, 1)).usable is True
