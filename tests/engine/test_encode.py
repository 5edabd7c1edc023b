"""Prompt encoding: embeddings spliced per call, A1111 weights, BREAK and long-prompt chunks."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import torch

from engine.embedding_files import write_embedding
from engine.encode import PLACEHOLDER_ID, PromptEncoder, Splice
from engine.model import LoadedModel
from engine.prompt import min_chunks
from engine.vocabulary import is_single_token

BOS, EOS = 49406, 49407
NAMES = {"zorb": 1, "quillix": 3, "negblot": 2}


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    """One single-vector and two multi-vector embeddings for the tiny model."""
    generator = torch.Generator().manual_seed(11)
    assert not any(is_single_token(name) for name in NAMES)
    return {name: torch.randn(n, 32, generator=generator) for name, n in NAMES.items()}


@pytest.fixture(scope="module")
def stock_with_embeddings(
    stock_pipeline_factory: Callable[[], Any],
    vectors: dict[str, torch.Tensor],
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """A separate stock pipeline that loaded our files with load_textual_inversion."""
    pipe = stock_pipeline_factory()
    folder = tmp_path_factory.mktemp("embeddings")
    for name, matrix in vectors.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(write_embedding(matrix, name=name, kind="positive", family="tiny"))
        pipe.load_textual_inversion(str(path), token=name)
    return pipe


@pytest.fixture(scope="module")
def encoder(tiny_model: LoadedModel) -> PromptEncoder:
    return PromptEncoder(tiny_model)


def _text_encoder(model: LoadedModel, chunks: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return model.text_encoder(input_ids=torch.tensor(chunks))[0]


def _chunk(ids: list[int]) -> list[int]:
    return [BOS, *ids] + [EOS] * (76 - len(ids))


def _ids(model: LoadedModel, text: str) -> list[int]:
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("a photo of zorb on a beach", ""),
        ("quillix and zorb, oil painting of a house", "negblot, blurry"),
        ("a red cat", "negblot"),
        ("zorb", "ugly quillix"),
    ],
)
def test_encoding_equals_diffusers_load_textual_inversion(
    encoder: PromptEncoder,
    stock_with_embeddings: Any,
    vectors: dict[str, torch.Tensor],
    prompt: str,
    negative: str,
) -> None:
    """Single- and multi-vector embeddings, positive and negative, match diffusers within 1e-5."""
    with torch.no_grad():
        cond, uncond = encoder.encode(prompt, negative, vectors)
        ref_cond, ref_uncond = stock_with_embeddings.encode_prompt(
            prompt, "cpu", 1, True, negative_prompt=negative
        )
    assert cond.shape == ref_cond.shape == (1, 77, 32)
    assert uncond.shape == ref_uncond.shape
    assert (cond - ref_cond).abs().max().item() < 1e-5
    assert (uncond - ref_uncond).abs().max().item() < 1e-5


def test_angle_brackets_and_case_name_the_same_embedding(
    encoder: PromptEncoder, vectors: dict[str, torch.Tensor]
) -> None:
    """`<zorb>`, `zorb` and `Zorb` encode identically; `zorbs` is a different word."""
    with torch.no_grad():
        bare, _ = encoder.encode("a zorb dog", "", vectors)
        bracketed, _ = encoder.encode("a <zorb> dog", "", vectors)
        upper, _ = encoder.encode("a Zorb dog", "", vectors)
        plural, _ = encoder.encode("a zorbs dog", "", vectors)
        without, _ = encoder.encode("a zorbs dog", "", {})
    assert torch.equal(bare, bracketed) and torch.equal(bare, upper)
    assert torch.equal(plural, without)


def test_longest_name_wins_and_names_are_word_bounded(encoder: PromptEncoder) -> None:
    """`zorb_xl` uses the zorb_xl embedding, not zorb followed by text."""
    sizes = {"zorb": 1, "zorb_xl": 2}
    tokenized = encoder.tokenize("zorb_xl and zorb, not my-zorb", sizes)
    splices = tokenized.chunks[0].splices
    assert [(s.name, s.index) for s in splices] == [("zorb_xl", 0), ("zorb_xl", 1), ("zorb", 0)]
    assert tokenized.used_embeddings == {"zorb", "zorb_xl"}


def test_weights_scale_hidden_states_and_restore_the_mean(
    encoder: PromptEncoder, tiny_model: LoadedModel
) -> None:
    """`(red:1.5) [cat]` equals the manual A1111 computation through the text encoder."""
    red, cat = _ids(tiny_model, "red"), _ids(tiny_model, "cat")
    tokens = _ids(tiny_model, "a ") + red + cat
    chunk = encoder.tokenize("a (red:1.5) [cat]", {}).chunks[0]
    assert list(chunk.ids) == _chunk(tokens)
    assert chunk.weights[:5] == (1.0, 1.0, 1.5, 1 / 1.1, 1.0)
    with torch.no_grad():
        cond, _ = encoder.encode("a (red:1.5) [cat]")
    z = _text_encoder(tiny_model, [_chunk(tokens)])
    weights = torch.ones(77)
    weights[2], weights[3] = 1.5, 1 / 1.1
    expected = z * weights[None, :, None]
    expected = expected * (z.mean() / expected.mean())
    assert torch.allclose(cond, expected, atol=1e-6)
    assert not torch.allclose(cond, z, atol=1e-3)


def test_break_starts_a_new_chunk_and_negative_is_padded(
    encoder: PromptEncoder, tiny_model: LoadedModel
) -> None:
    """`a cat BREAK a dog` is two 77-token chunks; the empty negative is padded to two."""
    with torch.no_grad():
        cond, uncond = encoder.encode("a cat BREAK a dog", "")
    first = _chunk(_ids(tiny_model, "a cat"))
    second = _chunk(_ids(tiny_model, "a dog"))
    expected = _text_encoder(tiny_model, [first, second]).reshape(1, 154, 32)
    empty = _text_encoder(tiny_model, [_chunk([])])
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert torch.allclose(cond, expected, atol=1e-6)
    assert torch.allclose(uncond, torch.cat([empty, empty], dim=1), atol=1e-6)


def test_200_token_prompt_is_three_chunks(encoder: PromptEncoder, tiny_model: LoadedModel) -> None:
    """200 tokens become chunks of 75, 75 and 50, each wrapped BOS/EOS and encoded separately."""
    words = ["cat", "dog", "tree", "house"] * 50
    tokens = _ids(tiny_model, " ".join(words))
    assert len(tokens) == 200
    tokenized = encoder.tokenize(" ".join(words), {})
    expected_ids = [_chunk(tokens[:75]), _chunk(tokens[75:150]), _chunk(tokens[150:])]
    assert [list(c.ids) for c in tokenized.chunks] == expected_ids
    with torch.no_grad():
        cond, uncond = encoder.encode(" ".join(words), "blurry")
    expected = _text_encoder(tiny_model, expected_ids).reshape(1, 231, 32)
    assert torch.allclose(cond, expected, atol=1e-6)
    assert uncond.shape == (1, 231, 32)


def test_embedding_never_straddles_a_chunk(encoder: PromptEncoder, tiny_model: LoadedModel) -> None:
    """With 74 tokens used, a 3-vector embedding moves whole to the next chunk."""
    prompt = " ".join(["cat"] * 74) + " quillix dog"
    chunks = encoder.tokenize(prompt, {"quillix": 3}).chunks
    assert len(chunks) == 2
    assert list(chunks[0].ids) == _chunk(_ids(tiny_model, "cat") * 74)
    assert chunks[0].splices == ()
    assert chunks[1].splices == tuple(Splice(1 + i, "quillix", i) for i in range(3))
    assert list(chunks[1].ids[:6]) == [BOS, *[PLACEHOLDER_ID] * 3, *_ids(tiny_model, "dog"), EOS]


def test_full_chunk_moves_words_after_a_recent_comma(
    encoder: PromptEncoder, tiny_model: LoadedModel
) -> None:
    """A1111's comma backtrack: the words after a comma within 20 tokens start the next chunk."""
    prompt = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = encoder.tokenize(prompt, {}).chunks
    cat, comma, dog = (_ids(tiny_model, w)[0] for w in ("cat", ",", "dog"))
    assert list(chunks[0].ids) == _chunk([cat] * 70 + [comma])
    assert list(chunks[1].ids) == _chunk([dog] * 10)
    no_backtrack = PromptEncoder(tiny_model, comma_backtrack=0).tokenize(prompt, {}).chunks
    assert list(no_backtrack[0].ids) == _chunk([cat] * 70 + [comma] + [dog] * 4)


