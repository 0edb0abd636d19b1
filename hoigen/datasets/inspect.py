"""Statistics of a hoigen dataset for ``hoigen inspect OUT``, from the ``meta.json`` members only.

No image is decoded and no sample is assembled: local shards are opened with :mod:`tarfile` in random-access mode,
which reads the member headers and skips over the image data, and only ``*.meta.json`` members are read. Remote
shards (``pipe:``, ``https://``...) are streamed once. The manifest adds the requested sample count, the skipped
samples and the expected shard sizes.

``dataset_statistics(source)`` returns a JSON-serialisable dict; ``format_statistics(stats)`` renders it as text.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from hoigen.datasets.reader import ShardFormatError, _is_remote, read_manifest, resolve_shards

META_SUFFIX = ".meta.json"
# grasp metrics listed first (the others follow alphabetically)
KEY_METRICS = ("num_fingers_in_contact", "max_penetration_mm", "intersection_volume_cm3", "thumb_opposition")


def _summary(values: list[float]) -> dict | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def _iter_members(url: str) -> Iterator[tuple[str, bytes | None]]:
    """(member name, meta.json bytes or None) for every regular member of one shard."""
    try:
        if _is_remote(url):
            from webdataset.gopen import gopen

            with gopen(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for info in tar:
                    if info.isreg():
                        data = tar.extractfile(info).read() if info.name.endswith(META_SUFFIX) else None
                        yield info.name, data
        else:
            with tarfile.open(url, mode="r:*") as tar:
                for info in tar:
                    if info.isreg():
                        data = tar.extractfile(info).read() if info.name.endswith(META_SUFFIX) else None
                        yield info.name, data
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardFormatError(f"cannot read shard {url}: {exc}") from exc


def _manifest_of(source) -> tuple[Path | None, dict | None]:
    if isinstance(source, str | Path) and not _is_remote(str(source)):
        path = Path(source)
        if path.is_dir():
            return path, read_manifest(path)
        if path.is_file() and path.name.endswith(".json"):
            return path.parent, read_manifest(path.parent)
    return None, None


class _Accumulator:
    def __init__(self):
        self.samples = 0
        self.frames = 0
        self.keys_with_meta: set[str] = set()
        self.keys_seen: set[str] = set()
        self.frames_per_sample: Counter = Counter()
        self.image_size: Counter = Counter()
        self.categories: Counter = Counter()
        self.category_frames: Counter = Counter()
        self.class_ids: dict[str, set] = {}
        self.objects: set[str] = set()
        self.hand_models: Counter = Counter()
        self.grasp_methods: Counter = Counter()
        self.appearance: Counter = Counter()
        self.depth_scale: Counter = Counter()
        self.metrics: dict[str, list[float]] = {}
        self.finger_contacts: Counter = Counter()
        self.per_frame: dict[str, list[float]] = {
            k: []
            for k in (
                "visib_fract_obj",
                "visib_fract_hand",
                "coverage_obj",
                "coverage_hand",
                "object_distance_m",
            )
        }
        self.depth_lo = math.inf
        self.depth_hi = -math.inf
        self.bad_meta: list[str] = []

    def add(self, key: str, data: bytes, url: str) -> None:
        try:
            meta = json.loads(data)
            frames = meta["frames"]
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_meta.append(f"{key} in {url}: {exc}")
            return
        self.samples += 1
        self.keys_with_meta.add(key)
        self.frames += len(frames)
        self.frames_per_sample[len(frames)] += 1
        camera = meta.get("camera", {})
        width, height = camera.get("width"), camera.get("height")
        self.image_size[f"{width}x{height}"] += 1
        obj = meta.get("object", {})
        category = str(obj.get("category", "?"))
        self.categories[category] += 1
        self.category_frames[category] += len(frames)
        self.class_ids.setdefault(category, set()).add(obj.get("class_id"))
        self.objects.add(str(obj.get("id", obj.get("source", "?"))))
        self.hand_models[str(meta.get("hand", {}).get("model", "?"))] += 1
        grasp = meta.get("grasp", {})
        self.grasp_methods[str(grasp.get("method", "?"))] += 1
        self.appearance[str(meta.get("appearance", {}).get("model", "?"))] += 1
        self.depth_scale[str(meta.get("depth_scale"))] += 1
        for name, value in (grasp.get("metrics") or {}).items():
            if isinstance(value, bool | int | float):
                self.metrics.setdefault(name, []).append(float(value))
            elif name == "fingers_in_contact" and isinstance(value, list):
                self.finger_contacts.update(str(v) for v in value)
        pixels = (width * height) if isinstance(width, int) and isinstance(height, int) else None
        half_diagonal = float(obj.get("scale", 0.0)) / 2
        for labels in frames:
            for part in ("obj", "hand"):
                fract = labels.get(f"visib_fract_{part}")
                if fract is not None:
                    self.per_frame[f"visib_fract_{part}"].append(fract)
                count = labels.get(f"px_count_visib_{part}")
                if count is not None and pixels:
                    self.per_frame[f"coverage_{part}"].append(count / pixels)
            pose = labels.get("T_cam_obj")
            if pose is not None:
                z = float(pose[2][3])
                self.per_frame["object_distance_m"].append(z)
                self.depth_lo = min(self.depth_lo, z - half_diagonal)
                self.depth_hi = max(self.depth_hi, z + half_diagonal)
            for joint in labels.get("joints3d") or []:
                self.depth_lo = min(self.depth_lo, float(joint[2]))
                self.depth_hi = max(self.depth_hi, float(joint[2]))


def dataset_statistics(source) -> dict:
    """Statistics of the dataset at ``source`` (an output folder, shard paths or URLs; see ``reader``).

    Returns a JSON-serialisable dict: ``shards``, ``samples``, ``frames``, ``image_size``, ``categories``
    (``{name: {class_ids, samples, frames}}``), ``objects``, ``hand_models``, ``grasp_methods``, ``appearance``,
    ``grasp_metrics`` (``{name: {mean, std, min, max, n}}``), ``finger_contact_rate``, per-frame summaries
    ``visib_fract_obj`` / ``visib_fract_hand`` / ``coverage_obj`` / ``coverage_hand`` (visible pixels / image
    pixels) / ``object_distance_m``, ``depth_range_m``, ``skipped`` (from the manifest), ``bytes``,
    ``manifest`` and ``warnings``.

    Raises:
        FileNotFoundError: no dataset there (see ``reader.resolve_shards``).
        ShardFormatError: a shard is not a readable tar.
    """
    t0 = time.perf_counter()
    folder, manifest = _manifest_of(source)
    urls = resolve_shards(source)
    acc = _Accumulator()
    warnings: list[str] = []
    total_bytes: int | None = 0
    for url in urls:
        if _is_remote(url):
            total_bytes = None
        elif total_bytes is not None:
            total_bytes += os.path.getsize(url)
        for name, data in _iter_members(url):
            key = name.split("/")[-1].split(".", 1)[0]
            acc.keys_seen.add(key)
            if data is not None:
                acc.add(key, data, url)
    orphans = sorted(acc.keys_seen - acc.keys_with_meta)
    if orphans:
        warnings.append(
            f"{len(orphans)} sample(s) have members but no readable meta.json: {', '.join(orphans[:5])}"
        )
    warnings.extend(f"unreadable meta.json: {m}" for m in acc.bad_meta[:5])
    manifest_info = None
    skipped: list = []
    if manifest is not None:
        skipped = list(manifest.get("skipped") or [])
        manifest_info = {
            "path": str(folder / "manifest.json"),
            "schema": manifest.get("schema"),
            "hoigen_version": manifest.get("hoigen_version"),
            "seed": manifest.get("seed"),
            "n": manifest.get("n"),
            "samples": manifest.get("samples"),
            "complete": manifest.get("complete"),
        }
        if manifest.get("samples") is not None and manifest["samples"] != acc.samples:
            warnings.append(
                f"the manifest lists {manifest['samples']} samples, the shards hold {acc.samples}"
            )
        for entry in manifest.get("shards") or []:
            path = folder / "shards" / entry.get("name", "")
            if path.is_file() and entry.get("bytes") is not None and path.stat().st_size != entry["bytes"]:
                warnings.append(
                    f"{path.name} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
                )
        if manifest.get("complete") is False:
            warnings.append("the run is incomplete (manifest 'complete': false)")
    metrics = {}
    for name in [*(m for m in KEY_METRICS if m in acc.metrics), *sorted(set(acc.metrics) - set(KEY_METRICS))]:
        metrics[name] = _summary(acc.metrics[name])
    return {
        "source": str(source) if isinstance(source, str | Path) else [str(s) for s in source],
        "shards": len(urls),
        "samples": acc.samples,
        "frames": acc.frames,
        "frames_per_sample": {str(k): v for k, v in sorted(acc.frames_per_sample.items())},
        "image_size": dict(acc.image_size.most_common()),
        "categories": {
            name: {
                "class_ids": sorted(acc.class_ids[name], key=str),
                "samples": count,
                "frames": acc.category_frames[name],
            }
            for name, count in sorted(acc.categories.items())
        },
        "objects": len(acc.objects),
        "hand_models": dict(acc.hand_models.most_common()),
        "grasp_methods": dict(acc.grasp_methods.most_common()),
        "appearance": dict(acc.appearance.most_common()),
        "depth_scale": dict(acc.depth_scale.most_common()),
        "grasp_metrics": metrics,
        "finger_contact_rate": {
            finger: count / acc.samples for finger, count in sorted(acc.finger_contacts.items())
        }
        if acc.samples
        else {},
        **{name: _summary(values) for name, values in acc.per_frame.items()},
        "depth_range_m": {"min": acc.depth_lo, "max": acc.depth_hi} if acc.depth_lo <= acc.depth_hi else None,
        "skipped": skipped,
        "bytes": total_bytes,
        "manifest": manifest_info,
        "warnings": warnings,
        "seconds": time.perf_counter() - t0,
    }


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown (remote shards)"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} ({v})" for k, v in counter.items()) or "-"


def _mean_std(summary: dict | None, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
    if summary is None:
        return "-"
    mean, std = summary["mean"] * scale, summary["std"] * scale
    lo, hi = summary["min"] * scale, summary["max"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}  [{lo:.{digits}f} .. {hi:.{digits}f}]"


def format_statistics(stats: dict) -> str:
    """Human-readable text of :func:`dataset_statistics`'s dict (for ``hoigen inspect``)."""
    lines = []

    def row(label: str, value) -> None:
        lines.append(f"{label:<26}{value}")

    row(
        "dataset", stats["source"] if isinstance(stats["source"], str) else f"{len(stats['source'])} shard(s)"
    )
    manifest = stats.get("manifest")
    if manifest:
        state = "complete" if manifest.get("complete") else "INCOMPLETE"
        row(
            "manifest",
            f"{manifest.get('schema')}, hoigen {manifest.get('hoigen_version')}, seed {manifest.get('seed')}, "
            f"n={manifest.get('n')} requested, {state}",
        )
    else:
        row("manifest", "none")
    row("shards", stats["shards"])
    row("samples", stats["samples"])
    per_sample = ", ".join(f"{k}" for k in stats["frames_per_sample"]) or "-"
    row("frames", f"{stats['frames']}  ({per_sample} per sample)")
    row("image size", _counts(stats["image_size"]))
    row("total size", _human_bytes(stats["bytes"]))
    lines.append("")
    lines.append("categories")
    if not stats["categories"]:
        lines.append("  -")
    for name, info in stats["categories"].items():
        ids = ",".join(str(i) for i in info["class_ids"])
        lines.append(f"  {name:<16} class {ids:<6} {info['samples']:>7} samples {info['frames']:>8} frames")
    row("distinct objects", stats["objects"])
    row("hand models", _counts(stats["hand_models"]))
    row("grasp methods", _counts(stats["grasp_methods"]))
    row("appearance", _counts(stats["appearance"]))
    row("depth scale (mm/unit)", _counts(stats["depth_scale"]))
    lines.append("")
    lines.append("grasp metrics (per sample: mean ± std [min .. max])")
    if not stats["grasp_metrics"]:
        lines.append("  -")
    for name, summary in stats["grasp_metrics"].items():
        lines.append(f"  {name:<24}{_mean_std(summary)}")
    if stats["finger_contact_rate"]:
        rates = ", ".join(f"{k} {v:.0%}" for k, v in stats["finger_contact_rate"].items())
        lines.append(f"  {'finger contact rate':<24}{rates}")
    lines.append("")
    lines.append("per frame (mean ± std [min .. max])")
    lines.append(f"  {'visible fraction object':<24}{_mean_std(stats['visib_fract_obj'])}")
    lines.append(f"  {'visible fraction hand':<24}{_mean_std(stats['visib_fract_hand'])}")
    lines.append(f"  {'object pixel coverage':<24}{_mean_std(stats['coverage_obj'], 100, 2, ' %')}")
    lines.append(f"  {'hand pixel coverage':<24}{_mean_std(stats['coverage_hand'], 100, 2, ' %')}")
    lines.append(f"  {'object distance':<24}{_mean_std(stats['object_distance_m'], unit=' m')}")
    depth = stats.get("depth_range_m")
    if depth:
        lines.append(
            f"  {'depth range':<24}{depth['min']:.3f} .. {depth['max']:.3f} m "
            "(object centre ± half diagonal, hand joints)"
        )
    lines.append("")
    skipped = stats["skipped"]
    row("skipped samples", len(skipped))
    for entry in skipped[:10]:
        lines.append(f"  #{entry.get('index')} {entry.get('object', '')}: {entry.get('reason', '')}")
    if len(skipped) > 10:
        lines.append(f"  ... and {len(skipped) - 10} more (see manifest.json)")
    for warning in stats["warnings"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
