"""Export hoigen shards (SPEC §3) as a COCO instance-segmentation + hand-keypoint dataset.

Layout written under ``out``::

    images/<key>_fNNN.png          # one image per frame (the shard's PNG bytes, copied unchanged)
    annotations/instances.json     # COCO: info, licenses, images, categories, annotations

**Images** — ``id`` (from 1, in shard order), ``file_name``, ``width``, ``height`` and, as extras, ``hoigen_key``
(``s00000012/f003``), ``sample`` and ``frame``. ``image="rgb"`` exports the renders; any other 3-channel frame
image of the shards (e.g. ``"photo"``, when an appearance model ran) can be chosen instead.

**Categories** — one per object category present, plus the hand:

- a NOCS category (``class_id`` > 0 in the sample's meta) keeps its NOCS class id: 1 bottle, 2 bowl, 3 camera,
  4 can, 5 laptop, 6 mug;
- the hand is always :data:`HAND_CATEGORY_ID` (7), name ``hand``, with ``keypoints`` (the 21 OpenPose names of
  :data:`hoigen.hands.model.OPENPOSE_NAMES`) and ``skeleton`` (1-based joint pairs of
  :data:`hoigen.render.conditions.SKELETON_EDGES`);
- other object categories (``class_id`` 0, e.g. YCB objects outside the NOCS classes) get ids from
  :data:`FIRST_EXTRA_CATEGORY_ID` (8) on, in alphabetical order of their names; such a name that clashes with a
  NOCS name or ``hand`` gets the suffix ``_other``.

Each category carries ``supercategory`` (``object`` or ``hand``) and, for objects, ``nocs_class_id``.

**Annotations** — one per instance with at least one visible pixel (instances hidden entirely are skipped):
``segmentation`` (compressed COCO RLE from ``pycocotools.mask.encode``, ``counts`` as an ASCII string),
``area`` (visible pixels), ``bbox`` (the visible box ``[x, y, w, h]`` in COCO's continuous pixel coordinates, equal
to ``pycocotools.mask.toBbox`` of the segmentation and to hoigen's ``bbox_visib_*``), ``bbox_amodal`` (hoigen's
amodal ``bbox_obj`` / ``bbox_hand``, when the shards have it), ``iscrowd`` 0, ``category_id``, ``image_id``, ``id``
(from 1). Object annotations add ``object_id`` (hoigen's object id) and ``num_keypoints`` 0 (``COCOeval`` with
``iouType="keypoints"`` reads it on every annotation). Hand annotations add ``keypoints`` ``[x, y, v] * 21`` and
``num_keypoints`` (joints with v > 0); evaluate them with :data:`HAND_OKS_SIGMAS` (recipe there):

- ``x, y`` are hoigen's ``joints2d`` unchanged — pixel centres at integer coordinates, which is COCO's keypoint
  convention too — also for joints with ``v = 0`` (COCO tools ignore those coordinates);
- ``v = 0`` when the joint projects outside the image (its nearest pixel is not in the image) or lies behind
  the camera;
- ``v = 2`` when its pixel is a hand pixel of the mask and the joint lies at most
  :data:`KEYPOINT_DEPTH_TOLERANCE_M` behind the hand surface seen there (joints sit inside the hand, up to about
  half a finger / palm thickness below the skin);
- ``v = 1`` otherwise: inside the image but occluded (by the object, or by another part of the hand).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from hoigen.exports.common import frame_image
from hoigen.objects.categories import NOCS_CLASSES, NOCS_SYNSETS

logger = logging.getLogger(__name__)

HAND_CATEGORY_ID = 7
"""COCO category id of the hand (right after the six NOCS classes)."""
FIRST_EXTRA_CATEGORY_ID = 8
"""First COCO category id of object categories that are not NOCS classes (``class_id`` 0)."""
KEYPOINT_DEPTH_TOLERANCE_M = 0.03
"""A hand joint counts as visible (v = 2) when it lies at most this far behind the hand surface at its pixel."""
HAND_OKS_SIGMAS = np.array(
    [0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024]
    + [0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031]
)
"""OKS sigmas of the 21 hand keypoints (OpenPose order), COCO-WholeBody's hand values (Jin et al., ECCV 2020): pass
them to ``COCOeval`` (its default 17 are for people)::

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from hoigen.exports.coco import HAND_CATEGORY_ID, HAND_OKS_SIGMAS

    gt = COCO("out/annotations/instances.json")
    dt = gt.loadRes("detections.json")  # [{image_id, category_id: 7, keypoints: [x, y, v] * 21, score}]
    E = COCOeval(gt, dt, iouType="keypoints")
    E.params.kpt_oks_sigmas = HAND_OKS_SIGMAS
    E.params.catIds = [HAND_CATEGORY_ID]
    E.evaluate(); E.accumulate(); E.summarize()
