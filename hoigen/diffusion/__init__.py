"""Generative stages (SPEC §6, §7): HOIDiffusion photoreal frames and HVG-3D videos, their weights and training.

Nothing here is imported by the light core; torch, diffusers and transformers load only when a generative stage
runs (``pip install hoigen[diffusion]``). Weights always come from local paths given by the user; nothing is
downloaded.
"""
