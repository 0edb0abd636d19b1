"""Read hoigen WebDataset shards (SPEC §3) as grasp sequences or single frames.

``open_sequences(source)`` yields one dict per sample (grasp sequence)::

    {
        "key": "s00000012",                 # sample key (sample index)
        "url": ".../hoigen-000006.tar",     # shard it came from
        "meta": {...},                      # meta.json, as written (lists, not arrays)
        "frames": [                         # T dicts, one per frame, numpy arrays
            {"rgb": (H, W, 3) uint8, "depth": (H, W) uint16, "depth_m": (H, W) float32 metres,
             "mask": (H, W) uint8, "normal": (H, W, 3) uint8, "nocs": (H, W, 3) uint16,
             "skeleton": (H, W, 3) uint8, "hoimask": (H, W, 3) uint8, "tracking": (H, W, 3) uint8,
             "photo": (H, W, 3) uint8,      # photo only when an appearance model ran
             "video": (H, W, 3) uint8},     # video frame k (video.mp4 decoded, or fNNN.video.png), with --video
            ...
        ],
        "points": (T, N, 3) float32,        # camera-frame surface points (the same point in every frame)
        "points_label": (N,) uint8,         # 0 object, 1 hand
        # optional, only when present in the shard: "video" / "tracking_video" (mp4 bytes), "extra" (other members)
    }

``open_frames(source)`` yields single frames (key ``s00000012/f003``) with that frame's images, its labels from meta
(``T_cam_obj``, ``mano``, ``joints3d``, ``joints2d``, boxes, visible fractions... as numpy arrays), the sample-level
meta (object, camera, hand, grasp, ``depth_scale``), ``K`` and that frame's points.

PNG members are decoded with :func:`hoigen.render.png.decode_png`, which keeps 16-bit images (depth, NOCS) intact;
WebDataset's stock image decoder would crush them to 8 bits. ``.npy`` members are loaded with
``allow_pickle=False`` and nothing is ever unpickled. ``depth_m`` = ``depth * depth_scale / 1000`` (0 = no
surface).

``source`` is an output folder of ``hoigen synth`` (its ``manifest.json`` lists the shards, in order; without a
manifest the folder's ``shards/*.tar`` are used), a ``manifest.json`` path, a shard path, a list of shard paths or
URLs, or any URL / brace pattern WebDataset accepts (``out/shards/hoigen-{000000..000003}.tar``, ``pipe:...``,
``https://...``). Local paths are checked up front: a missing one is a ``FileNotFoundError`` naming it.

**PyTorch** — the datasets are torch ``IterableDataset`` objects. Shards are split across ``DataLoader`` workers
(``webdataset.split_by_worker``) and across nodes (``webdataset.split_by_node``, from the ``torch.distributed``
rank and world size), so every shard is read once per epoch in total; give at least ``nodes × workers`` shards or
some workers idle. Samples are plain dicts holding numpy arrays (``uint16`` for depth / NOCS, which torch supports
only partially), so use ``DataLoader(ds, batch_size=None, collate_fn=to_torch)`` for one sample at a time, or
``DataLoader(ds, batch_size=B, collate_fn=collate)`` to stack frames of equal size::

    from torch.utils.data import DataLoader
    from hoigen.datasets.reader import open_frames, collate

    loader = DataLoader(open_frames("out/", shuffle=1000), batch_size=32, num_workers=4, collate_fn=collate)

With ``resampled=True`` shards are drawn with replacement forever (each worker independently); bound an epoch
yourself (e.g. ``.with_epoch(n)``).

**Integrity** — by default each local shard is checked against the output folder's manifest (or the shard's
record) just before it is read: size, sha256, sample count and frames per sample. A mismatch raises
:class:`~hoigen.datasets.integrity.ShardIntegrityError` naming the shard and the member that is cut, missing or
changed; ``verify=False`` skips the check (shards without a manifest entry or record are read unverified).

**Errors** — a sample that lacks a required member (``meta.json``, ``points.npy``, ``points_label.npy`` or a
frame image) raises :class:`ShardFormatError` naming the sample key, the shard and the missing member. Pass
``handler=webdataset.warn_and_continue`` (or ``ignore_and_continue``) to log and skip bad samples / shards instead.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hoigen.datasets.integrity import ShardIntegrityError as ShardIntegrityError  # re-exported
from hoigen.datasets.shards import IMAGE_MEMBERS

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
REQUIRED_FRAME_IMAGES = tuple(name for name in IMAGE_MEMBERS if name != "tracking")
"""Per-frame images every sample must have (``tracking`` may come as ``tracking.mp4`` instead)."""
REQUIRED_SAMPLE_MEMBERS = ("meta.json", "points.npy", "points_label.npy")
_FRAME_MEMBER = re.compile(r"^f(\d+)\.([a-z0-9_]+)\.png$")
_SAMPLE_VIDEOS = {"video.mp4": "video", "tracking.mp4": "tracking_video"}
_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class ShardFormatError(ValueError):
    """A shard sample does not follow the hoigen schema (e.g. a required member is missing)."""


# ---------------------------------------------------------------------------------------------------------------
# sources


def _is_remote(url: str) -> bool:
    """True for ``pipe:...`` and ``scheme://...`` URLs (not for local paths, including Windows drive letters)."""
    return url.startswith("pipe:") or ("://" in url and bool(_URL_SCHEME.match(url)))


