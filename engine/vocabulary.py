"""Is a word already known to the tokenizer? Torch-free: the bot process imports this.

A name that the CLIP vocabulary already holds as one whole word (`word</w>`) is refused for a new
embedding: the model already has a meaning for it, and the user would be confused when their
embedding and the word fight. The vocabulary is the real CLIP one, rebuilt once from the BPE file
shipped with the package (about 0.1 s) and cached for the life of the process.
"""

from __future__ import annotations

from engine.tiny import clip_vocab_and_merges


def is_single_token(word: str) -> bool:
    """True when `word` (case-insensitive, as CLIP lowercases) is one whole-word CLIP token."""
    vocab, _merges = clip_vocab_and_merges()
    return word.strip().lower() + "</w>" in vocab
