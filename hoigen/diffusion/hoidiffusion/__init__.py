"""HOIDiffusion (CVPR 2024): Stable Diffusion 1.4 with skeleton, normal-map and mask T2I-Adapters."""
