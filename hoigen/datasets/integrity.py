"""Shard integrity: every shard checked against the manifest (size, sha256, samples, frames per sample).

Used by the reader (on by default, ``verify=False`` skips it), so by every export that reads through it, and by
``hoigen verify OUT``. A failure is a :class:`ShardIntegrityError` that names the shard and, where it can be told,
the member: a truncated shard names the first member that is missing or cut; a shard whose bytes changed names the
member whose CRC-32 differs from the per-shard record (``shards/<shard>.json``, ``member_crc32``), or, without a
record, the first member that does not decode.

Where the expected values come from, for a local shard ``.../shards/hoigen-000003.tar``: the entry of that name in
``.../manifest.json`` (the output folder's manifest), else its record ``.../shards/hoigen-000003.json``. A shard
with neither (a copied tar, a remote URL) cannot be verified and is read as it is (logged once).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_FRAME_RGB = re.compile(r"^(s\d+)\.f(\d+)\.rgb\.png$")
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) verified in this process


class ShardIntegrityError(ValueError):
    """A shard does not match its manifest entry (truncated, bytes changed, wrong sample or frame count)."""


@dataclass(frozen=True)
class Expected:
    """What a shard should be. Attributes: bytes, sha256, samples; frames: frames per sample (None: unknown);
    where: the manifest or record it came from; record: the shard's record path (for per-member checksums)."""

    bytes: int
    sha256: str
    samples: int | None
    frames: int | None
    where: str
    record: Path | None


def _load_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def expected_for(shard: str | Path, manifests: dict | None = None) -> Expected | None:
    """The expected size / hash / counts of local shard ``shard`` (module docstring), or None when unknown."""
    path = Path(shard)
    manifests = {} if manifests is None else manifests
    record_path = path.with_suffix(".json")
    for folder in (path.parent.parent, path.parent):
        manifest_path = folder / MANIFEST_NAME
        key = str(manifest_path)
        if key not in manifests:
            manifests[key] = _load_json(manifest_path) if manifest_path.is_file() else None
        manifest = manifests[key]
        if not manifest:
            continue
        for entry in manifest.get("shards") or []:
            if entry.get("name") == path.name and "sha256" in entry:
                return Expected(
                    int(entry["bytes"]),
                    str(entry["sha256"]),
                    entry.get("samples"),
                    manifest.get("frames_per_sample"),
                    str(manifest_path),
                    record_path if record_path.is_file() else None,
                )
    record = _load_json(record_path) if record_path.is_file() else None
    if record and "sha256" in record and "bytes" in record:
        frames = record.get("frames")
        samples = record.get("samples")
        per_sample = frames // samples if isinstance(frames, int) and samples else None
        return Expected(
            int(record["bytes"]), str(record["sha256"]), samples, per_sample, str(record_path), record_path
        )
    return None


def verify_shard(shard: str | Path, expected: Expected) -> None:
    """Check one local shard against ``expected``.

    Raises:
        ShardIntegrityError: naming the shard, what differs and (where it can be told) the member.
        FileNotFoundError: the shard does not exist.
    """
    path = Path(shard)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if size != expected.bytes or digest.hexdigest() != expected.sha256:
        raise ShardIntegrityError(_locate_damage(path, size, expected))
    keys, frames = _listing(path)
    if expected.samples is not None and len(keys) != expected.samples:
        raise ShardIntegrityError(
            f"shard {path} holds {len(keys)} samples but {expected.where} lists {expected.samples}; the manifest "
            "does not describe this shard (mixed runs?); remake the dataset or run `hoigen verify`"
        )
    if expected.frames is not None:
        wrong = {key: n for key, n in frames.items() if n != expected.frames}
        if wrong:
            key, n = sorted(wrong.items())[0]
            raise ShardIntegrityError(
                f"shard {path}: sample {key} has {n} frames but {expected.where} says {expected.frames} per "
                f"sample ({len(wrong)} sample(s) differ); the manifest does not describe this shard (mixed runs?)"
            )


