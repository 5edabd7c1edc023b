"""The GPU side: model loading, prompt encoding, generation, training, embedding files.

This is the only package that imports torch, diffusers and transformers. Importing `engine`
itself stays cheap; the heavy modules are imported where they are used.
"""
