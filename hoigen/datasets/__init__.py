"""hoigen datasets: WebDataset shards (SPEC §3) — writing (``shards``), reading (``reader``), statistics
(``inspect``).

Importing this package is cheap: webdataset, torch and OpenCV are imported by the functions that use them. The
reader's entry points are exported lazily::

    from hoigen.datasets import open_sequences, open_frames, to_torch, collate

``wds_decoder`` decodes hoigen's 16-bit / label PNGs in a plain WebDataset pipeline
(``.decode(hoigen.datasets.wds_decoder, "rgb")``); ``object_mesh(sequence)`` reads a sample's canonical mesh from
the output folder's mesh store.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "open_sequences": "hoigen.datasets.reader",
    "open_frames": "hoigen.datasets.reader",
    "resolve_shards": "hoigen.datasets.reader",
    "sequence_frames": "hoigen.datasets.reader",
    "to_torch": "hoigen.datasets.reader",
    "collate": "hoigen.datasets.reader",
    "ShardFormatError": "hoigen.datasets.reader",
    "ShardIntegrityError": "hoigen.datasets.integrity",
    "verify_dataset": "hoigen.datasets.integrity",
    "dataset_statistics": "hoigen.datasets.inspect",
    "format_statistics": "hoigen.datasets.inspect",
    "wds_decoder": "hoigen.datasets.decoders",
    "object_mesh": "hoigen.datasets.meshes",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
