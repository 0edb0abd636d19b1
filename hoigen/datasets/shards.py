"""WebDataset shards, exactly per SPEC §3.

A sample (key ``s%08d``, the sample index) is a set of tar members ``<key>.<suffix>``: ``meta.json``, per frame
``fNNN.{rgb,depth,mask,normal,nocs,skeleton,hoimask,tracking}.png``, ``points.npy`` and ``points_label.npy``. Members
are written (with ``tarfile``, USTAR) in sorted order with a fixed mtime, owner and mode, and JSON with sorted keys, so the same inputs give
byte-identical tars. 16-bit PNGs (depth, NOCS) are encoded by hoigen (``render.png``), not by WebDataset's 8-bit
image path. A shard is written under a temporary name, flushed to disk and renamed when complete; a per-shard
record (``<shard>.json``) is written after it and marks the shard done.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

SCHEMA_VERSION = "hoigen-shards/7"  # 2: object.mesh (mesh store), NOCS-oriented folder objects; 3: hand v2 default
# 4: contact grasps v2 (grasp types, synergy closing; metrics add finger overlap, force closure, link contacts)
# 5: contact grasps squeeze (2 mm pad press), force-closure gate 0.05 with a 0.01 fallback (metrics.gate_relaxed)
# 6: PNG rows SUB-filtered; contact grasps: super-brick distance bounds (other slide steps, so other grasps for a
#    seed), the relaxed gate after 2 attempts (grasp.fallback_after)
# 7: contact grasps press 3 mm (grasp.press_mm, was 2)
SHARD_PATTERN = "hoigen-%06d.tar"
FIXED_MTIME = 1_700_000_000  # 2023-11-14: any constant makes tars reproducible
IMAGE_MEMBERS = ("rgb", "depth", "mask", "normal", "nocs", "skeleton", "hoimask", "tracking")
PARTIAL_SUFFIX = ".partial"


class ShardWriteError(OSError):
    """A shard could not be written (disk full, permissions...); nothing was left under its final name."""


def sample_key(index: int) -> str:
    return f"s{index:08d}"


def dumps_json(value) -> bytes:
    """Deterministic JSON bytes (sorted keys, no NaN)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def sequence_members(seq, meta: dict) -> dict[str, bytes]:
    """Tar members (suffix -> bytes) of one rendered sequence (``render.renderer.SequenceRender``)."""
    from hoigen.render.png import encode_png

    members = {"meta.json": dumps_json(meta)}
    for t, frame in enumerate(seq.frames):
        for name in IMAGE_MEMBERS:
            members[f"f{t:03d}.{name}.png"] = encode_png(getattr(frame, name))
    members["points.npy"] = npy_bytes(seq.points.astype(np.float32))
    members["points_label.npy"] = npy_bytes(seq.points_label.astype(np.uint8))
    return members


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Run ``write(fileobj)`` on ``path.partial``, fsync, rename to ``path``; on error remove the partial file."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(partial, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        raise ShardWriteError(
            exc.errno or errno.EIO,
            f"could not write {path}: {reason}; free space or fix permissions, then rerun "
            "the same command (finished shards are kept)",
        ) from exc


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> dict:
    """Write ``samples`` ([(key, {suffix: bytes})], in order) as one tar at ``path`` atomically.

    Returns ``{"bytes": size, "sha256": hex digest}`` of the final file.
    """
    import tarfile

    for key, _ in samples:
        if "." in key:
            raise ValueError(
                f"sample keys must not contain dots (WebDataset splits on the first one): {key!r}"
            )

    def write(fh):
        # A WebDataset shard is a plain tar; writing it with tarfile keeps every header field fixed (and keeps
        # torch, which webdataset imports, out of the worker processes).
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                for suffix in sorted(members):
                    data = members[suffix]
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    info.mtime = FIXED_MTIME
                    info.mode = 0o444
                    info.uid = info.gid = 0
                    info.uname = info.gname = "hoigen"
                    tar.addfile(info, io.BytesIO(data))

    _atomic_write(path, write)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def write_json_atomic(path: Path, value) -> None:
    data = json.dumps(value, sort_keys=True, indent=1).encode()
    _atomic_write(path, lambda fh: fh.write(data))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
