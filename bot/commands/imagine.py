"""`lexicon imagine PROMPT`: render a prompt offline through the same path as the bot."""

from __future__ import annotations

import argparse

from bot.cli import NotBuiltError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt; stored embedding names may appear in it")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--seed", type=int, help="seed (default: random)")
    parser.add_argument("--steps", type=int, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=7.5, help="CFG scale (default 7.5)")
    parser.add_argument("--size", help="WIDTHxHEIGHT (default: the model's native size)")
    parser.add_argument("--scheduler", default="dpmpp_2m_karras", help="sampler name")
    parser.add_argument("--count", type=int, default=1, help="images to render, 1-4")
    parser.add_argument("--user", type=int, default=0, help="whose embeddings to use (default 0)")
    parser.add_argument("--out", default="image.png", help="output PNG path")


def main(args: argparse.Namespace) -> int:
    raise NotBuiltError("image generation is not built yet (issue: Engine I).")