def test_model_is_unchanged_by_encoding_with_embeddings(
    encoder: PromptEncoder, tiny_model: LoadedModel, vectors: dict[str, torch.Tensor]
) -> None:
    """The tokenizer length, the embedding matrix and the module hooks are identical after use."""
    table = tiny_model.text_encoder.get_input_embeddings()
    before = table.weight.detach().clone()
    length = len(tiny_model.tokenizer)
    with torch.no_grad():
        encoder.encode("zorb quillix", "negblot", vectors)
    assert len(tiny_model.tokenizer) == length == 49408
    assert torch.equal(table.weight, before)
    assert table.weight.shape == (49408, 32)
    assert not table._forward_hooks


def test_gradients_reach_the_embedding_vectors(
    encoder: PromptEncoder, tiny_model: LoadedModel
) -> None:
    """Gradients flow from the encoded prompt back into the vectors; model weights get none."""
    trainable = torch.randn(2, 32, requires_grad=True)
    cond, _ = encoder.encode("a photo of zorb", "", {"zorb": trainable})
    cond.square().mean().backward()
    assert trainable.grad is not None and trainable.grad.abs().sum() > 0
    assert tiny_model.text_encoder.get_input_embeddings().weight.grad is None


def test_many_prompts_in_one_call_equal_each_alone(
    encoder: PromptEncoder, vectors: dict[str, torch.Tensor]
) -> None:
    """One text-encoder call for several requests: each gets what it gets alone, its own
    chunk count and names, and another member's "zorb" of other vectors never leaks in."""
    theirs = {"zorb": torch.randn(1, 32, generator=torch.Generator().manual_seed(5))}
    prompts = [
        ("a photo of zorb", "negblot", vectors),
        ("(quillix:1.3) BREAK at night " + "cat " * 80, "", vectors),
        ("a photo of zorb", "blurry", theirs),
        ("a red house", "", {}),
    ]
    together = encoder.encode_many(prompts)
    for (prompt, negative, embeddings), batched in zip(prompts, together, strict=True):
        alone = encoder.encode_with_names(prompt, negative, embeddings)
        assert batched.used_embeddings == alone.used_embeddings
        assert batched.cond.shape == alone.cond.shape == batched.uncond.shape
        torch.testing.assert_close(batched.cond, alone.cond)
        torch.testing.assert_close(batched.uncond, alone.uncond)
    assert together[0].used_embeddings == {"zorb", "negblot"}
    assert together[1].cond.shape[1] == 3 * 77  # BREAK, then 80 tokens: its own three chunks
    assert not torch.allclose(together[0].cond, together[2].cond)  # one prompt, two "zorb"s