"""
ANNOTATION_FILE = Path("annotations") / "instances.json"
IMAGE_DIR = "images"
# instance kind (meta["instances"] values) -> suffix of hoigen's per-instance labels
_LABEL_SUFFIX = {"object": "obj", "hand": "hand"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# small helpers (also used by the tests)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk of PNG bytes (no decoding)."""
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image (bad signature or no IHDR chunk)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO box ``[x, y, w, h]`` (floats) of a non-empty boolean mask: pixel ``(i, j)`` covers [j, j+1] x [i, i+1]."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a boolean (H, W) mask, ``counts`` as an ASCII string (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def keypoint_visibility(
    joints2d: np.ndarray,
    joints3d: np.ndarray,
    mask: np.ndarray,
    depth_m: np.ndarray,
    hand_id: int,
    tolerance: float = KEYPOINT_DEPTH_TOLERANCE_M,
) -> np.ndarray:
    """(21,) COCO visibility flags (0 outside the image, 1 occluded, 2 visible) — see the module docstring."""
    joints2d = np.asarray(joints2d, dtype=np.float64)
    joints3d = np.asarray(joints3d, dtype=np.float64)
    height, width = mask.shape
    flags = np.zeros(len(joints2d), dtype=np.int64)
    finite = np.isfinite(joints2d).all(axis=1) & np.isfinite(joints3d).all(axis=1)
    cols = np.floor(np.where(finite, joints2d[:, 0], -1.0) + 0.5).astype(np.int64)
    rows = np.floor(np.where(finite, joints2d[:, 1], -1.0) + 0.5).astype(np.int64)
    inside = finite & (joints3d[:, 2] > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    flags[inside] = 1
    idx = np.flatnonzero(inside)
    on_hand = mask[rows[idx], cols[idx]] == hand_id
    surface = depth_m[rows[idx], cols[idx]]
    close = (surface <= 0) | (joints3d[idx, 2] - surface <= tolerance)
    flags[idx[on_hand & close]] = 2
    return flags


def hand_category() -> dict:
    """The COCO category of the hand, with its 21 keypoint names and 1-based skeleton."""
    from hoigen.hands.model import OPENPOSE_NAMES
    from hoigen.render.conditions import SKELETON_EDGES

    return {
        "id": HAND_CATEGORY_ID,
        "name": "hand",
        "supercategory": "hand",
        "keypoints": list(OPENPOSE_NAMES),
        "skeleton": [[int(a) + 1, int(b) + 1] for a, b in SKELETON_EDGES],
    }


def object_categories(present: set[tuple[str, int]]) -> tuple[list[dict], dict[tuple[str, int], int]]:
    """COCO categories of the object categories ``present`` (``(category name, NOCS class id)`` pairs).

    Returns the category records (sorted by id) and the map ``(name, class_id) -> category id``. NOCS classes keep
    their class id; the others get ids from :data:`FIRST_EXTRA_CATEGORY_ID` in name order.
    """
    records, ids = [], {}
    for name, class_id in sorted(p for p in present if p[1] > 0):
        if class_id in {ids[k] for k in ids}:
            raise ValueError(f"NOCS class id {class_id} is used by two category names ({name!r} and another)")
        ids[(name, class_id)] = class_id
        record = {"id": class_id, "name": name, "supercategory": "object", "nocs_class_id": class_id}
        if NOCS_SYNSETS.get(name):
            record["synset"] = NOCS_SYNSETS[name]
        records.append(record)
    taken = {r["name"] for r in records} | set(NOCS_CLASSES) | {"hand"}
    next_id = FIRST_EXTRA_CATEGORY_ID
    for name, class_id in sorted(p for p in present if p[1] <= 0):
        label = f"{name}_other" if name in taken else name
        ids[(name, class_id)] = next_id
        records.append({"id": next_id, "name": label, "supercategory": "object", "nocs_class_id": 0})
        next_id += 1
    records.sort(key=lambda r: r["id"])
    return records, ids


def write_json(path: Path, value, indent: int | None = None) -> None:
    """Write JSON through a temporary file and a rename (no half-written file on a crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=indent, separators=(",", ": ") if indent else (",", ":"))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# export


def _prepare(out: Path, overwrite: bool) -> None:
    annotation = out / ANNOTATION_FILE
    images = out / IMAGE_DIR
    if annotation.exists() or (images.is_dir() and any(images.iterdir())):
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a COCO export ({ANNOTATION_FILE} or {IMAGE_DIR}/); choose a new output "
                "folder or pass overwrite=True to replace it"
            )
        shutil.rmtree(images, ignore_errors=True)
        annotation.unlink(missing_ok=True)
    images.mkdir(parents=True, exist_ok=True)


def export_coco(
    shards,
    out,
    image: str = "rgb",
    *,
    overwrite: bool = False,
    progress: bool = False,
    verify: bool = True,
) -> dict:
    """Write the frames of ``shards`` as a COCO dataset under ``out`` (layout in the module docstring).

    Args:
        shards: anything :func:`hoigen.datasets.reader.open_sequences` accepts (output folder, manifest, shard
            paths or URL pattern).
        out: output folder (created).
        image: the frame image to export (``rgb``, or e.g. ``photo``); it must be an RGB PNG of the mask's size.
        overwrite: replace an existing COCO export in ``out`` (its ``images/`` folder and annotation file);
            otherwise an existing one is a ``FileExistsError``.
        progress: show a progress bar (frames).
        verify: check every shard against its manifest first (``hoigen.datasets.integrity``); every copied image
            is decoded either way, so a damaged one is an error naming shard and member, never a broken file.

    Returns:
        a summary: ``images``, ``annotations``, ``skipped_instances`` (instances with no visible pixel),
        ``categories`` (id -> name), ``annotation_file`` and ``image_dir``.

    Raises:
        FileExistsError: ``out`` holds an export and ``overwrite`` is False.
        ValueError: a frame lacks ``image``, has an image of another size than its mask, or two samples share a
            key (shards of different runs with overlapping sample indices).
    """
    from tqdm import tqdm

    from hoigen.datasets.integrity import decoded_png
    from hoigen.datasets.reader import open_sequences
    from hoigen.render.png import decode_png

    out = Path(out)
    _prepare(out, overwrite)
    image_dir = out / IMAGE_DIR
    images: list[dict] = []
    annotations: list[dict] = []
    object_keys: list[tuple[str, int]] = []  # per object annotation, parallel to object_annotations
    object_annotations: list[dict] = []
    skipped = 0
    unknown_kinds: set[str] = set()
    seen_names: set[str] = set()
    bar = tqdm(unit="frame", desc="export coco", dynamic_ncols=True, disable=not progress)
    try:
        for sequence in open_sequences(shards, decode=False, verify=verify):
            meta, key = sequence["meta"], sequence["key"]
            depth_to_m = float(meta["depth_scale"]) / 1000.0
            obj_meta = meta["object"]
            category_key = (str(obj_meta["category"]), int(obj_meta.get("class_id", 0)))
            instances = {int(k): v for k, v in meta.get("instances", {"1": "object", "2": "hand"}).items()}
            for t, frame in enumerate(sequence["frames"]):
                data = frame_image(sequence, t, image)
                file_name = f"{key}_f{t:03d}.png"
                if file_name in seen_names:
                    raise ValueError(
                        f"two samples have the key {key} (shards of different runs?); export them separately"
                    )
                seen_names.add(file_name)
                mask = decode_png(frame["mask"])
                width, height = png_size(bytes(data))
                if (height, width) != mask.shape[:2]:
                    raise ValueError(
                        f"sample {key} frame {t}: the {image!r} image is {width}x{height} but its mask is "
                        f"{mask.shape[1]}x{mask.shape[0]}; annotations would not line up"
                    )
                decoded_png(data, sequence["url"], f"{key}.f{t:03d}.{image}.png")
                (image_dir / file_name).write_bytes(bytes(data))
                image_id = len(images) + 1
                images.append(
                    {
                        "id": image_id,
                        "file_name": file_name,
                        "width": int(width),
                        "height": int(height),
                        "hoigen_key": f"{key}/f{t:03d}",
                        "sample": key,
                        "frame": t,
                    }
                )
                labels = meta["frames"][t]
                depth_m = None
                for instance_id, kind in sorted(instances.items()):
                    if kind not in _LABEL_SUFFIX:
                        if kind not in unknown_kinds:
                            logger.warning("instance kind %r is not exported to COCO", kind)
                            unknown_kinds.add(kind)
                        continue
                    visible = mask == instance_id
                    area = int(visible.sum())
                    if area == 0:
                        skipped += 1
                        continue
                    suffix = _LABEL_SUFFIX[kind]
                    ann = {
                        "id": 0,  # numbered below, once every annotation is known
                        "image_id": image_id,
                        "category_id": HAND_CATEGORY_ID,
                        "segmentation": encode_rle(visible),
                        "area": area,
                        "bbox": mask_bbox(visible),
                        "iscrowd": 0,
                    }
                    amodal = labels.get(f"bbox_{suffix}")
                    if amodal is not None:
                        ann["bbox_amodal"] = [float(v) for v in amodal]
                    if kind == "hand":
                        if depth_m is None:
                            depth_m = decode_png(frame["depth"]).astype(np.float64) * depth_to_m
                        joints2d = np.asarray(labels["joints2d"], dtype=np.float64)
                        flags = keypoint_visibility(joints2d, labels["joints3d"], mask, depth_m, instance_id)
                        ann["keypoints"] = [
                            v for (x, y), f in zip(joints2d.tolist(), flags.tolist()) for v in (x, y, int(f))
                        ]
                        ann["num_keypoints"] = int((flags > 0).sum())
                    else:
                        ann["num_keypoints"] = 0  # COCOeval(iouType="keypoints") reads it on every annotation
                        ann["object_id"] = obj_meta.get("id")
                        object_keys.append(category_key)
                        object_annotations.append(ann)
                    annotations.append(ann)
                bar.update(1)
    finally:
        bar.close()

    categories, category_ids = object_categories(set(object_keys))
    for ann, category_key in zip(object_annotations, object_keys):
        ann["category_id"] = category_ids[category_key]
    for k, ann in enumerate(annotations, start=1):
        ann["id"] = k
    categories = sorted([*categories, hand_category()], key=lambda c: c["id"])

    from hoigen import __version__

    dataset = {
        "info": {
            "description": "hoigen synthetic hand-object interaction frames",
            "version": __version__,
            "image": image,
        },
        "licenses": [],
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }
    write_json(out / ANNOTATION_FILE, dataset)
    logger.info("COCO export: %d images, %d annotations in %s", len(images), len(annotations), out)
    return {
        "images": len(images),
        "annotations": len(annotations),
        "skipped_instances": skipped,
        "categories": {c["id"]: c["name"] for c in categories},
        "annotation_file": str(out / ANNOTATION_FILE),
        "image_dir": str(image_dir),
    }


__all__ = [
    "FIRST_EXTRA_CATEGORY_ID",
    "HAND_CATEGORY_ID",
    "HAND_OKS_SIGMAS",
    "KEYPOINT_DEPTH_TOLERANCE_M",
    "encode_rle",
    "export_coco",
    "hand_category",
    "keypoint_visibility",
    "mask_bbox",
    "object_categories",
    "png_size",
]
