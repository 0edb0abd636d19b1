"""Objects: sources of meshes, validation/repair, canonical frames and NOCS classes (numpy/scipy/trimesh only).

Sources: ``builtin:nocs`` (procedural bottles, bowls, cameras, cans, laptops and mugs, a new random shape per
sample) or a folder of meshes (YCB layout or flat). Objects are assigned to samples deterministically: sample
``i`` gets category / object ``i mod n``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from hoigen.objects.asset import ObjectAsset, ObjectError, make_asset
from hoigen.objects.categories import NOCS_CLASSES, YCB_TO_NOCS, classify

logger = logging.getLogger(__name__)

BUILTIN_SOURCE = "builtin:nocs"


class BuiltinSource:
    """Procedural NOCS objects; the shape of sample ``index`` is drawn from the ``rng`` it is given."""

    def __init__(self, categories: tuple[str, ...] = ()):
        from hoigen.objects.builtin import BUILTIN_CATEGORIES

        self.categories = tuple(categories) or BUILTIN_CATEGORIES

    def __len__(self) -> int:
        return len(self.categories)

    def object_for(self, index: int, rng: np.random.Generator) -> ObjectAsset:
        from hoigen.objects.builtin import make_builtin_object

        return make_builtin_object(self.categories[index % len(self.categories)], rng, index)

    def describe(self) -> str:
        return f"{BUILTIN_SOURCE} ({', '.join(self.categories)})"


class FolderSource:
    """Meshes in a folder, discovered once and loaded on demand (a few recent ones are kept in memory)."""

    def __init__(self, root, units: str = "auto", cache_size: int = 8):
        from hoigen.objects.folder import discover_objects

        self.root = root
        self.units = units
        self.entries = discover_objects(root)
        self._cache: OrderedDict[int, ObjectAsset] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, k: int) -> ObjectAsset:
        """The ``k``-th object; raises :class:`ObjectError` for a bad file."""
        from hoigen.objects.folder import load_object

        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        asset = load_object(self.entries[k], units=self.units)
        self._cache[k] = asset
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return asset

    def object_for(self, index: int, rng: np.random.Generator) -> ObjectAsset:
        del rng  # folder objects are fixed meshes
        return self.load(index % len(self.entries))

    def describe(self) -> str:
        return f"{self.root} ({len(self.entries)} objects)"


def open_source(source: str, units: str = "auto", categories: tuple[str, ...] = ()):
    """``builtin:nocs`` -> :class:`BuiltinSource`; ``dexycb:ROOT`` / ``ho3d:ROOT`` -> a real-data source
    (:mod:`hoigen.sources`, every sequence, one frame per sample); a folder path -> :class:`FolderSource`."""
    from hoigen.sources import is_real_source, open_real_source

    if is_real_source(source):
        return open_real_source(source)
    if source == BUILTIN_SOURCE:
        return BuiltinSource(categories)
    if source.startswith("builtin:"):
        raise ValueError(
            f"unknown built-in object source {source!r}; the built-in source is {BUILTIN_SOURCE!r}"
        )
    return FolderSource(source, units)


__all__ = [
    "BUILTIN_SOURCE",
    "NOCS_CLASSES",
    "YCB_TO_NOCS",
    "BuiltinSource",
    "FolderSource",
    "ObjectAsset",
    "ObjectError",
    "classify",
    "make_asset",
    "open_source",
]