HOSTILE_WORDS = [
    *["a", "cat", "photo", "zorb", "<zorb>", "ZORB", "zorb,", "quillix-zorb", "x1-2-3", "BREAK"],
    *["(", ")", "[", "]", ":1.3)", "\\(", "don't", "a.b", "-", "<", ">", "__", "12345"],
    *["½", "ß", "İ", "e\u0301", "日本語", "🙂", "<|startoftext|>", "photorealistic"],
]


def test_min_chunks_never_exceeds_the_encoders_count(encoder: PromptEncoder) -> None:
    """The bot's tokenizer-free bound is at most the exact count, so it never refuses wrongly."""
    chooser = random.Random(15)
    sizes = {"zorb": 3, "quillix": 75, "x1-2-3": 1}
    bound = exact_total = 0
    for _ in range(400):
        words = chooser.choices(HOSTILE_WORDS, k=chooser.randint(0, 400))
        text = (" " if chooser.random() < 0.7 else "").join(words)[:1500]
        for known in (sizes, {}):
            exact = len(encoder.tokenize(text, known).chunks)
            assert min_chunks(text) <= exact, (text, known)
            bound, exact_total = bound + min_chunks(text), exact_total + exact
    assert bound > exact_total / 3, (bound, exact_total)  # a useful bound, not a vacuous one
    breaks = "a dog" + " BREAK" * 249
    assert min_chunks(breaks) == len(encoder.tokenize(breaks, {}).chunks) == 249
