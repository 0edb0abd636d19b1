"""``hoigen export nocs``: hoigen shards -> the NOCS CAMERA layout (plus SPD-style labels and normalised models).

Layout written under ``out`` (``<split>`` is ``train`` by default)::

    CAMERA/<split>/00000/0000_color.png      8-bit RGB image (a normal PNG: cv2.imread gives BGR, as readers expect)
    CAMERA/<split>/00000/0000_coord.png      8-bit NOCS map, NOCS encoding (below); 0 off the object
    CAMERA/<split>/00000/0000_depth.png      uint16 millimetres (Real style), or the CAMERA 3-channel encoding
    CAMERA/<split>/00000/0000_mask.png       8-bit, instance id in all three channels, 255 = background
    CAMERA/<split>/00000/0000_meta.txt       ``inst_id class_id synset model_id`` per instance (CAMERA style)
    CAMERA/<split>/00000/0000_label.pkl      SPD-style ground truth (below)
    CAMERA/<split>/intrinsics.json           the intrinsics of every exported image (after any crop / resize)
    CAMERA/<split>/sources.json              image -> shard sample key, frame index (provenance, not read by NOCS)
    CAMERA/<split>_list_all.txt              every exported image, ``<split>/%05d/%04d`` (SPD's ``*_list_all.txt``)
    CAMERA/<split>_list.txt                  the images SPD's data preparation keeps (below)
    camera_full_depths/<split>/00000/0000_composed.png   uint16 mm, only with ``camera_depth=True``
    obj_models/<split>/<synset>/<model_id>/model.obj     normalised model (below)
    obj_models/<split>/<synset>/<model_id>/bbox.txt      its bounding box: max corner, then min corner
    obj_models/camera_<split>.pkl            SPD: model id -> (1024, 3) model points (below)
    obj_models/mug_meta.pkl                  SPD: mug model id -> [shift (3,), scale] (below)

With ``val_fraction`` > 0 a second split (``val_split``, default ``val``) gets that fraction of the samples (whole
sequences, chosen by a hash of the sample key). ``obj_models/train`` and ``obj_models/val`` always hold all six
synset folders and ``CAMERA/{train,val}_list.txt`` always exist (possibly empty), as SPD's ``shape_data.py`` and
``PoseDataset`` expect.

**Intrinsics** — NOCS / SPD code hard-codes CAMERA's intrinsics (fx = fy = 577.5, cx = 319.5, cy = 239.5). The
export refuses (ValueError) data whose intrinsics after the crop / resize differ from those by more than
:data:`INTRINSICS_ATOL_PX`: synthesise with ``--camera nocs-camera``. ``allow_intrinsics=True`` exports anyway with
a warning (``intrinsics.json`` records the intrinsics, ``"camera_intrinsics": false``).

Images: every frame of every sample, in shard / sample / frame order, numbered consecutively, 10 per folder
(``CAMERA/<split>/%05d/%04d``), as NOCS's loader enumerates them. Frames are *skipped* (not written, and not
numbered) when the object is a class-0 object and ``class0="skip"``, or when no pixel of the object is visible
(after the crop); the summary counts them by reason and lists them.

Encodings (what NOCS / SPD readers do, and so what is written):

- coord: readers do ``cv2.imread(...)[:, :, :3][:, :, (2, 1, 0)] / 255``, then ``z = 1 - z``, then ``- 0.5``. The
  PNG's R, G, B channels therefore hold ``(x + 0.5) * 255``, ``(y + 0.5) * 255`` and ``(0.5 - z) * 255`` (rounded)
  of hoigen's NOCS ``x_canonical / scale``; pixels off the object are 0 (readers use the mask).
- mask: readers take channel 2 of the BGR image (= R); the object is instance **1** (its ``_meta.txt`` line is the
  first, as NOCS indexes the model scales by ``inst_id - 1``); everything else is 255. The hand is not an instance:
  it occludes the object, and its pixels are background (255) in the mask.
- depth: hoigen's ``value * depth_scale`` = mm, rounded to whole millimetres (0 = no surface). It is the depth of
  the whole picture, the hand included (real geometry, as CAMERA's depth is of the whole composite). With
  ``camera_depth=True`` ``_depth.png`` holds CAMERA's 3-channel encoding instead — ``G * 256 + R`` of the BGR file
  read by OpenCV (channels 1 and 2; cast them to uint16 before multiplying), B = 0, **32001** where there is no
  surface — and the uint16 mm depth goes to ``camera_full_depths/<split>/%05d/%04d_composed.png``, where
  CAMERA's composed depths live. Both decode to the same millimetres on surface pixels.
- ``_meta.txt``: one line, ``1 <class_id> <synset> <model_id>``. Class-0 (non-NOCS) objects, with
  ``class0="keep"``, get class 0 (a distractor, which NOCS and SPD readers ignore) and the placeholder synset
  :data:`DISTRACTOR_SYNSET`; their model is written too, because NOCS's loader reads ``bbox.txt`` for every line.
  Model ids are the hoigen object ids with whitespace replaced by ``_`` (readers split lines on spaces).

``_label.pkl`` (plain pickle, protocol 4, a dict of numpy arrays, SPD's keys): ``class_ids`` (N,) int32,
``bboxes`` (N, 4) int32 ``[y1, x1, y2, x2]`` of the exported mask with exclusive max, ``scales`` (N,) float32 =
the object's scale in metres (its bounding-box diagonal: the factor from the NOCS model to the camera),
``rotations`` (N, 3, 3) and ``translations`` (N, 3) float32 (metres) of ``T_cam_obj``, ``instance_ids`` (N,)
int32, ``model_list`` (list of N model ids); and, as NOCS's test sets have, ``size`` (N, 3) float32 normalised
extents, ``poses`` (N, 4, 4) float32 ``sRT`` (maps NOCS -> camera) and ``handle_visibility`` (N,) int32. N counts
the NOCS-class instances only (class-0 distractors are not labelled, as in SPD), so it is 0 for a kept class-0
frame. ``handle_visibility`` is always 1: hoigen does not decide whether a mug's handle is hidden (a hidden handle
makes the mug symmetric; an evaluator that cares must work it out from the pose and the model).

List files: ``<split>_list_all.txt`` has every exported image; ``<split>_list.txt`` drops the images SPD's
``gen_data.py`` would reject — those with no NOCS-class instance that has at least 64 pixels of valid depth, or
with a box wider than 600 px or taller than 440 px. Both are in NOCS order (``<split>/%05d/%04d``).

Models: NOCS's CAMERA meshes are normalised (tight bounding box centred on the origin, space diagonal 1), and NOCS
/ SPD readers **negate z** of CAMERA ``model.obj`` vertices (NOCS ``utils.load_mesh(..., is_flipped=True)``, SPD
``shape_data.py``: "flip z-axis in CAMERA") to bring them into the frame of the coord maps. So ``model.obj`` holds
the canonical mesh divided by its scale with z negated (face winding reversed, so normals stay outward): after
the readers' flip it is exactly hoigen's NOCS frame, in which the coord maps and ``sRT`` are expressed. Geometry
only (``v`` / ``f`` lines, single spaces, as NOCS's parser needs). ``bbox.txt`` is NOCS's: two rows, the max
corner then the min corner of the model (``bbox[0] - bbox[1]`` = normalised extents, what NOCS's loader reads);
the box is centred, so the z flip does not change it. The meshes are read from the output folder's mesh store
(:mod:`hoigen.datasets.meshes`): the shards and that folder are all the export needs.

SPD extras (what SPD's ``shape_data.py`` would compute from these models, so labels and pickles agree):
``camera_<split>.pkl`` maps every NOCS-class model id of the split to 1024 float32 points in the NOCS frame (the
z-flipped ``model.obj`` flipped back): 3072 surface samples (seeded by the mesh digest), then farthest-point
sampling. **Mugs** are re-aligned as SPD does (:func:`mug_alignment`: the body's axis to the origin, handle toward
+x, rescaled to a unit diagonal): their points are ``scale * (p + shift)``, ``mug_meta.pkl`` holds
``[shift, scale]``, and their ``_label.pkl`` holds what SPD's ``pose_data.py`` derives for the re-aligned model,
``translations = t - s R shift``, ``scales = s / scale`` (``poses`` and ``size`` follow). Coord maps stay in the
NOCS frame of ``model.obj`` (SPD re-aligns them itself with ``mug_meta``).

Sizes: NOCS images are 640 x 480. Frames of another size are centre-cropped to the aspect ratio of
(``width``, ``height``) and resized to it: nearest neighbour for mask, coord and depth (each output pixel takes
the source pixel under its centre), area averaging (shrinking) or bilinear (enlarging) for colour. The intrinsics
follow (pixel centres at integers): ``f' = f * s``, ``c' = (c - offset + 0.5) * s - 0.5``; they are written to
``intrinsics.json``. All exported images of a split must share one camera (NOCS readers assume one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import re
from pathlib import Path

import numpy as np

from hoigen.exports.common import MeshCache, check_image, frame_image
from hoigen.objects.categories import NOCS_SYNSETS

logger = logging.getLogger(__name__)

FRAMES_PER_FOLDER = 10
OBJECT_INSTANCE_ID = 1
MASK_BACKGROUND = 255
CAMERA_DEPTH_INVALID = 32001
DISTRACTOR_SYNSET = "00000000"
"""Synset folder of class-0 (non-NOCS) models: hoigen has no ShapeNet synset for them."""
SPD_MIN_DEPTH_PIXELS = 64
SPD_MAX_BOX = (600, 440)  # width, height
PICKLE_PROTOCOL = 4
CLASS0_MODES = ("skip", "keep")
CAMERA_K = np.array([[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])
"""The intrinsics NOCS / SPD code hard-codes for CAMERA images (640 x 480)."""
INTRINSICS_ATOL_PX = 0.01
"""Largest difference (px) from :data:`CAMERA_K` an export accepts without ``allow_intrinsics``."""
SPD_MODEL_POINTS = 1024  # points per model in camera_<split>.pkl (SPD's shape_data.py)
SPD_SAMPLE_RATIO = 3  # surface samples per point before farthest-point sampling (SPD: ratio=3)

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_WHITESPACE = re.compile(r"\s+")


# ---------------------------------------------------------------------------------------------------------------
# geometry of the crop / resize


def crop_resize_geometry(src_w: int, src_h: int, width: int, height: int) -> dict:
    """Centre crop of a ``src_w`` x ``src_h`` image to the aspect of ``width`` x ``height``, and the scale to it.

    Returns ``{"crop": [x0, y0, w, h], "scale": [sx, sy]}`` (``sx = width / w``, ``sy = height / h``).
    """
    if src_w * height > width * src_h:  # source wider than the target: crop columns
        crop_h = src_h
        crop_w = min(src_w, max(1, int(round(src_h * width / height))))
    else:
        crop_w = src_w
        crop_h = min(src_h, max(1, int(round(src_w * height / width))))
    x0, y0 = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    return {"crop": [x0, y0, crop_w, crop_h], "scale": [width / crop_w, height / crop_h]}


def adjust_intrinsics(K: np.ndarray, geometry: dict) -> np.ndarray:
    """Intrinsics after the crop and resize of ``geometry`` (pixel centres at integer coordinates)."""
    x0, y0, _, _ = geometry["crop"]
    sx, sy = geometry["scale"]
    K = np.asarray(K, dtype=np.float64)
    out = K.copy()
    out[0, 0], out[0, 1], out[0, 2] = K[0, 0] * sx, K[0, 1] * sx, (K[0, 2] - x0 + 0.5) * sx - 0.5
    out[1, 1], out[1, 2] = K[1, 1] * sy, (K[1, 2] - y0 + 0.5) * sy - 0.5
    return out


class _Resampler:
    """Applies one crop / resize to the images of a frame (identity when the size already matches)."""

    def __init__(self, src_w: int, src_h: int, width: int, height: int):
        self.identity = (src_w, src_h) == (width, height)
        self.geometry = crop_resize_geometry(src_w, src_h, width, height)
        self.size = (width, height)
        x0, y0, crop_w, crop_h = self.geometry["crop"]
        sx, sy = self.geometry["scale"]
        # the source pixel under each output pixel's centre
        self._cols = x0 + np.clip(np.floor((np.arange(width) + 0.5) / sx).astype(np.int64), 0, crop_w - 1)
        self._rows = y0 + np.clip(np.floor((np.arange(height) + 0.5) / sy).astype(np.int64), 0, crop_h - 1)

    def nearest(self, image: np.ndarray) -> np.ndarray:
        if self.identity:
            return image
        return image[self._rows[:, None], self._cols[None, :]]

    def color(self, image: np.ndarray) -> np.ndarray:
        if self.identity:
            return image
        import cv2

        x0, y0, crop_w, crop_h = self.geometry["crop"]
        crop = np.ascontiguousarray(image[y0 : y0 + crop_h, x0 : x0 + crop_w])
        shrink = crop_w * crop_h > self.size[0] * self.size[1]
        return cv2.resize(crop, self.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------------------------
# encodings


def encode_coord(nocs16: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """hoigen's uint16 NOCS image ((x + 0.5) * 65535) -> NOCS's 8-bit coord image, RGB order, 0 off ``mask``."""
    unit = nocs16.astype(np.float64) / 65535.0  # x + 0.5 in [0, 1]
    unit[..., 2] = 1.0 - unit[..., 2]  # readers set z = 1 - z after reading
    coord = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
    coord[~mask] = 0
    return coord


def encode_mask(object_mask: np.ndarray, instance_id: int = OBJECT_INSTANCE_ID) -> np.ndarray:
    """Boolean object mask -> 3-channel uint8 mask: ``instance_id`` on the object, 255 elsewhere."""
    mask = np.full(object_mask.shape, MASK_BACKGROUND, dtype=np.uint8)
    mask[object_mask] = instance_id
    return np.repeat(mask[..., None], 3, axis=2)


def depth_to_mm(depth: np.ndarray, depth_scale: float) -> np.ndarray:
    """hoigen depth (``value * depth_scale`` = mm, 0 = none) -> uint16 whole millimetres (0 = none)."""
    mm = np.round(depth.astype(np.float64) * float(depth_scale))
    return np.clip(mm, 0, 65535).astype(np.uint16)


def encode_camera_depth(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 mm -> CAMERA's 3-channel depth, RGB order (R = low byte, G = high byte, B = 0), 32001 = no surface.

    Read back as NOCS does: ``bgr = cv2.imread(path, -1)``, ``bgr[..., 1].astype(uint16) * 256 + bgr[..., 2]``.
    """
    value = np.where(depth_mm > 0, depth_mm, CAMERA_DEPTH_INVALID).astype(np.uint16)
    out = np.zeros((*depth_mm.shape, 3), dtype=np.uint8)
    out[..., 0] = (value & 0xFF).astype(np.uint8)
    out[..., 1] = (value >> 8).astype(np.uint8)
    return out


