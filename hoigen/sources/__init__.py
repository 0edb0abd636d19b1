"""Real-data sources (SPEC §8): ``dexycb:ROOT`` and ``ho3d:ROOT``.

Each reads its dataset's own layout (the user's download; hoigen never fetches it) into the sequence record a
synthetic sample has — object in hoigen's canonical frame with per-frame ``T_cam_obj``, MANO parameters in hoigen's
convention, the camera — with the real frames attached (:class:`~hoigen.sources.record.RealClip`). A source is a
list of windows (``clip`` consecutive frames of one camera); window ``i`` is sample ``i`` of a ``hoigen synth``
run, which renders every condition from the ground truth at the real camera (:mod:`hoigen.synth.real`).

The registry maps a ``--objects`` value to a source: :func:`is_real_source` tells whether a value names one,
:func:`open_real_source` opens it. numpy / OpenCV / yaml only at import.
"""

from __future__ import annotations

from hoigen.sources.record import MissingAnnotation, RealClip, RealConfig, RealSource, Window

SOURCE_KINDS = ("dexycb", "ho3d")


def parse_source(spec: str) -> tuple[str, str] | None:
    """``"dexycb:/data/dexycb"`` -> ``("dexycb", "/data/dexycb")``; None when ``spec`` names no real source."""
    kind, sep, root = str(spec).partition(":")
    if not sep or kind not in SOURCE_KINDS:
        return None
    if not root:
        raise ValueError(f"--objects {spec!r}: give the dataset folder, e.g. {kind}:/data/{kind}")
    return kind, root


def is_real_source(spec: str) -> bool:
    return parse_source(spec) is not None


_OPEN: dict[tuple[str, str, str, int], RealSource] = {}


def open_real_source(spec: str, split: str = "", clip: int = 1, cache: bool = True) -> RealSource:
    """Open ``dexycb:ROOT`` / ``ho3d:ROOT`` with a split and clip length (frames per sample).

    Opened sources are kept per (spec, split, clip) in this process, so rebuilding objects for many samples
    (exports) lists the dataset once.

    Raises:
        FileNotFoundError / ValueError: naming the file that is missing or wrong (calibration, models, meta).
    """
    parsed = parse_source(spec)
    if parsed is None:
        raise ValueError(f"{spec!r} is not a real-data source; use dexycb:ROOT or ho3d:ROOT")
    key = (parsed[0], parsed[1], split, int(clip))
    if cache and key in _OPEN:
        return _OPEN[key]
    if parsed[0] == "dexycb":
        from hoigen.sources.dexycb import DexYCBSource

        source = DexYCBSource(parsed[1], split, clip)
    else:
        from hoigen.sources.ho3d import HO3DSource

        source = HO3DSource(parsed[1], split, clip)
    if cache:
        _OPEN[key] = source
    return source


def source_for_config(config) -> RealSource:
    """The real source of a run config (``objects.source``, ``real.split``, ``trajectory.frames`` = clip)."""
    real = getattr(config, "real", None) or RealConfig()
    return open_real_source(config.objects.source, real.split, config.trajectory.total_frames)


__all__ = [
    "SOURCE_KINDS",
    "MissingAnnotation",
    "RealClip",
    "RealConfig",
    "RealSource",
    "Window",
    "is_real_source",
    "open_real_source",
    "parse_source",
    "source_for_config",
]
