"""Prompt templates for textual-inversion training, one list per kind of concept.

The object and style lists are the ones the textual-inversion paper's code and diffusers' example
train with (`imagenet_templates_small`, `imagenet_style_templates_small`), so an embedding learnt
here is conditioned the way users of other tools expect. Faces get person-photo phrasings: a
person is written without an article ("a photo of Ana"), and the object list's "a photo of a
dirty …" teaches the wrong thing about a face. `{}` marks where the new word goes; every template
ends with it, so the vectors never straddle the 75-token window.
"""

from __future__ import annotations

from typing import Final

OBJECT_TEMPLATES: Final = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

STYLE_TEMPLATES: Final = (
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dirty painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a cropped painting in the style of {}",
    "a good painting in the style of {}",
    "a close-up painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
)

FACE_TEMPLATES: Final = (
    "a photo of {}",
    "a portrait of {}",
    "a close-up photo of {}",
    "a headshot of {}",
    "a cropped photo of {}",
    "a bright photo of {}",
    "a dark photo of {}",
    "a good photo of {}",
    "a candid photo of {}",
    "a photo of the face of {}",
    "a portrait photo of {}",
    "a selfie of {}",
    "a picture of {}",
    "a rendering of {}",
)

TEMPLATES_BY_KIND: Final = {
    "object": OBJECT_TEMPLATES,
    "style": STYLE_TEMPLATES,
    "face": FACE_TEMPLATES,
}

DEFAULT_INIT_WORDS: Final = {"object": "object", "style": "painting", "face": "person"}


def templates_for(kind: str) -> tuple[str, ...]:
    """The template list for a training kind (`object`, `style` or `face`)."""
    try:
        return TEMPLATES_BY_KIND[kind]
    except KeyError:
        raise ValueError(
            f"Training kind {kind!r} is not one of {', '.join(TEMPLATES_BY_KIND)}."
        ) from None