def bbox_yxyx(mask: np.ndarray) -> list[int]:
    """``[y1, x1, y2, x2]`` of a boolean mask, max exclusive (SPD); ``[0, 0, 0, 0]`` when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return [0, 0, 0, 0]
    return [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]


def model_id_for(object_id: str) -> str:
    """The model id written to ``_meta.txt`` and ``obj_models``: the object id without whitespace."""
    return _WHITESPACE.sub("_", str(object_id).strip()) or "object"


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A geometry-only OBJ (``v x y z`` / ``f a b c``, single spaces, 1-based), as NOCS's parser reads it."""
    lines = [f"# hoigen normalised model: {len(vertices)} vertices, {len(faces)} faces"]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"f {a} {b} {c}" for a, b, c in (np.asarray(faces, dtype=np.int64) + 1)]
    path.write_text("\n".join(lines) + "\n")


def write_camera_model(folder: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a normalised model (canonical / scale: bbox centred, diagonal 1) as CAMERA ships it: ``model.obj``
    with z negated (faces reversed, so they still wind outward) and ``bbox.txt`` (max corner, then min corner).
    Returns the ``model.obj`` path; :func:`read_camera_model` undoes the flip."""
    folder.mkdir(parents=True, exist_ok=True)
    flipped = np.asarray(vertices, dtype=np.float64).copy()
    flipped[:, 2] *= -1.0  # CAMERA models are stored z-flipped; readers negate z (module docstring)
    write_obj(folder / "model.obj", flipped, np.asarray(faces, dtype=np.int64)[:, ::-1])
    hi, lo = flipped.max(axis=0), flipped.min(axis=0)
    (folder / "bbox.txt").write_text("".join(" ".join(f"{v:.7f}" for v in row) + "\n" for row in (hi, lo)))
    return folder / "model.obj"


def read_camera_model(path: Path):
    """A CAMERA ``model.obj`` in the frame of the coord maps and labels (z negated back, as NOCS/SPD readers do),
    as a ``trimesh.Trimesh``."""
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    vertices = np.asarray(mesh.vertices, dtype=np.float64).copy()
    vertices[:, 2] *= -1.0
    return trimesh.Trimesh(vertices, np.asarray(mesh.faces)[:, ::-1], process=False)


# ---------------------------------------------------------------------------------------------------------------
# meta validation


def _meta_value(meta: dict, dotted: str, key: str):
    value = meta
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"sample {key}: meta.json has no {dotted!r} (the NOCS export needs it)")
        value = value[part]
    return value


def _instance_ids(meta: dict, key: str) -> tuple[int, int | None]:
    instances = _meta_value(meta, "instances", key)
    by_name = {str(v): int(k) for k, v in instances.items()}
    if "object" not in by_name:
        raise ValueError(f"sample {key}: meta.json 'instances' has no 'object' entry ({instances})")
    return by_name["object"], by_name.get("hand")


def _frame_pose(meta: dict, t: int, key: str) -> np.ndarray:
    frames = _meta_value(meta, "frames", key)
    if t >= len(frames) or "T_cam_obj" not in frames[t]:
        raise ValueError(f"sample {key}: meta.json frames[{t}] has no 'T_cam_obj'")
    pose = np.asarray(frames[t]["T_cam_obj"], dtype=np.float64)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise ValueError(f"sample {key}: meta.json frames[{t}].T_cam_obj is not a finite 4x4 matrix")
    return pose


# ---------------------------------------------------------------------------------------------------------------
# SPD's model preprocessing (shape_data.py), done here so its outputs are consistent with the labels


def farthest_point_sample(points: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` of ``points`` (M, 3) by farthest-point sampling, starting from point 0."""
    points = np.asarray(points, dtype=np.float64)
    n = min(n, len(points))
    chosen = np.zeros(n, dtype=np.int64)
    dist = np.full(len(points), np.inf)
    for k in range(1, n):
        dist = np.minimum(
            dist, np.einsum("ij,ij->i", points - points[chosen[k - 1]], points - points[chosen[k - 1]])
        )
        chosen[k] = int(np.argmax(dist))
    return chosen


def model_points(mesh, n: int = SPD_MODEL_POINTS, seed: int = 0) -> np.ndarray:
    """(n, 3) float32 points of a normalised model in the NOCS frame (SPD: 3n surface samples, then FPS)."""
    import trimesh

    samples, _ = trimesh.sample.sample_surface(mesh, SPD_SAMPLE_RATIO * n, seed=seed)
    samples = np.asarray(samples, dtype=np.float64)
    return samples[farthest_point_sample(samples, n)].astype(np.float32)


def mug_alignment(points: np.ndarray) -> tuple[np.ndarray, float]:
    """SPD's mug re-alignment of NOCS-frame model points (N, 3): ``(shift (3,), scale)``.

    ``shift_x = (z_min - z_max) / 2 - x_min`` moves the body's axis to the origin (handle toward +x), then
    ``scale = 1 / ||2 max|p + shift|||``; SPD uses ``p' = scale * (p + shift)`` and relabels
    ``T = t - s R shift``, ``s = s / scale``.
    """
    points = np.asarray(points, dtype=np.float64)
    shift_x = (points[:, 2].min() - points[:, 2].max()) / 2.0 - points[:, 0].min()
    shift = np.array([shift_x, 0.0, 0.0])
    size = 2.0 * np.abs(points + shift).max(axis=0)
    return shift, float(1.0 / np.linalg.norm(size))


# ---------------------------------------------------------------------------------------------------------------
# models


class _Models:
    """Writes each model of a split once, from the canonical mesh stored with the shards."""

    def __init__(self, root: Path, meshes: MeshCache):
        self.root = root
        self.meshes = meshes
        self.written: dict[str, dict] = {}  # model id -> {"synset", "sha256", "path", "points", "mug"}
        for synset in NOCS_SYNSETS.values():  # SPD's shape_data.py lists every synset in train/ and val/
            (root / synset).mkdir(parents=True, exist_ok=True)

    def ensure(self, sequence: dict, key: str, model_id: str, synset: str, scale: float) -> dict:
        mesh, ref = self.meshes.mesh(sequence)
        digest = ref.get("sha256") if isinstance(ref, dict) else None
        known = self.written.get(model_id)
        if known is not None:
            if known["synset"] != synset or known["sha256"] != digest:
                raise ValueError(
                    f"sample {key}: model id {model_id!r} was already exported for a different object "
                    f"(synset {known['synset']} vs {synset}, mesh {known['sha256']} vs {digest})"
                )
            return known
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        extents = vertices.max(axis=0) - vertices.min(axis=0)
        if not math.isclose(float(np.linalg.norm(extents)), scale, rel_tol=1e-6):
            raise ValueError(
                f"sample {key}: the stored mesh {ref.get('file')} has a bounding-box diagonal of "
                f"{np.linalg.norm(extents):.6g} m but meta.json says scale {scale:.6g} m; the mesh store is not "
                "the one of these shards"
            )
        import trimesh

        folder = self.root / synset / model_id
        normalised = trimesh.Trimesh(vertices / scale, mesh.faces, process=False)
        write_camera_model(folder, normalised.vertices, normalised.faces)
        seed = int.from_bytes(bytes.fromhex(digest[:8]), "big") if digest else 0
        points = model_points(normalised, seed=seed).astype(np.float64)
        record = {"synset": synset, "sha256": digest, "path": str(folder / "model.obj"), "mug": None}
        if synset == NOCS_SYNSETS["mug"]:
            shift, mug_scale = mug_alignment(points)
            record["mug"] = (shift, mug_scale)
            points = mug_scale * (points + shift)
        record["points"] = points.astype(np.float32)
        self.written[model_id] = record
        return record


# ---------------------------------------------------------------------------------------------------------------
# export


def _check_args(
    split: str, val_split: str, image: str, width: int, height: int, class0: str, val_fraction
) -> None:
    for name, value in (("split", split), ("val_split", val_split)):
        if not isinstance(value, str) or not _SPLIT_NAME.match(value) or value in (".", ".."):
            raise ValueError(f"{name} must be a plain folder name such as 'train' or 'val', got {value!r}")
    check_image(image)
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if class0 not in CLASS0_MODES:
        raise ValueError(f"class0 must be one of {CLASS0_MODES}, got {class0!r}")
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 <= val_fraction < 1
    ):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if val_fraction > 0 and val_split == split:
        raise ValueError(f"val_split must differ from split ({split!r}) when val_fraction > 0")


