"""The real CLIP vocabulary, and "is this word already known?". Torch-free: the bot imports this.

A name that the CLIP vocabulary already holds as one whole word (`word</w>`) is refused for a new
embedding: the model already has a meaning for it, and the user would be confused when their
embedding and the word fight. A *shared* name is held to more: a bare word in anyone's prompt
resolves to it, so it must not read as ordinary words at all, whatever its token count
(`reads_as_words`: `photorealistic` is `photo` + `realistic`, `4k` a number and a unit). The
vocabulary is the real CLIP one, rebuilt once from the BPE file shipped with the package (about
0.1 s) and cached for the life of the process. The tiny test model (`engine.tiny`) writes its
tokenizer from the same tables.
"""

from __future__ import annotations

import gzip
import itertools
import re
from functools import lru_cache
from importlib import resources

CLIP_VOCAB_SIZE = 49_408
_MERGE_COUNT = 49_152 - 256 - 2
_END = "</w>"
# CLIP's pre-tokenizer, for what names may hold: runs of letters, single digits, runs of the rest.
_PRE_TOKENS = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")
# A number with at most two letters after it reads as a measure: 4k, 8k, 35mm, 1080p, 1990.
_MEASURE = re.compile(r"[0-9]+[a-z]{0,2}")


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


@lru_cache(maxsize=1)
def _merge_ranks() -> dict[tuple[str, str], int]:
    _vocab, merges = clip_vocab_and_merges()
    ranks: dict[tuple[str, str], int] = {}
    for rank, merge in enumerate(merges):
        first, second = merge.split()
        ranks[first, second] = rank
    return ranks


def _bpe(piece: str) -> list[str]:
    """One pre-token cut into CLIP's BPE tokens: the lowest-ranked pair merges first."""
    ranks = _merge_ranks()
    parts = [*piece[:-1], piece[-1] + _END]
    while len(parts) > 1:
        pairs = set(itertools.pairwise(parts))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged: list[str] = []
        index = 0
        while index < len(parts):
            if index + 1 < len(parts) and (parts[index], parts[index + 1]) == best:
                merged.append(parts[index] + parts[index + 1])
                index += 2
            else:
                merged.append(parts[index])
                index += 1
        parts = merged
    return parts


def clip_tokens(text: str) -> list[str]:
    """The CLIP tokens of an ASCII name as the real tokenizer cuts it (lowercased)."""
    return [token for piece in _PRE_TOKENS.findall(text.lower()) for token in _bpe(piece)]


def reads_as_words(name: str) -> bool:
    """True when `name` reads as ordinary words to CLIP, whatever its token count: a number
    (with a short unit), or only tokens that are whole words of two or more letters on their
    own (`masterpiece`, `photo`+`realistic`, `high`+`res`, `bo`+`keh`). A digit, a dash or a
    stray letter in the cut makes a name made-up (`zorb` is `zor`+`b`, `mychar1`, `sks-dog`)."""
    folded = name.strip().lower()
    if _MEASURE.fullmatch(folded):
        return True
    vocab, _merges = clip_vocab_and_merges()
    words = [token.removesuffix(_END) for token in clip_tokens(folded)]
    return bool(words) and all(
        len(word) >= 2 and word.isalpha() and word + _END in vocab for word in words
    )
