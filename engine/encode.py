"""Prompt text (A1111 syntax, embedding names) → text-encoder hidden states, per request.

Textual-inversion vectors are used the way A1111 uses them: the prompt is tokenized against the
unchanged vocabulary, each embedding name becomes as many placeholder positions as it has vectors,
and the token-embedding *output* at those positions is replaced by the vectors for this one call
(`run_text_encoder` enters the text transformer from its token embeddings). The tokenizer and the
embedding matrix are never modified, so one loaded model serves every user and embeddings can be
batched together.

Chunking follows A1111's `tokenize_line`: 75 tokens per chunk, each wrapped in BOS/EOS to 77;
`BREAK` starts a new chunk; a full chunk moves the words after a recent comma (within
`comma_backtrack` tokens, A1111's default 20) to the next chunk; an embedding's vectors never
straddle two chunks. Chunks are encoded separately and concatenated. Weights multiply the hidden
states, which are then rescaled so their mean matches the unweighted mean (A1111's "Original"
emphasis). Positive and negative conditioning are padded to the same number of chunks with the
encoding of an empty chunk, as A1111 does with `pad_cond_uncond`.

SDXL (A1111's semantics on both encoders): the same chunks go through both text encoders, the
second with its own padding after the end-of-text token ("!" on SDXL, as A1111's clip_g
embedder pads). Each encoder contributes its penultimate hidden state (no final layer norm, as
diffusers' `encode_prompt` and A1111 take it), weighted on its own, and the two are concatenated
on the feature axis (768 + 1280 = 2048 on SDXL). An embedding's vectors are the two halves side
by side (`EmbeddingFile.joined`): the first encoder's width goes into encoder 1 (`clip_l`), the
rest into encoder 2 (`clip_g`). The pooled embedding is the second encoder's projected final
state at the first end-of-text token of the prompt's FIRST chunk, as A1111 takes it. An empty
negative prompt on a model whose pipeline config says `force_zeros_for_empty_prompt` (SDXL's
default) is zeros, states and pooled alike, as stock diffusers makes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from engine.graphs import bucket
from engine.model import LoadedModel
from engine.prompt import CHUNK_TOKENS, name_matcher, parse_prompt_attention

PLACEHOLDER_ID = 0  # the id fed to the tokenizer table at a spliced position; its row is unused


@dataclass(frozen=True)
class Splice:
    """Vector `index` of embedding `name` goes at `offset` of the chunk."""

    offset: int
    name: str
    index: int


@dataclass(frozen=True)
class Chunk:
    """77 token ids with their weights and the embedding vectors spliced into them."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    splices: tuple[Splice, ...] = ()

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for w in self.weights)


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt cut into chunks, and the embedding names it used."""

    chunks: tuple[Chunk, ...]
    used_embeddings: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Conditioning:
    """One prompt and its negative, encoded: `cond` and `uncond` are `[1, 77·k, d]` with the
    same k; SDXL adds the pooled embeddings `[1, p]` of each."""

    cond: torch.Tensor
    uncond: torch.Tensor
    used_embeddings: frozenset[str]
    pooled: torch.Tensor | None = None
    pooled_uncond: torch.Tensor | None = None


class _Layout(NamedTuple):
    """Where one prompt's chunks sit in a batched encoder call: `size` chunks of the prompt
    from `start`, then (unless `zeros`, an empty negative encoded as zeros) `size` of its
    negative."""

    start: int
    size: int
    used: frozenset[str]
    zeros: bool


@dataclass(frozen=True)
class _Slot:
    token: int
    weight: float
    splice: tuple[str, int] | None = None


class PromptEncoder:
    """Encodes prompts for one loaded model; stateless apart from cached token ids."""

    def __init__(self, model: LoadedModel, comma_backtrack: int = 20) -> None:
        self.model = model
        self.comma_backtrack = comma_backtrack
        tokenizer = model.tokenizer
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad = self.eos if pad is None else int(pad)
        # Not `get_vocab()`: a fast tokenizer builds that 49,408-entry dict anew on every call
        # (~30 ms, more than a whole graphed text encode).
        comma = tokenizer.convert_tokens_to_ids(",</w>")
        self.comma = None if comma is None or comma == tokenizer.unk_token_id else int(comma)

    # ---------------------------------------------------------------- tokenizing (no torch)

    def tokenize(self, prompt: str, embedding_sizes: Mapping[str, int]) -> TokenizedPrompt:
        """Cut `prompt` into 77-token chunks; `embedding_sizes` maps usable names to n_vectors."""
        matcher = name_matcher(embedding_sizes)
        chunks: list[Chunk] = []
        current: list[_Slot] = []
        last_comma = -1
        used: set[str] = set()

        def close_chunk() -> None:
            nonlocal current, last_comma
            chunks.append(self._wrap(current))
            current = []
            last_comma = -1

        def make_room_before_item() -> None:
            """A1111: at a full chunk, move the words after a nearby comma to the next one."""
            nonlocal current
            near_comma = last_comma != -1 and CHUNK_TOKENS - last_comma <= self.comma_backtrack
            if len(current) == CHUNK_TOKENS and near_comma:
                moved = current[last_comma + 1 :]
                current = current[: last_comma + 1]
                close_chunk()
                current = moved
            if len(current) == CHUNK_TOKENS:
                close_chunk()

        for fragment in parse_prompt_attention(prompt):
            if fragment.is_break:
                close_chunk()
                continue
            for item in self._items(fragment.text, matcher, embedding_sizes):
                if isinstance(item, int):
                    if item == self.comma:
                        last_comma = len(current)
                    else:
                        make_room_before_item()
                    if len(current) == CHUNK_TOKENS:
                        close_chunk()
                    current.append(_Slot(item, fragment.weight))
                else:
                    name, size = item
                    make_room_before_item()
                    if len(current) + size > CHUNK_TOKENS:
                        close_chunk()
                    current.extend(
                        _Slot(PLACEHOLDER_ID, fragment.weight, (name, index))
                        for index in range(size)
                    )
                    used.add(name)
        if current or not chunks:
            close_chunk()
        return TokenizedPrompt(tuple(chunks), frozenset(used))

    def empty_chunk(self) -> Chunk:
        return self._wrap([])

    def _items(
        self, text: str, matcher: re.Pattern[str] | None, sizes: Mapping[str, int]
    ) -> list[int | tuple[str, int]]:
        """Token ids of `text`, with each embedding name replaced by (name, n_vectors)."""
        items: list[int | tuple[str, int]] = []
        position = 0
        pieces: list[str | tuple[str, int]] = []
        if matcher is not None:
            lookup = {name.lower(): name for name in sizes}
            for match in matcher.finditer(text):
                pieces.append(text[position : match.start()])
                name = lookup[(match.group(1) or match.group(2)).lower()]
                pieces.append((name, sizes[name]))
                position = match.end()
        pieces.append(text[position:])
        texts = [p for p in pieces if isinstance(p, str) and p]
        token_lists = iter(self._token_ids(texts))
        for piece in pieces:
            if isinstance(piece, tuple):
                items.append(piece)
            elif piece:
                items.extend(next(token_lists))
        return items

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.model.tokenizer(texts, add_special_tokens=False, truncation=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def _wrap(self, slots: list[_Slot]) -> Chunk:
        slots = slots + [_Slot(self.eos, 1.0)] * (CHUNK_TOKENS - len(slots))
        ids = [self.bos] + [s.token for s in slots] + [self.eos]
        if self.pad != self.eos:  # SD 2.x: what follows the first EOS is padding
            first_end = ids.index(self.eos)
            ids = ids[: first_end + 1] + [self.pad] * (len(ids) - first_end - 1)
        weights = [1.0] + [s.weight for s in slots] + [1.0]
        splices = tuple(
            Splice(offset + 1, s.splice[0], s.splice[1])
            for offset, s in enumerate(slots)
            if s.splice is not None
        )
        return Chunk(tuple(ids), tuple(weights), splices)

    # ---------------------------------------------------------------- encoding (torch)

    def encode(
        self,
        prompt: str,
        negative: str = "",
        embeddings: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond), each `[1, 77·k, d]` with the same k."""
        encoded = self.encode_with_names(prompt, negative, embeddings or {})
        return encoded.cond, encoded.uncond

    def encode_with_names(
        self, prompt: str, negative: str, embeddings: Mapping[str, torch.Tensor]
    ) -> Conditioning:
        """Like `encode`, plus the embedding names that the prompt or negative used (and, for
        SDXL, the pooled embeddings)."""
        return self.encode_many([(prompt, negative, embeddings)])[0]

    def encode_many(
        self, prompts: Sequence[tuple[str, str, Mapping[str, torch.Tensor]]]
    ) -> list[Conditioning]:
        """`encode_with_names` of each (prompt, negative, embeddings), in one text-encoder call
        for all their chunks: a batch of 8 requests costs one graph replay, not 8 (each a few
        milliseconds of host work while the GPU waits). Each prompt's chunks use only its own
        embeddings, so two members' words of one name never meet."""
        chunks: list[Chunk] = []
        owners: list[Mapping[str, torch.Tensor]] = []  # each chunk's embeddings
        layouts: list[_Layout] = []
        for prompt, negative, embeddings in prompts:
            sizes = {name: int(vectors.shape[0]) for name, vectors in embeddings.items()}
            positive = self.tokenize(prompt, sizes)
            zeros = not negative and self.model.force_zeros_for_empty_prompt
            if zeros:
                mine, used = list(positive.chunks), positive.used_embeddings
                size = len(mine)
            else:
                negative_prompt = self.tokenize(negative, sizes)
                size = max(len(positive.chunks), len(negative_prompt.chunks))
                padding = [self.empty_chunk()]
                mine = (
                    list(positive.chunks)
                    + padding * (size - len(positive.chunks))
                    + list(negative_prompt.chunks)
                    + padding * (size - len(negative_prompt.chunks))
                )
                used = positive.used_embeddings | negative_prompt.used_embeddings
            layouts.append(_Layout(len(chunks), size, used, zeros))
            chunks += mine
            owners += [embeddings] * len(mine)
        states, pooled = self._encode(chunks, owners)  # [n, 77, d], [n, p] or None
        d = states.shape[-1]
        encoded = []
        for start, size, used, zeros in layouts:
            # A prompt's pooled embedding is its first chunk's, as A1111 takes it.
            cond = states[start : start + size].reshape(1, size * 77, d)
            first = None if pooled is None else pooled[start : start + 1]
            if zeros:
                uncond = torch.zeros_like(cond)
                first_uncond = None if first is None else torch.zeros_like(first)
            else:
                uncond = states[start + size : start + 2 * size].reshape(1, size * 77, d)
                first_uncond = None if pooled is None else pooled[start + size : start + size + 1]
            encoded.append(Conditioning(cond, uncond, used, first, first_uncond))
        return encoded

    def _encode(
        self, chunks: Sequence[Chunk], embeddings: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(states `[n, 77, d]`, SDXL's pooled `[n, p]` of every chunk or None); chunk i's
        splices name vectors of `embeddings[i]`. With CUDA graphs the call is padded with empty
        chunks to a power of two, so a handful of recorded shapes serve every batch."""
        model = self.model
        n = len(chunks)
        if model.graphs is not None and bucket(n) > n:
            chunks = [*chunks, *[self.empty_chunk()] * (bucket(n) - n)]
            embeddings = [*embeddings, *[{}] * (bucket(n) - n)]
        ids = torch.tensor([c.ids for c in chunks], dtype=torch.long, device=model.device)
        replacement, mask = self._replacements(chunks, embeddings)
        if model.is_sdxl:
            states, pooled = self._encode_sdxl(chunks, ids, replacement, mask)
            return states[:n], pooled[:n]
        if model.graphs is not None:
            states = model.graphs.text(ids, replacement, mask)
        else:
            states = run_text_encoder(model.text_encoder, ids, replacement, mask)
        return _weighted(states, chunks)[:n], None

    def _encode_sdxl(
        self,
        chunks: Sequence[Chunk],
        ids: torch.Tensor,
        replacement: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        ids_2 = self._ids_2(ids)
        if model.graphs is not None:
            states_l, states_g, pooled = model.graphs.text(ids, ids_2, replacement, mask)
        else:
            states_l, states_g, pooled = run_text_encoders_sdxl(
                model.text_encoder, model.text_encoder_2, self.eos, ids, ids_2, replacement, mask
            )
        states = torch.cat([_weighted(states_l, chunks), _weighted(states_g, chunks)], dim=-1)
        return states, pooled

    def _ids_2(self, ids: torch.Tensor) -> torch.Tensor:
        """The second encoder's ids: its own padding after each chunk's first end-of-text."""
        pad = self.model.tokenizer_2.pad_token_id
        if pad is None or int(pad) == self.pad:
            return ids
        first_end = (ids == self.eos).int().argmax(dim=1, keepdim=True)
        after = torch.arange(ids.shape[1], device=ids.device) > first_end
        return ids.masked_fill(after, int(pad))

    def _replacements(
        self, chunks: Sequence[Chunk], embeddings: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not any(c.splices for c in chunks):
            return None, None
        model = self.model
        replacement = torch.zeros(
            len(chunks), 77, model.hidden_size, device=model.device, dtype=model.dtype
        )
        mask = torch.zeros(len(chunks), 77, dtype=torch.bool, device=model.device)
        rows: list[torch.Tensor] = []
        for row, (chunk, vectors) in enumerate(zip(chunks, embeddings, strict=True)):
            for splice in chunk.splices:
                mask[row, splice.offset] = True
                rows.append(vectors[splice.name][splice.index])
        # One differentiable scatter, so training can pass vectors that require grad.
        spliced = torch.stack(rows).to(model.device, model.dtype)
        return replacement.masked_scatter(mask.unsqueeze(-1), spliced), mask


def run_text_encoder(
    text_encoder: Any,
    ids: torch.Tensor,
    replacement: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The text encoder's last hidden state for `ids`, with the token-embedding output replaced
    by `replacement` where `mask` is set.

    A pure function of its tensors (no hooks, nothing changed on the model), so concurrent
    calls never meet and `engine.graphs` can record it per shape.
    """
    embeds = token_embeddings(text_encoder, ids)
    if replacement is not None and mask is not None:
        embeds = torch.where(mask.unsqueeze(-1), replacement.to(embeds.dtype), embeds)
    return encode_embeds(text_encoder, embeds)


def text_transformer(text_encoder: Any) -> Any:
    """The module holding `embeddings`, `encoder`, `final_layer_norm`.

    transformers 5 flattened `CLIPTextModel` (it *is* the transformer); 4.x and
    `CLIPTextModelWithProjection` keep it under `.text_model`.
    """
    return getattr(text_encoder, "text_model", text_encoder)


def token_embeddings(text_encoder: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The token-embedding lookup (before positions are added)."""
    return text_transformer(text_encoder).embeddings.token_embedding(input_ids)


def encode_embeds(text_encoder: Any, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """Run the CLIP text transformer from token embeddings; returns the last hidden state.

    The same computation as `CLIPTextModel(input_ids).last_hidden_state`, entered one step
    later: position embeddings, causal self-attention layers, final layer norm.
    """
    transformer = text_transformer(text_encoder)
    hidden = transformer.embeddings(inputs_embeds=inputs_embeds)
    hidden = _run_layers(transformer, hidden, transformer.encoder.layers)
    return transformer.final_layer_norm(hidden)


def run_text_encoder_sdxl(
    text_encoder: Any,
    ids: torch.Tensor,
    replacement: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    pool_at: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDXL's use of one text encoder: (penultimate hidden state `[n, 77, d]`, and with
    `pool_at` the projected final state at each row's first `pool_at` token `[n, p]`).

    The penultimate state is diffusers' `hidden_states[-2]` (the input of the last layer, no
    final layer norm); the pooled one is `CLIPTextModelWithProjection.text_embeds` taken where
    A1111 takes it: at the end-of-text token, whatever a config's legacy `eos_token_id` says.
    Spliced like `run_text_encoder`.
    """
    transformer = text_transformer(text_encoder)
    embeds = token_embeddings(text_encoder, ids)
    if replacement is not None and mask is not None:
        embeds = torch.where(mask.unsqueeze(-1), replacement.to(embeds.dtype), embeds)
    hidden = transformer.embeddings(inputs_embeds=embeds)
    layers = transformer.encoder.layers
    penultimate = _run_layers(transformer, hidden, layers[:-1])
    if pool_at is None:
        return penultimate, None
    final = transformer.final_layer_norm(_run_layers(transformer, penultimate, layers[-1:]))
    first_end = (ids == pool_at).int().argmax(dim=1)
    pooled_state = final[torch.arange(final.shape[0], device=final.device), first_end]
    return penultimate, text_encoder.text_projection(pooled_state)


def run_text_encoders_sdxl(
    text_encoder: Any,
    text_encoder_2: Any,
    eos: int,
    ids: torch.Tensor,
    ids_2: torch.Tensor,
    replacement: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both SDXL encoders on one batch of chunks: (`clip_l` states `[n, 77, 768]`, `clip_g`
    states `[n, 77, 1280]`, pooled `[n, 1280]`). `replacement` holds both halves side by side
    (`clip_l` first), as an SDXL embedding's vectors do. A pure function of its tensors, so
    `engine.graphs` records it per shape like `run_text_encoder`."""
    width_l = int(text_encoder.config.hidden_size)
    replacement_l = None if replacement is None else replacement[..., :width_l]
    replacement_g = None if replacement is None else replacement[..., width_l:]
    states_l, _ = run_text_encoder_sdxl(text_encoder, ids, replacement_l, mask)
    states_g, pooled = run_text_encoder_sdxl(
        text_encoder_2, ids_2, replacement_g, mask, pool_at=eos
    )
    assert pooled is not None
    return states_l, states_g, pooled


def _run_layers(transformer: Any, hidden: torch.Tensor, layers: Sequence[Any]) -> torch.Tensor:
    """`hidden` through `layers` of the CLIP encoder, causally masked as the encoder does it."""
    try:
        from transformers.masking_utils import create_causal_mask
    except ImportError:  # transformers 4.x
        from transformers.modeling_attn_mask_utils import _create_4d_causal_attention_mask

        causal = _create_4d_causal_attention_mask(
            hidden.shape[:2], hidden.dtype, device=hidden.device
        )
        for layer in layers:
            hidden = layer(hidden, None, causal)[0]
        return hidden
    mask = create_causal_mask(
        config=transformer.config,
        inputs_embeds=hidden,
        attention_mask=None,
        past_key_values=None,
    )
    for layer in layers:
        hidden = layer(hidden, mask, is_causal=True)
    return hidden


def _weighted(states: torch.Tensor, chunks: Sequence[Chunk]) -> torch.Tensor:
    """`states` of `chunks` with each weighted chunk's weights applied A1111-style."""
    if not any(c.weighted for c in chunks):
        return states
    weights = torch.tensor([c.weights for c in chunks], dtype=states.dtype, device=states.device)
    return torch.stack(
        [
            _apply_weights(z, w) if chunk.weighted else z
            for z, w, chunk in zip(states, weights, chunks, strict=True)
        ]
    )


def _apply_weights(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111 "Original" emphasis: multiply, then restore the unweighted mean."""
    original_mean = z.mean()
    weighted = z * weights.unsqueeze(-1)
    weighted_mean = weighted.mean()
    ratio = original_mean / weighted_mean
    if not torch.isfinite(ratio):
        # A weighted mean of (numerically) zero would turn the prompt into NaN; keep the
        # multiplied states unrescaled rather than render a black image.
        return weighted
    return weighted * ratio