def in_val_split(key: str, val_fraction: float) -> bool:
    """Whether sample ``key`` goes to the val split: a hash of the key below ``val_fraction`` (stable across
    runs and exports; every frame of a sequence goes to the same split)."""
    if val_fraction <= 0:
        return False
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
    return value < val_fraction


def intrinsics_mismatch(K: np.ndarray, atol: float = INTRINSICS_ATOL_PX) -> list[str]:
    """The entries of ``K`` that differ from CAMERA's (``name: value vs camera``); empty when it is CAMERA's."""
    names = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2), "skew": (0, 1)}
    return [
        f"{name} {K[i, j]:.6g} vs {CAMERA_K[i, j]:.6g}"
        for name, (i, j) in names.items()
        if abs(K[i, j] - CAMERA_K[i, j]) > atol
    ]


class _Split:
    """The output state of one split (images, lists, models)."""

    def __init__(self, out: Path, name: str, meshes: MeshCache):
        self.name = name
        self.image_root = out / "CAMERA" / name
        if self.image_root.exists() and any(self.image_root.iterdir()):
            raise FileExistsError(
                f"{self.image_root} already holds files; export to a new folder (or another split), or remove it "
                "first"
            )
        self.image_root.mkdir(parents=True, exist_ok=True)
        self.depth_root = out / "camera_full_depths" / name
        self.models = _Models(out / "obj_models" / name, meshes)
        self.sources: list[dict] = []
        self.listed: list[str] = []
        self.nocs_instances = 0