def verify_once(shard: str, expected: Expected) -> None:
    """:func:`verify_shard`, skipped when this process already verified the same file (path, size, mtime)."""
    stat = Path(shard).stat()
    key = (str(shard), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    verify_shard(shard, expected)
    _VERIFIED.add(key)


def _listing(path: Path) -> tuple[list[str], dict[str, int]]:
    """Sample keys of a (sound) shard and the number of frames (``fNNN.rgb.png`` members) of each."""
    keys: dict[str, int] = {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            key = info.name.split(".", 1)[0]
            keys.setdefault(key, 0)
            if _FRAME_RGB.match(info.name):
                keys[key] += 1
    return sorted(keys), keys


def _locate_damage(path: Path, size: int, expected: Expected) -> str:
    """The message for a shard whose size or hash differs: which member is cut, missing or changed."""
    head = f"shard {path} does not match {expected.where}"
    crcs = {}
    if expected.record is not None:
        record = _load_json(expected.record) or {}
        crcs = record.get("member_crc32") or {}
    seen: list[str] = []
    problem = None
    try:
        with open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            for info in tar:
                try:
                    data = tar.extractfile(info).read() if info.isfile() else b""
                except (tarfile.TarError, OSError, EOFError) as exc:
                    problem = f"member {info.name} is cut short ({exc})"
                    break
                if info.isfile() and len(data) != info.size:
                    problem = f"member {info.name} is cut short ({len(data)} of {info.size} bytes)"
                    break
                seen.append(info.name)
                if info.name in crcs and f"{zlib.crc32(data):08x}" != crcs[info.name]:
                    problem = f"member {info.name} has changed (its CRC-32 differs from {expected.record})"
                    break
                if not crcs and not _decodes(info.name, data):
                    problem = f"member {info.name} does not decode"
                    break
    except (tarfile.TarError, OSError, EOFError) as exc:
        after = f" after member {seen[-1]}" if seen else ""
        problem = f"the tar is unreadable{after} ({type(exc).__name__}: {exc})"
    if problem is None and crcs:
        missing = [name for name in sorted(crcs) if name not in set(seen)]
        if missing:
            problem = f"{len(missing)} member(s) are missing, from {missing[0]} on"
    if problem is None and size < expected.bytes:
        problem = "it ends early" + (f", after member {seen[-1]}" if seen else "")
    if problem is None:
        problem = "its bytes changed" + ("" if crcs else " (no per-member checksums to tell which member)")
    truncated = (
        f"; the file has {size} of {expected.bytes} bytes (truncated)" if size < expected.bytes else ""
    )
    return (
        f"{head}: {problem}{truncated}. The shard is damaged: remake it (rerun the same `hoigen synth` command; it "
        "redoes damaged shards) or restore it from a good copy; pass verify=False / --no-verify to read it anyway"
    )


def _decodes(name: str, data: bytes) -> bool:
    suffix = name.rsplit(".", 1)[-1]
    try:
        if suffix == "png":
            from hoigen.render.png import decode_png

            decode_png(data)
        elif suffix == "npy":
            import numpy as np

            np.load(io.BytesIO(data), allow_pickle=False)
        elif suffix == "json":
            json.loads(data)
    except Exception:  # any decoder failure means the member is damaged
        return False
    return True


def shard_expectations(urls: list[str]) -> dict[str, Expected]:
    """Expected values of every local shard in ``urls`` that has a manifest entry or record."""
    manifests: dict = {}
    found, unknown = {}, []
    for url in urls:
        if "://" in url or url.startswith("pipe:") or not Path(url).is_file():
            unknown.append(url)
            continue
        expected = expected_for(url, manifests)
        if expected is None:
            unknown.append(url)
        else:
            found[url] = expected
    if unknown:
        logger.info(
            "%d shard(s) have no manifest entry or record to verify against (e.g. %s); reading them unverified",
            len(unknown),
            unknown[0],
        )
    return found


def verifying_splitter(src, splitter=None, expectations: dict | None = None):
    """A WebDataset worker splitter that verifies each shard a worker is about to read (then yields it)."""
    items = splitter(src) if splitter is not None else src
    for item in items:
        url = item.get("url") if isinstance(item, dict) else None
        if expectations and url in expectations:
            verify_once(url, expectations[url])
        yield item


# ---------------------------------------------------------------------------------------------------------------
# whole datasets


def verify_dataset(folder: str | Path, decode: bool = False) -> dict:
    """Check a whole output folder: every shard the manifest lists (size, sha256, samples, frames), shards on
    disk the manifest does not list, the manifest's completeness, and stored files it lists with a sha256.

    Args:
        folder: an output folder of ``hoigen synth``.
        decode: also decode every PNG / .npy / .json member.

    Returns:
        ``{"shards": n checked, "samples": total, "errors": [message...], "warnings": [message...]}``.

    Raises:
        FileNotFoundError: no ``manifest.json`` in ``folder``.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {MANIFEST_NAME}: it is not a hoigen dataset, or its run never finished a shard"
        )
    manifest = _load_json(manifest_path)
    if manifest is None:
        raise ShardIntegrityError(f"{manifest_path} is not valid JSON; the dataset's manifest is damaged")
    errors, warnings = [], []
    entries = manifest.get("shards") or []
    listed = set()
    samples = 0
    for entry in entries:
        name = entry.get("name", "?")
        listed.add(name)
        path = folder / "shards" / name
        if not path.is_file():
            errors.append(f"shard {path} is listed in {manifest_path} but missing")
            continue
        expected = expected_for(path)
        try:
            if expected is None:
                raise ShardIntegrityError(f"shard {path}: its manifest entry has no sha256")
            verify_shard(path, expected)
            if decode:
                _decode_all(path)
            samples += int(entry.get("samples", 0))
        except (ShardIntegrityError, tarfile.TarError, OSError) as exc:
            errors.append(str(exc))
    if isinstance(manifest.get("samples"), int) and not errors and samples != manifest["samples"]:
        errors.append(f"{manifest_path} says {manifest['samples']} samples but its shards list {samples}")
    for path in sorted((folder / "shards").glob("*.tar")):
        if path.name not in listed:
            warnings.append(
                f"shard {path} is not listed in {manifest_path} (a run still writing, or a stray file)"
            )
    if manifest.get("complete") is False:
        warnings.append(f"{manifest_path}: the run is incomplete ({len(entries)} shards listed)")
    for item in _stored_files(manifest):
        path = folder / item["file"]
        if not path.is_file():
            errors.append(f"{path} is listed in {manifest_path} but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != item["sha256"]:
            errors.append(f"{path} does not match its sha256 in {manifest_path}; the file is damaged")
    return {"shards": len(entries), "samples": samples, "errors": errors, "warnings": warnings}


def _stored_files(manifest: dict) -> list[dict]:
    """Files other than shards that the manifest lists with a sha256 (e.g. the canonical meshes)."""
    found = []

    def walk(value, key=None):
        if isinstance(value, dict):
            name = value.get("file") or value.get("path") or value.get("name")
            if isinstance(name, str) and "/" in name and isinstance(value.get("sha256"), str):
                found.append({"file": name, "sha256": value["sha256"]})
                return
            for k, v in value.items():
                if k in ("shards", "config", "packages", "skipped"):
                    continue
                if isinstance(v, dict) and isinstance(v.get("sha256"), str) and "/" in str(k):
                    found.append({"file": str(k), "sha256": v["sha256"]})  # {"objects/<digest>.ply": {...}}
                else:
                    walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)

    walk(manifest)
    return found


def _decode_all(path: Path) -> None:
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if info.isfile() and not _decodes(info.name, tar.extractfile(info).read()):
                raise ShardIntegrityError(f"shard {path}: member {info.name} does not decode")


def decoded_png(data: bytes, shard: str, member: str):
    """Decode the PNG member ``member`` of ``shard`` (an export checks every image it copies as bytes).

    Returns the image array; a PNG that does not decode is a :class:`ShardIntegrityError` naming shard and member.
    """
    from hoigen.render.png import decode_png

    try:
        return decode_png(bytes(data))
    except Exception as exc:  # whatever the decoder raises, the member is damaged
        raise ShardIntegrityError(
            f"shard {shard}: member {member} is not a valid PNG ({type(exc).__name__}: {exc}); the shard is "
            "damaged: remake it or restore it from a good copy"
        ) from exc