def read_manifest(folder: str | Path) -> dict | None:
    """The ``manifest.json`` of an output folder, or None when there is none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShardFormatError(f"cannot read the manifest {path}: {exc}") from exc


def _folder_shards(folder: Path) -> list[str]:
    manifest = read_manifest(folder)
    if manifest is not None:
        entries = manifest.get("shards")
        if not entries:
            raise FileNotFoundError(
                f"{folder / MANIFEST_NAME} lists no shards (the run made none yet?); run `hoigen synth` to "
                "completion, or pass shard paths directly"
            )
        if not manifest.get("complete", True):
            logger.warning(
                "%s: the run is incomplete (%d of its shards are listed); reading the finished ones",
                folder,
                len(entries),
            )
        paths = [folder / "shards" / entry["name"] for entry in entries]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} shard(s) listed in {folder / MANIFEST_NAME} are missing: "
                + ", ".join(missing[:5])
            )
        return [str(p) for p in paths]
    found = sorted((folder / "shards").glob("*.tar")) or sorted(folder.glob("*.tar"))
    if not found:
        raise FileNotFoundError(
            f"{folder} is not a hoigen dataset: it has no {MANIFEST_NAME} and no shards (shards/*.tar or *.tar)"
        )
    logger.info("%s has no %s; reading the %d shard(s) found there", folder, MANIFEST_NAME, len(found))
    return [str(p) for p in found]


def _expand(url: str) -> list[str]:
    from webdataset.shardlists import expand_urls

    return list(expand_urls(url))


def _check_local(urls: list[str]) -> list[str]:
    missing = [u for u in urls if not _is_remote(u) and not Path(u).is_file()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise FileNotFoundError(f"shard file(s) not found: {', '.join(missing[:5])}{more}")
    return urls


def resolve_shards(source) -> list[str]:
    """The ordered list of shard URLs / paths ``source`` stands for (see the module docstring)."""
    if isinstance(source, str | Path):
        text = str(source)
        if _is_remote(text):
            return _expand(text)
        path = Path(source)
        if path.is_dir():
            return _folder_shards(path)
        if path.is_file():
            if path.name.endswith(".json"):
                return _folder_shards(path.parent)
            return [str(path)]
        if "{" in text or "::" in text:
            return _check_local(_expand(text))
        what = "shard file" if path.suffix in (".tar", ".tgz", ".gz") else "dataset folder"
        raise FileNotFoundError(f"{what} {path} does not exist")
    if isinstance(source, Iterable):
        urls = [str(u) for u in source]
        if not urls:
            raise FileNotFoundError("no shards given (an empty list)")
        return _check_local(urls)
    raise TypeError(
        f"source must be a folder, a shard path or URL pattern, or a list of them; got {type(source).__name__}"
    )


# ---------------------------------------------------------------------------------------------------------------
# decoding (module-level functions, so datasets pickle into spawned DataLoader workers)


def _decode_member(key: str, data: bytes, images: bool = True):
    """WebDataset decoder handler: ``key`` is ``.<suffix>`` (e.g. ``.f000.depth.png``)."""
    extension = key.rsplit(".", 1)[-1].lower()
    if extension == "png":
        if not images:
            return None  # leave the PNG bytes as they are
        from hoigen.render.png import decode_png

        return decode_png(data)
    if extension == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if extension == "json":
        return json.loads(data)
    return None  # unknown member (e.g. mp4): bytes


def _missing(key: str, url: str, member: str, present) -> ShardFormatError:
    names = ", ".join(sorted(str(k) for k in present if not str(k).startswith("__"))) or "none"
    return ShardFormatError(f"sample {key} in shard {url} has no {member} member (it has: {names})")


def _assemble_sequence(sample: dict, decoded: bool = True) -> dict:
    """Turn WebDataset's flat ``{suffix: value}`` sample into the sequence dict of the module docstring."""
    key = sample.get("__key__", "?")
    url = sample.get("__url__", "?")
    for member in REQUIRED_SAMPLE_MEMBERS:
        if member not in sample:
            raise _missing(key, url, member, sample)
    meta = sample["meta.json"]
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise ShardFormatError(f"sample {key} in shard {url}: meta.json has no 'frames' list")
    num_frames = len(meta["frames"])
    frames: list[dict] = [{} for _ in range(num_frames)]
    extra = {}
    for name, value in sample.items():
        if name.startswith("__") or name in REQUIRED_SAMPLE_MEMBERS:
            continue
        match = _FRAME_MEMBER.match(name)
        if match is None:
            extra[name] = value
            continue
        t, image = int(match.group(1)), match.group(2)
        if t >= num_frames:
            raise ShardFormatError(
                f"sample {key} in shard {url} has member {name} but its meta.json lists {num_frames} frames"
            )
        frames[t][image] = value
    for t, frame in enumerate(frames):
        required = REQUIRED_FRAME_IMAGES if "tracking.mp4" in extra else (*REQUIRED_FRAME_IMAGES, "tracking")
        for image in required:
            if image not in frame:
                raise _missing(key, url, f"f{t:03d}.{image}.png", sample)
    points, points_label = sample["points.npy"], sample["points_label.npy"]
    if points.ndim != 3 or points.shape[0] != num_frames or points.shape[2] != 3:
        raise ShardFormatError(
            f"sample {key} in shard {url}: points.npy has shape {points.shape}, expected ({num_frames}, N, 3)"
        )
    if points_label.shape != (points.shape[1],):
        raise ShardFormatError(
            f"sample {key} in shard {url}: points_label.npy has shape {points_label.shape}, "
            f"expected ({points.shape[1]},)"
        )
    if decoded:
        if "depth_scale" not in meta:
            raise ShardFormatError(f"sample {key} in shard {url}: meta.json has no depth_scale")
        to_metres = np.float32(float(meta["depth_scale"]) / 1000.0)
        for frame in frames:
            frame["depth_m"] = frame["depth"].astype(np.float32) * to_metres
        _video_frames(frames, extra, key, url)
    result = {
        "key": key,
        "url": url,
        "meta": meta,
        "frames": frames,
        "points": points,
        "points_label": points_label,
    }
    for member, field in _SAMPLE_VIDEOS.items():
        if member in extra:
            result[field] = extra.pop(member)
    if extra:
        result["extra"] = extra
    return result