def export_nocs(
    shards,
    out,
    split: str = "train",
    image: str = "rgb",
    width: int = 640,
    height: int = 480,
    camera_depth: bool = False,
    class0: str = "skip",
    *,
    val_fraction: float = 0.0,
    val_split: str = "val",
    allow_intrinsics: bool = False,
    verify: bool = True,
) -> dict:
    """Export hoigen shards to the NOCS CAMERA layout with SPD's extras (module docstring); returns a summary.

    Args:
        shards: anything :func:`hoigen.datasets.reader.open_sequences` accepts (output folder, manifest, shard
            paths or URL pattern); the object meshes are read from the output folder's mesh store.
        out: output root; ``CAMERA/<split>`` (and ``CAMERA/<val_split>``) must not exist yet or be empty.
        split: the split folder name (``train``, ``val``...).
        image: ``"rgb"`` (the render) or ``"photo"`` (``fNNN.photo.png``; a sample without one is an error).
        width, height: size of the exported images (NOCS: 640 x 480); other sizes are centre-cropped and resized.
        camera_depth: write ``_depth.png`` in CAMERA's 3-channel encoding (and uint16 mm depth to
            ``camera_full_depths``) instead of uint16 mm.
        class0: ``"skip"`` drops frames of class-0 (non-NOCS) objects; ``"keep"`` writes them as distractors.
        val_fraction: fraction of the samples (whole sequences, chosen by a hash of the key) written to
            ``val_split`` instead of ``split``.
        allow_intrinsics: export although the intrinsics after the crop / resize are not CAMERA's (577.5, 319.5,
            239.5), with a warning; ``intrinsics.json`` records them. Without it such data is refused.

    Returns:
        ``{"out", "split", "images", "listed", "samples", "frames", "skipped", "skipped_frames", "instances",
        "nocs_instances", "models", "intrinsics", "size", "resized", "camera_depth", "image", "splits"}``; the
        top-level counts are totals, ``splits`` has ``images`` / ``listed`` / ``models`` per split.

    Raises:
        ValueError: bad arguments, intrinsics that are not CAMERA's (without ``allow_intrinsics``), or a sample
            that lacks what the export needs (the message names the sample key and the member); FileExistsError:
            ``CAMERA/<split>`` already holds files; FileNotFoundError: the shards or a stored mesh are missing.
    """
    from hoigen.datasets.reader import open_sequences
    from hoigen.render.png import encode_png

    _check_args(split, val_split, image, width, height, class0, val_fraction)
    out = Path(out)
    meshes = MeshCache()
    splits = {split: _Split(out, split, meshes)}
    if val_fraction > 0:
        splits[val_split] = _Split(out, val_split, meshes)

    skipped_frames: list[dict] = []
    intrinsics: dict | None = None
    resamplers: dict[tuple[int, int], _Resampler] = {}
    n_samples = n_frames = 0

    for sequence in open_sequences(shards, verify=verify):  # verify: shards checked against the manifest
        key, meta = sequence["key"], sequence["meta"]
        n_samples += 1
        target = splits[val_split if in_val_split(key, val_fraction) else split]
        obj = _meta_value(meta, "object", key)
        class_id = int(_meta_value(meta, "object.class_id", key))
        category = str(_meta_value(meta, "object.category", key))
        object_id = str(_meta_value(meta, "object.id", key))
        scale = float(_meta_value(meta, "object.scale", key))
        size = np.asarray(_meta_value(meta, "object.size", key), dtype=np.float64)
        depth_scale = float(_meta_value(meta, "depth_scale", key))
        K = np.asarray(_meta_value(meta, "camera.K", key), dtype=np.float64)
        obj_id, _hand_id = _instance_ids(meta, key)
        if class_id > 0:
            synset = NOCS_SYNSETS.get(category)
            if synset is None:
                raise ValueError(
                    f"sample {key}: object {object_id!r} has NOCS class {class_id} but category {category!r}, "
                    f"which is not one of {sorted(NOCS_SYNSETS)}"
                )
        else:
            synset = DISTRACTOR_SYNSET
        model_id = model_id_for(object_id)
        for t, frame in enumerate(sequence["frames"]):
            n_frames += 1
            if class_id == 0 and class0 == "skip":
                skipped_frames.append({"key": key, "frame": t, "reason": "class0"})
                continue
            color_src = frame_image(sequence, t, image)
            src_h, src_w = frame["mask"].shape[:2]
            resampler = resamplers.get((src_w, src_h))
            if resampler is None:
                resampler = resamplers[(src_w, src_h)] = _Resampler(src_w, src_h, width, height)
            K_out = adjust_intrinsics(K, resampler.geometry)
            if intrinsics is None:
                mismatch = intrinsics_mismatch(K_out)
                if mismatch:
                    message = (
                        f"sample {key}: after the crop / resize of its {src_w}x{src_h} frames to {width}x{height} "
                        f"the intrinsics are not CAMERA's ({', '.join(mismatch)}); NOCS / SPD code hard-codes "
                        "CAMERA's fx = fy = 577.5, cx = 319.5, cy = 239.5, so its poses would come out wrong "
                        "without any error"
                    )
                    if not allow_intrinsics:
                        raise ValueError(
                            message + ". Synthesise NOCS data with --camera nocs-camera, or pass "
                            "--allow-intrinsics (allow_intrinsics=True) to export anyway and read "
                            "CAMERA/<split>/intrinsics.json in your own loader"
                        )
                    logger.warning("%s; exporting anyway (allow_intrinsics), see intrinsics.json", message)
                intrinsics = {
                    "K": K_out.tolist(),
                    "width": width,
                    "height": height,
                    "source": {"K": K.tolist(), "width": src_w, "height": src_h},
                    **resampler.geometry,
                    "depth_unit": "mm",
                    "camera_intrinsics": not intrinsics_mismatch(K_out),
                }
            elif not np.allclose(K_out, intrinsics["K"], rtol=0, atol=1e-9):
                raise ValueError(
                    f"sample {key}: its exported intrinsics {K_out.tolist()} differ from the export's "
                    f"{intrinsics['K']}; NOCS readers assume one camera, so export runs with different cameras "
                    "to different output folders"
                )
            object_mask = resampler.nearest(frame["mask"]) == obj_id
            if not object_mask.any():
                skipped_frames.append({"key": key, "frame": t, "reason": "object_not_visible"})
                continue

            number = len(target.sources)
            name = f"{number // FRAMES_PER_FOLDER:05d}/{number % FRAMES_PER_FOLDER:04d}"
            folder = target.image_root / name.split("/")[0]
            folder.mkdir(exist_ok=True)
            stem = folder / name.split("/")[1]
            pose = _frame_pose(meta, t, key)

            depth_mm = depth_to_mm(resampler.nearest(frame["depth"]), depth_scale)
            coord = encode_coord(resampler.nearest(frame["nocs"]), object_mask)
            color = resampler.color(color_src)
            if color.ndim == 3 and color.shape[2] == 4:
                color = color[..., :3]
            Path(f"{stem}_color.png").write_bytes(encode_png(np.ascontiguousarray(color)))
            Path(f"{stem}_coord.png").write_bytes(encode_png(coord))
            Path(f"{stem}_mask.png").write_bytes(encode_png(encode_mask(object_mask)))
            if camera_depth:
                Path(f"{stem}_depth.png").write_bytes(encode_png(encode_camera_depth(depth_mm)))
                composed = target.depth_root / name.split("/")[0]
                composed.mkdir(parents=True, exist_ok=True)
                (composed / f"{name.split('/')[1]}_composed.png").write_bytes(encode_png(depth_mm))
            else:
                Path(f"{stem}_depth.png").write_bytes(encode_png(depth_mm))
            Path(f"{stem}_meta.txt").write_text(f"{OBJECT_INSTANCE_ID} {class_id} {synset} {model_id}\n")
            model = target.models.ensure(sequence, key, model_id, synset, scale)

            labelled = class_id > 0
            box = bbox_yxyx(object_mask)
            label = _label(labelled, class_id, box, scale, pose, model_id, size, model["mug"])
            with open(f"{stem}_label.pkl", "wb") as fh:
                pickle.dump(label, fh, protocol=PICKLE_PROTOCOL)

            image_name = f"{target.name}/{name}"
            valid_depth = int((object_mask & (depth_mm > 0)).sum())
            box_w, box_h = box[3] - box[1], box[2] - box[0]
            if (
                labelled
                and valid_depth >= SPD_MIN_DEPTH_PIXELS
                and box_w <= SPD_MAX_BOX[0]
                and box_h <= SPD_MAX_BOX[1]
            ):
                target.listed.append(image_name)
            target.nocs_instances += int(labelled)
            target.sources.append(
                {
                    "image": image_name,
                    "key": key,
                    "frame": t,
                    "index": meta.get("index"),
                    "url": sequence.get("url"),
                    "object": obj.get("id"),
                    "class_id": class_id,
                }
            )

    for item in splits.values():
        _finish_split(out, item, intrinsics)
    _finish_models(out, splits)
    reasons: dict[str, int] = {}
    for item in skipped_frames:
        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    per_split = {
        name: {"images": len(s.sources), "listed": len(s.listed), "models": len(s.models.written)}
        for name, s in splits.items()
    }
    summary = {
        "out": str(out),
        "split": split,
        "images": sum(v["images"] for v in per_split.values()),
        "listed": sum(v["listed"] for v in per_split.values()),
        "samples": n_samples,
        "frames": n_frames,
        "skipped": reasons,
        "skipped_frames": skipped_frames,
        "instances": sum(v["images"] for v in per_split.values()),
        "nocs_instances": sum(s.nocs_instances for s in splits.values()),
        "models": len({m for s in splits.values() for m in s.models.written}),
        "intrinsics": intrinsics,
        "size": [width, height],
        "resized": any(not r.identity for r in resamplers.values()),
        "camera_depth": bool(camera_depth),
        "image": image,
        "splits": per_split,
    }
    logger.info(
        "NOCS export to %s: %s from %d frames of %d samples, %d skipped %s",
        out,
        per_split,
        n_frames,
        n_samples,
        len(skipped_frames),
        reasons,
    )
    return summary


