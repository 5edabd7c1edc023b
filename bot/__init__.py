"""Lexicon's application core: settings, services, scheduler, transports and the CLI.

Nothing in this package imports torch, diffusers or transformers: the bot process must start
fast and stay responsive while the GPU works in another process.
"""
