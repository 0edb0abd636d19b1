"""HVG-3D: 3D-conditioned hand-object videos on CogVideoX-5B-I2V (SPEC §6).

``model`` (the 3D ControlNet, attached to diffusers' ``CogVideoXTransformer3DModel`` by hooks), ``points`` (point
tokenizer), ``conditioning`` (the value ranges shared by training and inference), ``weights`` (strict safetensors
loading), ``pipeline`` (``HVG3DVideoBackend`` for ``hoigen generate --video hvg3d``), ``fixtures`` (tiny offline
models). Importing this package imports no torch.
"""