def _finish_split(out: Path, item: _Split, intrinsics: dict | None) -> None:
    camera = out / "CAMERA"
    all_images = [s["image"] for s in item.sources]
    (camera / f"{item.name}_list_all.txt").write_text("".join(f"{p}\n" for p in all_images))
    (camera / f"{item.name}_list.txt").write_text("".join(f"{p}\n" for p in item.listed))
    (item.image_root / "sources.json").write_text(json.dumps(item.sources, indent=1) + "\n")
    if intrinsics is not None:
        (item.image_root / "intrinsics.json").write_text(json.dumps(intrinsics, indent=1) + "\n")


def _finish_models(out: Path, splits: dict[str, _Split]) -> None:
    """SPD's ``camera_<split>.pkl`` per split, ``mug_meta.pkl`` (merged with one already there), and the train /
    val folders and lists SPD's scripts expect even when a split is empty."""
    models_root = out / "obj_models"
    for name in ("train", "val"):
        for synset in NOCS_SYNSETS.values():
            (models_root / name / synset).mkdir(parents=True, exist_ok=True)
        for suffix in ("_list.txt", "_list_all.txt"):
            path = out / "CAMERA" / f"{name}{suffix}"
            if not path.exists():
                path.write_text("")
    mug_path = models_root / "mug_meta.pkl"
    mug_meta = _read_pickle(mug_path) if mug_path.exists() else {}
    for name, item in splits.items():
        points = {
            model_id: record["points"]
            for model_id, record in sorted(item.models.written.items())
            if record["synset"] != DISTRACTOR_SYNSET
        }
        with open(models_root / f"camera_{name}.pkl", "wb") as fh:
            pickle.dump(points, fh, protocol=PICKLE_PROTOCOL)
        for model_id, record in item.models.written.items():
            if record["mug"] is not None:
                shift, scale = record["mug"]
                mug_meta[model_id] = [np.asarray(shift, dtype=np.float64), float(scale)]
    for name in ("train", "val"):
        path = models_root / f"camera_{name}.pkl"
        if not path.exists():
            with open(path, "wb") as fh:
                pickle.dump({}, fh, protocol=PICKLE_PROTOCOL)
    with open(mug_path, "wb") as fh:
        pickle.dump(mug_meta, fh, protocol=PICKLE_PROTOCOL)


