"""Training the generative models on hoigen shards (SPEC §7): one accelerate loop (``loop.py``) shared by
HOIDiffusion (``hoidiffusion.py``) and HVG-3D (``hvg3d.py``), the shard dataset (``data.py``) and offline
evaluation (``eval.py``). Importing this package loads nothing heavy; the modules import torch."""