def _video_frames(frames: list[dict], extra: dict, key: str, url: str) -> None:
    """Decode ``video.mp4`` / ``tracking.mp4`` into each frame's ``video`` / ``tracking`` image (frame k of the
    mp4 = trajectory frame k) where no lossless ``fNNN.video.png`` / ``fNNN.tracking.png`` is present."""
    for member, image in (("video.mp4", "video"), ("tracking.mp4", "tracking")):
        if member not in extra or all(image in frame for frame in frames):
            continue
        from hoigen.render.video import decode_mp4

        try:
            decoded = decode_mp4(extra[member])
        except ValueError as error:
            raise ShardFormatError(
                f"sample {key} in shard {url}: {member} is not a readable video: {error}"
            ) from error
        if decoded.shape[0] != len(frames):
            raise ShardFormatError(
                f"sample {key} in shard {url}: {member} has {decoded.shape[0]} frames, meta.json lists {len(frames)}"
            )
        for frame, picture in zip(frames, decoded):
            frame.setdefault(image, picture)


def _label_arrays(value):
    """JSON labels -> numpy where they are numeric (nested lists become arrays; dicts are converted inside)."""
    if isinstance(value, dict):
        return {k: _label_arrays(v) for k, v in value.items()}
    if isinstance(value, list) and value:
        try:
            array = np.asarray(value)
        except ValueError:  # ragged
            return [_label_arrays(v) for v in value]
        if array.dtype.kind in "biuf":
            return array
        return [_label_arrays(v) for v in value]
    return value


