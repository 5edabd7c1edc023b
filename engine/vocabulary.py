"""The real CLIP vocabulary, and "is this word already known?". Torch-free: the bot imports this.

A name that the CLIP vocabulary already holds as one whole word (`word</w>`) is refused for a new
embedding: the model already has a meaning for it, and the user would be confused when their
embedding and the word fight. The vocabulary is the real CLIP one, rebuilt once from the BPE file
shipped with the package (about 0.1 s) and cached for the life of the process. The tiny test
model (`engine.tiny`) writes its tokenizer from the same tables.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

CLIP_VOCAB_SIZE = 49_408
_MERGE_COUNT = 49_152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte → printable-character table (same as GPT-2's)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in characters), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The real CLIP vocabulary (token → id) and merge list, rebuilt from the shipped BPE file."""
    raw = resources.files("engine").joinpath("data/bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = lines[1 : _MERGE_COUNT + 1]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    return {token: index for index, token in enumerate(tokens)}, merges


def is_single_token(word: str) -> bool:
    """True when `word` (case-insensitive, as CLIP lowercases) is one whole-word CLIP token."""
    vocab, _merges = clip_vocab_and_merges()
    return word.strip().lower() + "</w>" in vocab