def _read_pickle(path: Path):
    with open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - our own output file


def _label(
    labelled: bool,
    class_id: int,
    box: list[int],
    scale: float,
    pose: np.ndarray,
    model_id: str,
    size: np.ndarray,
    mug: tuple[np.ndarray, float] | None = None,
) -> dict:
    """The SPD-style ``_label.pkl`` dict of one image (one instance, or none for a class-0 distractor).

    For a mug (``mug`` = SPD's ``(shift, scale)`` of its model) the labels are those SPD's ``pose_data.py``
    derives for the re-aligned model: ``t - s R shift`` and ``s / scale``; ``size`` is the re-aligned extents.
    """
    n = 1 if labelled else 0
    R, t, s = pose[:3, :3], pose[:3, 3].copy(), float(scale)
    if mug is not None:
        shift, mug_scale = mug
        t = t - s * R @ np.asarray(shift, dtype=np.float64)
        s = s / mug_scale
        half = np.asarray(size, dtype=np.float64) / 2.0
        size = 2.0 * np.maximum(np.abs(-half + shift), np.abs(half + shift)) * mug_scale
    srt = np.eye(4)
    srt[:3, :3], srt[:3, 3] = s * R, t
    return {
        "class_ids": np.full(n, class_id, dtype=np.int32),
        "bboxes": np.asarray([box] * n, dtype=np.int32).reshape(n, 4),
        "scales": np.full(n, s, dtype=np.float32),
        "rotations": np.asarray([R] * n, dtype=np.float32).reshape(n, 3, 3),
        "translations": np.asarray([t] * n, dtype=np.float32).reshape(n, 3),
        "instance_ids": np.full(n, OBJECT_INSTANCE_ID, dtype=np.int32),
        "model_list": [model_id] * n,
        "size": np.asarray([size] * n, dtype=np.float32).reshape(n, 3),
        "poses": np.asarray([srt] * n, dtype=np.float32).reshape(n, 4, 4),
        "handle_visibility": np.ones(n, dtype=np.int32),
    }


__all__ = [
    "CAMERA_DEPTH_INVALID",
    "CAMERA_K",
    "DISTRACTOR_SYNSET",
    "adjust_intrinsics",
    "bbox_yxyx",
    "crop_resize_geometry",
    "encode_camera_depth",
    "encode_coord",
    "export_nocs",
    "farthest_point_sample",
    "in_val_split",
    "intrinsics_mismatch",
    "model_points",
    "mug_alignment",
]