def sequence_frames(sequence: dict) -> Iterator[dict]:
    """The single frames of one sequence dict (as yielded by ``open_frames``)."""
    meta = sequence["meta"]
    shared = {k: v for k, v in meta.items() if k != "frames"}
    K = np.asarray(meta["camera"]["K"], dtype=np.float64)
    depth_scale = float(meta["depth_scale"]) if "depth_scale" in meta else None
    num_frames = len(sequence["frames"])
    key = sequence["key"]
    for t, images in enumerate(sequence["frames"]):
        frame = {
            "key": f"{key}/f{t:03d}",
            "sample_key": key,
            "frame": t,
            "num_frames": num_frames,
            "url": sequence["url"],
            **images,
            "labels": _label_arrays(meta["frames"][t]),
            "meta": shared,
            "K": K,
            "depth_scale": depth_scale,
            "points": sequence["points"][t],
            "points_label": sequence["points_label"],
        }
        yield frame


def _split_frames(sequences: Iterable[dict]) -> Iterator[dict]:
    for sequence in sequences:
        yield from sequence_frames(sequence)


# ---------------------------------------------------------------------------------------------------------------
# datasets


def _pipeline(source, *, shuffle: int, decode: bool, resampled: bool, handler, seed, verify: bool = True):
    import webdataset as wds

    urls = resolve_shards(source)
    handler = wds.reraise_exception if handler is None else handler
    if shuffle < 0:
        raise ValueError(f"shuffle must be >= 0 (a buffer size), got {shuffle}")
    splitter = wds.split_by_worker
    if verify:
        from hoigen.datasets.integrity import shard_expectations, verifying_splitter

        expectations = shard_expectations(urls)
        if expectations:  # each worker checks the shards it reads, just before reading them
            splitter = functools.partial(verifying_splitter, splitter=splitter, expectations=expectations)
    dataset = wds.WebDataset(
        urls,
        handler=handler,
        resampled=resampled,
        shardshuffle=False if resampled or not shuffle else max(len(urls), 1),
        nodesplitter=wds.split_by_node,
        workersplitter=splitter,
        empty_check=False,  # a worker may get no shard when there are fewer shards than workers
        seed=seed,
    )
    decoder = functools.partial(_decode_member, images=decode)
    dataset = dataset.decode(decoder, pre=[], post=[], handler=handler)
    return dataset.map(functools.partial(_assemble_sequence, decoded=decode), handler=handler)


