"""hoigen: synthetic hand-object interaction datasets with exact 3D labels.

Importing ``hoigen`` is cheap: it loads numpy only. Heavy backends (torch, pyrender/OpenGL, diffusers,
webdataset, ray) are imported by the functions that use them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