def open_sequences(
    source,
    *,
    shuffle: int = 0,
    decode: bool = True,
    resampled: bool = False,
    handler=None,
    seed: int | None = None,
    verify: bool = True,
):
    """A ``webdataset.WebDataset`` (a torch ``IterableDataset``) of grasp sequences from ``source``.

    Args:
        source: output folder, manifest, shard path(s), or WebDataset URL / brace pattern (module docstring).
        shuffle: 0 reads shards and samples in order; > 0 shuffles the shard order and samples within a buffer of
            this many sequences.
        decode: False leaves the PNG images as encoded bytes (decode them with ``hoigen.render.png.decode_png``;
            no ``depth_m`` then); JSON and ``.npy`` members are always decoded.
        resampled: draw shards with replacement, endlessly (for step-based training).
        handler: WebDataset exception handler; default re-raises (e.g. :class:`ShardFormatError`),
            ``webdataset.warn_and_continue`` logs and skips.
        seed: seed of the shard / sample shuffles (None: random).
        verify: check each local shard against the manifest (or its record) before reading it: size, sha256,
            sample and frame counts (:mod:`hoigen.datasets.integrity`); False reads shards as they are.

    Raises:
        FileNotFoundError: the folder or a local shard does not exist, or a folder holds no manifest and no shards.
        ShardIntegrityError: (while iterating) a shard is truncated or damaged, naming the shard and member.
    """
    dataset = _pipeline(
        source, shuffle=shuffle, decode=decode, resampled=resampled, handler=handler, seed=seed, verify=verify
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    return dataset


def open_frames(
    source,
    *,
    shuffle: int = 0,
    decode: bool = True,
    resampled: bool = False,
    handler=None,
    seed: int | None = None,
    verify: bool = True,
):
    """Like :func:`open_sequences`, but yields single frames (``shuffle`` is then a buffer of frames).

    Each frame dict: ``key`` (``s00000012/f003``), ``sample_key``, ``frame`` (index), ``num_frames``, ``url``,
    the frame's images (``rgb``, ``depth``, ``depth_m``, ``mask``, ``normal``, ``nocs``, ``skeleton``,
    ``hoimask``, ``tracking``, ...), ``labels`` (that frame's entry of ``meta["frames"]``, numeric lists as numpy
    arrays: ``T_cam_obj``, ``mano``, ``joints3d``, ``joints2d``, ``bbox_obj``, ``visib_fract_obj``...), ``meta``
    (the sample-level meta without ``frames``: object, hand, camera, grasp, ``depth_scale``...), ``K`` (3×3),
    ``depth_scale``, ``points`` ((N, 3), this frame's points) and ``points_label`` ((N,)).
    """
    dataset = _pipeline(
        source, shuffle=shuffle, decode=decode, resampled=resampled, handler=handler, seed=seed, verify=verify
    )
    dataset = dataset.compose(_split_frames)
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    return dataset


# ---------------------------------------------------------------------------------------------------------------
# torch helpers


def to_torch(sample):
    """Convert the numpy arrays in ``sample`` (nested dicts / lists) to torch tensors; other values are kept.

    ``uint16`` arrays (depth, NOCS) become ``int32`` tensors (torch supports uint16 only partially); other dtypes
    are kept. Usable as ``collate_fn`` with ``batch_size=None``.
    """
    import torch

    def convert(value):
        if isinstance(value, np.ndarray):
            if value.dtype == np.uint16:
                value = value.astype(np.int32)
            elif not value.flags.writeable or not value.flags.c_contiguous:
                value = np.ascontiguousarray(value).copy()
            if value.dtype.kind not in "biuf":
                return value
            return torch.from_numpy(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        return value

    return convert(sample)


def collate(samples: list):
    """Batch frame (or sequence) dicts: arrays of equal shape and dtype are stacked (then :func:`to_torch`),
    numbers become tensors, dicts (``labels``) are collated key by key, and everything else (strings, ``meta``,
    ragged values) is kept as a list. Use as ``DataLoader(..., batch_size=B, collate_fn=collate)``."""
    import torch

    def merge(values: list):
        first = values[0]
        if isinstance(first, np.ndarray):
            if all(
                isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype
                for v in values
            ):
                return to_torch(np.stack(values))
            return to_torch(values)
        if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
            return {k: merge([v[k] for v in values]) for k in first}
        if isinstance(first, bool | int | float) and all(
            isinstance(v, bool | int | float) and type(v) is type(first) for v in values
        ):
            return torch.tensor(values)
        return list(values)

    samples = list(samples)
    if not samples:
        return {}
    if all(isinstance(s, dict) for s in samples):
        keys = samples[0].keys()
        return {
            k: merge([s[k] for s in samples])
            if k != "meta" and all(k in s for s in samples)
            else [s.get(k) for s in samples]
            for k in keys
        }
    return merge(samples)
