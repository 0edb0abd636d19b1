"""HOIDiffusion's downstream recipe: hand-object interaction frames in the NOCS (CAMERA) layout, mixed with the
originals into a training list.

HOIDiffusion replaced CAMERA's synthetic training images by HOI images of the same objects in the same poses and
improved a category-level pose estimator (REFERENCE.md). :func:`nocs_augment` does the geometric part of that with
hoigen's grasps and renderer (``image="render"``; photoreal appearance comes later as another ``image`` backend).

**With a NOCS root** (``nocs_root/CAMERA/<split>/%05d/%04d_{color,coord,depth,mask}.png``, ``_meta.txt``, SPD-style
``_label.pkl``, and ``nocs_root/obj_models/<split>/<synset>/<model_id>/model.obj``), for each HOI frame:

1. take an original frame and every labelled object in it: its normalised model (bounding-box diagonal 1, centred)
   times the label's ``scales`` (the factor from NOCS coordinates to metres), placed by ``rotations`` and
   ``translations`` (camera frame, metres) and seen by the CAMERA camera (640 x 480, f = 577.5, c = (319.5, 239.5));
2. pick one NOCS-class object (a seeded choice; further HOI frames of the same original take the next object) and
   sample a contact grasp of it in its canonical frame (the model frame times the scale: NOCS y-up, so the hand
   never comes from below). A grasp is kept when the hand does not go into another object of the frame (their
   distance fields) nor below the grasped object's base (CAMERA objects stand on tables), the hand covers at least
   :data:`MIN_HAND_PIXELS` pixels and the object stays visible; otherwise another grasp, then another object is
   tried (``grasp_tries`` grasps per object);
3. render every labelled object of the frame and the hand in one id pass (hoigen's :class:`~hoigen.render.Renderer`
   draws one object and a hand; a CAMERA frame holds several, so this module assembles the frame from the same
   pieces: :class:`~hoigen.render.gl.IdRasterizer`, exact per-pixel ray hits, the renderer's shading). With
   ``background="original"`` the original colour image is the background and the original depth fills the pixels
   no object or hand covers; where the original depth is nearer than the hand (the table, a distractor) it hides
   the hand. With ``background="render"`` the background is one of hoigen's random backgrounds;
4. write the frame in the NOCS layout under ``CAMERA/<split>_hoi/%05d/%04d_*`` (10 per folder, numbered in order):
   colour, coord, depth, mask, meta (the rendered objects' lines, same instance ids), ``_label.pkl`` (the
   original poses and scales; boxes from the new visible masks), plus two extra files readers ignore:
   ``_hand_mask.png`` (255 on the hand) and ``_hoi.json`` (source frame, grasped instance, hand parameters,
   keypoints, grasp metrics).

Then ``CAMERA/<split>_mixed_list.txt`` lists the training frames relative to ``CAMERA/`` (SPD's list format,
``train/00000/0000``): ``mode="add"`` lists every original plus ``round(ratio * originals)`` HOI frames (a ratio
above 1 grasps other objects of the same originals); ``mode="replace"`` (``ratio`` <= 1) substitutes the HOI
version for ``round(ratio * originals)`` originals, at their places in the list. The originals are the frames of
``CAMERA/<split>_list.txt`` when the root has it, else every ``_color.png`` of the split; ``num_frames`` takes a
seeded random subset of them. When ``out`` is not the NOCS root, ``out/CAMERA/<split>`` and ``out/obj_models``
are symbolic links to the originals, so ``out`` is a complete data root for SPD-style loaders.

Class 0 (distractors, listed in meta but not in the labels): ``class0="skip"`` leaves them out of the HOI frame's
meta and mask (with the original background they still show in the colour image, unlabelled, as any background
clutter); ``class0="keep"`` (with ``background="original"``) keeps their meta lines and carries their pixels over
from the original mask and depth wherever the rendered objects and the hand do not cover them; a class-0 instance
that the label does pose is rendered as a distractor (mask and depth, no coordinates, never labelled). Both are
counted in the report (``kept``, or ``not_visible`` when nothing of it is left in the frame).

**Without a NOCS root**: NOCS-layout training data from hoigen's built-in categories: per frame one procedural
object (the same object ``hoigen synth --seed`` draws for that sample index), a contact grasp, a camera sampled as
in HOIDiffusion (0.35-0.45 m, elevation 5-60°) with CAMERA intrinsics, written to ``CAMERA/<split>/`` with
``CAMERA/<split>_list.txt`` and the normalised models in ``obj_models/<split>/<synset>/<model_id>/model.obj``.

NOCS file conventions written (REFERENCE.md): ``_color.png`` 8-bit RGB; ``_coord.png`` 8-bit, stored so that a
reader's ``cv2.imread`` -> BGR to RGB -> / 255 -> ``z = 1 - z`` -> - 0.5 gives the NOCS coordinates, 0 off the
objects; ``_mask.png`` 8-bit, all channels the instance id, **255 background** (the hand is background: NOCS
readers look up every mask id in the meta); ``_depth.png`` CAMERA style, millimetres = G * 256 + R,
:data:`CAMERA_DEPTH_INVALID` where nothing is known; ``_label.pkl`` pickled with plain ``numpy.array`` calls
(protocol 2) so any NumPy version and Python 3 can read it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hoigen.geometry.camera import CameraConfig, Intrinsics, intrinsics_preset, sample_camera
from hoigen.geometry.transforms import apply_transform, invert_transform, make_transform
from hoigen.grasping.contact import ContactGraspSampler, Grasp, GraspConfig, GraspError
from hoigen.grasping.trajectory import transform_hand_params
from hoigen.hands.model import HandModel
from hoigen.objects.asset import ObjectAsset, ObjectError, make_asset
from hoigen.objects.categories import NOCS_CLASSES, NOCS_SYMMETRY, NOCS_SYNSETS
from hoigen.render.config import RenderConfig

logger = logging.getLogger(__name__)

CAMERA_DEPTH_INVALID = 32001  # CAMERA depth value for "no measurement"
MASK_BACKGROUND = 255
FRAMES_PER_FOLDER = 10
MIN_VISIBLE_PIXELS = 64  # NOCS/SPD readers skip instances with fewer valid depth pixels
MIN_HAND_PIXELS = 800  # a HOI frame's hand covers at least this many pixels (640 x 480)
MODES = ("add", "replace")
CLASS0_POLICIES = ("skip", "keep")
BACKGROUNDS = ("original", "render")
IMAGES = ("render",)
LABEL_KEYS = ("class_ids", "instance_ids", "model_list", "scales", "rotations", "translations")

CLASS_NAMES: dict[int, str] = {v: k for k, v in NOCS_CLASSES.items()}
_FRAME_NAME = re.compile(r"^(?P<split>[^/]+)/(?P<folder>\d+)/(?P<image>\d+)$")
_COLLISION_DEPTH = 0.002  # a hand vertex this deep in another object counts as a collision (metres)
_TABLE_TOLERANCE = 0.01  # a hand vertex this far below the grasped object's base goes through its table
_HAND_OCCLUSION = 0.01  # the original depth hides the hand where it is nearer by more than this (metres)


# ---------------------------------------------------------------------------------------------------------------
# NOCS layout: names and encodings


def frame_name(split: str, index: int) -> str:
    """Name of the ``index``-th frame of ``split`` relative to ``CAMERA/``: ``train/00001/0003`` for 13."""
    return f"{split}/{index // FRAMES_PER_FOLDER:05d}/{index % FRAMES_PER_FOLDER:04d}"


def encode_coord(nocs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """NOCS coordinates -> the RGB array of a ``_coord.png``.

    Args:
        nocs: (H, W, 3) float NOCS coordinates in [-0.5, 0.5].
        valid: (H, W) bool, the object pixels (0 elsewhere).

    Returns:
        (H, W, 3) uint8 RGB: R = (x + 0.5) * 255, G = (y + 0.5) * 255, B = (0.5 - z) * 255 (readers flip z).
    """
    stored = np.stack([nocs[..., 0] + 0.5, nocs[..., 1] + 0.5, 0.5 - nocs[..., 2]], axis=-1)
    out = np.clip(np.round(stored * 255.0), 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def decode_coord(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a ``_coord.png`` -> (H, W, 3) float NOCS coordinates (the readers' decoding)."""
    coord = rgb.astype(np.float64) / 255.0
    coord[..., 2] = 1.0 - coord[..., 2]
    return coord - 0.5


def encode_camera_depth(depth_mm: np.ndarray) -> np.ndarray:
    """(H, W) integer millimetres (0..65535) -> (H, W, 3) uint8 RGB with value = G * 256 + R (CAMERA style)."""
    value = np.asarray(depth_mm).astype(np.uint16)
    out = np.zeros((*value.shape, 3), np.uint8)
    out[..., 0] = value & 0xFF
    out[..., 1] = value >> 8
    return out


def decode_camera_depth(image: np.ndarray) -> np.ndarray:
    """A ``_depth.png`` as decoded RGB (CAMERA, value = G * 256 + R) or (H, W) uint16 (Real) -> (H, W) uint16 mm.

    The channels are cast to uint16 before the shift (the widely copied decoder overflows under NumPy 2).
    """
    if image.ndim == 2:
        return image.astype(np.uint16)
    return (image[..., 1].astype(np.uint16) << 8) | image[..., 0].astype(np.uint16)


@dataclass(frozen=True)
class MetaLine:
    """One line of a CAMERA ``_meta.txt``: ``inst_id class_id synset model_id``."""

    inst_id: int
    class_id: int
    synset: str
    model_id: str

    def line(self) -> str:
        return f"{self.inst_id} {self.class_id} {self.synset} {self.model_id}"


def read_meta(path: str | Path) -> list[MetaLine]:
    """Parse a CAMERA ``_meta.txt``; raises ValueError naming the file and line for a malformed one."""
    lines = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(
                f"{path}:{number}: expected 'inst_id class_id synset model_id' (CAMERA meta), got {raw!r}"
            )
        lines.append(MetaLine(int(parts[0]), int(parts[1]), parts[2], parts[3]))
    return lines


def write_meta(path: str | Path, lines: list[MetaLine]) -> None:
    Path(path).write_text("".join(m.line() + "\n" for m in lines))


_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "array"),
    ("numpy", "zeros"),
    ("_codecs", "encode"),
}


class _LabelUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only (a label pickle holds nothing else)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused to load the global '{module}.{name}': a NOCS label holds only numpy arrays and lists"
            )
        if module == "_codecs":
            import codecs

            return codecs.encode
        if module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = module.replace("numpy._core", "numpy.core")
        import importlib

        return getattr(importlib.import_module(module), name)


def read_label(path: str | Path) -> dict:
    """Load an SPD-style ``_label.pkl`` safely (numpy arrays and lists only) and check its pose fields.

    Returns:
        the dict, with ``scales`` (N,), ``rotations`` (N, 3, 3), ``translations`` (N, 3) as float64 arrays and
        ``class_ids``, ``instance_ids`` as int lists, ``model_list`` as a str list.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            label = _LabelUnpickler(handle, encoding="latin1").load()
    except Exception as exc:
        raise ValueError(f"{path}: not a readable label pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(label, dict):
        raise ValueError(f"{path}: a label pickle holds a dict, got {type(label).__name__}")
    missing = [k for k in LABEL_KEYS if k not in label]
    if missing:
        raise ValueError(
            f"{path}: the label lacks {', '.join(missing)}; nocs_augment needs SPD-style labels "
            f"({', '.join(LABEL_KEYS)})"
        )
    n = len(label["instance_ids"])
    scales = np.asarray(label["scales"], dtype=np.float64)
    if scales.ndim == 2 and scales.shape[1] == 1:
        scales = scales[:, 0]
    if scales.shape != (n,):
        raise ValueError(
            f"{path}: 'scales' has shape {scales.shape}, expected ({n},): one factor per instance from NOCS "
            "coordinates to metres (SPD labels). Per-axis (N, 3) 'scales' are normalised box sizes, not that "
            "factor; recompute the labels with SPD's preprocessing"
        )
    rotations = np.asarray(label["rotations"], dtype=np.float64).reshape(-1, 3, 3)
    translations = np.asarray(label["translations"], dtype=np.float64).reshape(-1, 3)
    lengths = {
        "class_ids": len(label["class_ids"]),
        "model_list": len(label["model_list"]),
        "rotations": len(rotations),
        "translations": len(translations),
    }
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise ValueError(f"{path}: {n} instance_ids but {bad}; the label is inconsistent")
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError(f"{path}: 'scales' must be positive metres, got {scales.tolist()}")
    if not (np.isfinite(rotations).all() and np.isfinite(translations).all()):
        raise ValueError(f"{path}: the poses hold NaN or infinite values")
    for k, rot in enumerate(rotations):
        if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0:
            raise ValueError(f"{path}: rotations[{k}] is not a rotation matrix: {rot.tolist()}")
    out = dict(label)
    out.update(
        scales=scales,
        rotations=rotations,
        translations=translations,
        class_ids=[int(c) for c in label["class_ids"]],
        instance_ids=[int(i) for i in label["instance_ids"]],
        model_list=[m.decode() if isinstance(m, bytes) else str(m) for m in label["model_list"]],
    )
    return out


class _PortablePickler(pickle.Pickler):
    """Pickles arrays as ``numpy.array(nested lists, dtype)`` so that NumPy 1 and 2 can both read the file."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            if obj.size == 0:
                return np.zeros, (obj.shape, obj.dtype.str)
            return np.array, (obj.tolist(), obj.dtype.str)
        if isinstance(obj, np.generic):
            return type(obj.item()), (obj.item(),)
        return NotImplemented


def write_label(path: str | Path, label: dict) -> None:
    """Write an SPD-style label dict (numpy arrays, int and str lists) readable by any NumPy version."""
    with Path(path).open("wb") as handle:
        _PortablePickler(handle, protocol=2).dump(label)


def _read_png(path: Path) -> np.ndarray:
    from hoigen.render.png import decode_png

    return decode_png(path.read_bytes())


def _write_png(path: Path, image: np.ndarray) -> None:
    from hoigen.render.png import encode_png

    path.write_bytes(encode_png(np.ascontiguousarray(image)))


# ---------------------------------------------------------------------------------------------------------------
# objects in a frame


@dataclass
class _Model:
    """An object at one metric scale, ready to grasp and render.

    ``asset`` is in hoigen's canonical frame (metres, bounding-box centred); ``canonical - shift`` is the NOCS
    model frame times ``scale``, so NOCS = (canonical - shift) / scale.
    """

    asset: ObjectAsset
    shift: np.ndarray
    scale: float
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    albedo: Any
    _sampler: ContactGraspSampler | None = None

    def sampler(self, hand: HandModel, config: GraspConfig) -> ContactGraspSampler:
        """The object's grasp sampler (its distance field also serves the collision checks), made once."""
        if self._sampler is None or self._sampler.hand is not hand or self._sampler.config != config:
            self._sampler = ContactGraspSampler(self.asset, hand, config)
        return self._sampler


def _make_model(asset: ObjectAsset, shift: np.ndarray, scale: float, fallback_color: np.ndarray) -> _Model:
    from hoigen.render.labels import vertex_normals
    from hoigen.render.shading import MeshAlbedo

    vertices = np.asarray(asset.mesh.vertices, dtype=np.float64)
    faces = np.asarray(asset.mesh.faces, dtype=np.int64)
    return _Model(
        asset=asset,
        shift=np.asarray(shift, dtype=np.float64),
        scale=float(scale),
        vertices=vertices,
        faces=faces,
        normals=vertex_normals(vertices, faces),
        albedo=MeshAlbedo(asset.mesh, fallback_color),
    )


@dataclass
class _Placed:
    """An object placed in a frame: ``T_cam_obj`` maps the model's canonical frame to the camera (OpenCV)."""

    model: _Model
    T_cam_obj: np.ndarray
    meta: MetaLine
    label_index: int | None = None


class _ModelCache:
    """NOCS models of a root, loaded once per (file, scale); a few recent ones are kept."""

    def __init__(self, models_dir: Path, seed: int, size: int = 24):
        self.models_dir = models_dir
        self.seed = seed
        self.size = size
        self._base: OrderedDict[Path, ObjectAsset] = OrderedDict()
        self._scaled: OrderedDict[tuple, _Model] = OrderedDict()

    def path(self, synset: str, model_id: str) -> Path:
        return self.models_dir / synset / model_id / "model.obj"

    def _load_base(self, path: Path, model_id: str) -> ObjectAsset:
        from hoigen.objects.folder import ObjectEntry, load_object

        if path in self._base:
            self._base.move_to_end(path)
            return self._base[path]
        if not path.is_file():
            raise FileNotFoundError(
                f"NOCS object model {path} not found (instance model '{model_id}'); the label names it, so "
                f"{self.models_dir} must hold <synset>/<model_id>/model.obj as in NOCS's obj_models"
            )
        from hoigen.exports.nocs import read_camera_model

        entry = ObjectEntry(model_id, path, str(path.relative_to(self.models_dir.parent.parent)))
        asset = load_object(entry, units="m")
        # CAMERA models are stored z-flipped: read them as NOCS/SPD do, into the frame of the labels
        unflipped = read_camera_model(path)
        asset = make_asset(
            unflipped,
            object_id=asset.id,
            source=asset.source,
            category=asset.category,
            class_id=asset.class_id,
            symmetry=asset.symmetry,
            up=np.array([0.0, 1.0, 0.0]),
            units="m",
            repair=False,
        )
        self._base[path] = asset
        if len(self._base) > self.size:
            self._base.popitem(last=False)
        return asset

    def get(self, synset: str, model_id: str, class_id: int, scale: float) -> _Model:
        path = self.path(synset, model_id)
        key = (path, round(float(scale), 9))
        if key in self._scaled:
            self._scaled.move_to_end(key)
            return self._scaled[key]
        base = self._load_base(path, model_id)
        mesh = base.mesh.copy()
        mesh.apply_scale(scale)
        category = CLASS_NAMES.get(class_id, model_id)
        try:
            asset = make_asset(
                mesh,
                object_id=model_id,
                source=base.source,
                category=category,
                class_id=class_id if class_id in CLASS_NAMES else 0,
                symmetry=NOCS_SYMMETRY.get(category),
                up=np.array([0.0, 1.0, 0.0]),
                units="m",
                repair=False,
                info=dict(base.info, nocs_scale=float(scale)),
            )
        except ObjectError as exc:
            raise ObjectError(f"{path} at label scale {scale:.4g} m: {exc}") from exc
        # base canonical = model + base.offset; asset canonical = scale * base canonical + asset.offset
        shift = scale * base.offset + asset.offset
        color = np.random.default_rng([self.seed, zlib.crc32(model_id.encode())]).uniform(0.15, 0.8, 3)
        model = _make_model(asset, shift, scale, color)
        self._scaled[key] = model
        if len(self._scaled) > self.size:
            self._scaled.popitem(last=False)
        return model


# ---------------------------------------------------------------------------------------------------------------
# rendering several objects and a hand


@dataclass
class _Scene:
    """One rendered frame (H x W): ``index`` -1 nothing, k the k-th placed object, len(placed) the hand."""

    rgb: np.ndarray  # (H, W, 3) float sRGB in [0, 1]
    depth: np.ndarray  # (H, W) float metres, 0 where nothing
    index: np.ndarray  # (H, W) int64
    nocs: np.ndarray  # (H, W, 3) float NOCS coordinates on object pixels


class _SceneRenderer:
    """One GL context drawing any number of objects and a hand per frame (ids 1..n objects, n + 1 the hand)."""

    def __init__(self, intrinsics: Intrinsics):
        from hoigen.render.gl import IdRasterizer

        self.intrinsics = intrinsics
        self.raster = IdRasterizer(intrinsics.width, intrinsics.height)
        self._keys: list = []

    def close(self) -> None:
        self.raster.close()

    def render(
        self,
        placed: list[_Placed],
        hand_vertices: np.ndarray | None,
        hand_faces: np.ndarray,
        appearance,
        background: np.ndarray,
    ) -> _Scene:
        """Draw ``placed`` and the hand (``hand_vertices`` (V, 3) camera frame, metres; None for no hand) over
        ``background`` (H, W, 3) float sRGB, lit by ``appearance``."""
        from hoigen.render.labels import interpolate, pixel_hits, vertex_normals
        from hoigen.render.shading import linear_to_srgb, shade

        intr = self.intrinsics
        K = intr.K
        for key in self._keys:
            self.raster.remove(key)
        self._keys = []
        meshes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for k, p in enumerate(placed):
            key = ("object", k)
            self.raster.set_mesh(key, p.model.vertices, p.model.faces, k + 1, p.T_cam_obj)
            self._keys.append(key)
            meshes[k + 1] = (apply_transform(p.T_cam_obj, p.model.vertices), p.model.faces)
        hand_id = len(placed) + 1
        if hand_vertices is not None:
            self.raster.set_mesh("hand", hand_vertices, hand_faces, hand_id, np.eye(4))
            self._keys.append("hand")
            meshes[hand_id] = (hand_vertices, hand_faces)
        instance, face, _ = self.raster.rasterize(K)
        hits = pixel_hits(instance, face, meshes, K)

        H, W = intr.height, intr.width
        nocs = np.zeros((H, W, 3))
        rgb_lin = np.zeros((len(hits.ys), 3))
        for rid, (cam_vertices, faces) in meshes.items():
            sel = hits.select(rid)
            if len(sel) == 0:
                continue
            if rid == hand_id:
                vnormals = vertex_normals(cam_vertices, faces)
                base = np.broadcast_to(appearance.skin, (len(sel), 3))
            else:
                p = placed[rid - 1]
                vnormals = p.model.normals @ p.T_cam_obj[:3, :3].T
                base = p.model.albedo(hits, sel, faces)
                canonical = interpolate(hits, sel, faces, p.model.vertices)
                nocs[hits.ys[sel], hits.xs[sel]] = (canonical - p.model.shift) / p.model.scale
            n = interpolate(hits, sel, faces, vnormals)
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
            n[hits.backfacing[sel]] *= -1.0
            rgb_lin[sel] = shade(appearance, base, n, hits.points[sel])
        rgb = np.array(background, dtype=np.float64, copy=True)
        rgb[hits.ys, hits.xs] = linear_to_srgb(rgb_lin)
        depth = np.zeros((H, W))
        depth[hits.ys, hits.xs] = hits.points[:, 2]
        return _Scene(rgb=rgb, depth=depth, index=instance.astype(np.int64) - 1, nocs=nocs)


@dataclass
class _Original:
    """What the original frame gives the composition (any may be None)."""

    color: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    depth_mm: np.ndarray | None = None  # (H, W) uint16
    mask: np.ndarray | None = None  # (H, W) uint8 instance ids, 255 background


@dataclass
class _Frame:
    """The NOCS files of one HOI frame, as arrays, plus what the label and report need."""

    color: np.ndarray
    coord: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    hand_mask: np.ndarray
    visible: list[int]  # visible pixels of each placed object
    hand_pixels: int
    kept_class0: list[MetaLine] = field(default_factory=list)


def _compose(
    scene: _Scene,
    placed: list[_Placed],
    original: _Original | None,
    keep_class0: list[MetaLine],
) -> _Frame:
    """NOCS arrays of a rendered scene, the original frame filling what the render leaves."""
    n = len(placed)
    index = scene.index.copy()
    rgb8 = np.clip(np.round(scene.rgb * 255.0), 0, 255).astype(np.uint8)
    depth_mm = np.full(index.shape, CAMERA_DEPTH_INVALID, np.int64)
    rendered = index >= 0
    depth_mm[rendered] = np.clip(np.round(scene.depth[rendered] * 1000.0), 1, CAMERA_DEPTH_INVALID - 1)
    orig_depth = None
    if original is not None and original.depth_mm is not None:
        orig_depth = original.depth_mm.astype(np.int64)
        orig_valid = (orig_depth > 0) & (orig_depth < CAMERA_DEPTH_INVALID)
        depth_mm[~rendered] = orig_depth[~rendered]
        # the original scene (table, distractors) is in front of the hand there: it hides the hand
        hidden = (index == n) & orig_valid & (orig_depth < scene.depth * 1000.0 - _HAND_OCCLUSION * 1000.0)
        if hidden.any():
            index[hidden] = -1
            depth_mm[hidden] = orig_depth[hidden]
            if original.color is not None:
                rgb8[hidden] = original.color[hidden]
    mask = np.full(index.shape, MASK_BACKGROUND, np.uint8)
    for k, p in enumerate(placed):
        mask[index == k] = p.meta.inst_id
    kept = []
    if original is not None and original.mask is not None:
        for line in keep_class0:
            carried = (original.mask == line.inst_id) & (index < 0)
            if carried.any():
                mask[carried] = line.inst_id
                kept.append(line)
    nocs_objects = np.isin(index, [k for k, p in enumerate(placed) if p.meta.class_id in CLASS_NAMES])
    hand = index == n
    return _Frame(
        color=rgb8,
        coord=encode_coord(scene.nocs, nocs_objects),
        depth=encode_camera_depth(depth_mm),
        mask=np.repeat(mask[..., None], 3, axis=2),
        hand_mask=np.where(hand, 255, 0).astype(np.uint8),
        visible=[int((index == k).sum()) for k in range(n)],
        hand_pixels=int(hand.sum()),
        kept_class0=kept,
    )


def _bbox_yxyx(mask: np.ndarray) -> list[int]:
    """[y1, x1, y2, x2] (exclusive max) of a bool mask; zeros when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return [0, 0, 0, 0]
    return [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]


def _label(frame: _Frame, placed: list[_Placed]) -> dict:
    """SPD-style label of the visible NOCS-class objects (class 0 is never labelled, as in NOCS)."""
    ids = frame.mask[..., 0]
    rows = [k for k, p in enumerate(placed) if frame.visible[k] > 0 and p.meta.class_id in CLASS_NAMES]
    poses = [_nocs_pose(placed[k]) for k in rows]
    return {
        "class_ids": [placed[k].meta.class_id for k in rows],
        "bboxes": np.array([_bbox_yxyx(ids == placed[k].meta.inst_id) for k in rows], np.int32).reshape(
            -1, 4
        ),
        "scales": np.array([placed[k].model.scale for k in rows], np.float32),
        "rotations": np.array([R for R, _ in poses], np.float32).reshape(-1, 3, 3),
        "translations": np.array([t for _, t in poses], np.float32).reshape(-1, 3),
        "instance_ids": [placed[k].meta.inst_id for k in rows],
        "model_list": [placed[k].meta.model_id for k in rows],
    }


def _nocs_pose(p: _Placed) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) mapping the NOCS model frame times the scale to the camera: camera = R (scale * nocs) + t."""
    R = p.T_cam_obj[:3, :3]
    return R, p.T_cam_obj[:3, 3] + R @ p.model.shift


def _placement(R: np.ndarray, t: np.ndarray, model: _Model) -> np.ndarray:
    """``T_cam_obj`` of the canonical frame for a NOCS pose (R, t): camera = R (canonical - shift) + t."""
    return make_transform(R, t - R @ model.shift)


def _write_frame(
    folder: Path, stem: str, frame: _Frame, meta: list[MetaLine], label: dict, extra: dict
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / stem
    _write_png(Path(f"{base}_color.png"), frame.color)
    _write_png(Path(f"{base}_coord.png"), frame.coord)
    _write_png(Path(f"{base}_depth.png"), frame.depth)
    _write_png(Path(f"{base}_mask.png"), frame.mask)
    _write_png(Path(f"{base}_hand_mask.png"), frame.hand_mask)
    write_meta(Path(f"{base}_meta.txt"), meta)
    write_label(Path(f"{base}_label.pkl"), label)
    Path(f"{base}_hoi.json").write_text(json.dumps(extra, indent=1))


# ---------------------------------------------------------------------------------------------------------------
# grasping one object of a frame


@dataclass
class _HOI:
    grasp: Grasp
    hand_vertices: np.ndarray  # (V, 3) camera frame
    hand_params: Any  # HandParams, camera frame
    joints3d: np.ndarray  # (21, 3) camera frame
    frame: _Frame
    conflicts: int


def _hand_conflicts(
    hand_cam: np.ndarray,
    placed: list[_Placed],
    target: int,
    table: bool,
    hand: HandModel,
    config: GraspConfig,
) -> int:
    """Hand vertices (V, 3, camera frame) inside another object of the frame, or (``table``) below the grasped
    object's base."""
    count = 0
    for k, p in enumerate(placed):
        local = apply_transform(invert_transform(p.T_cam_obj), hand_cam)
        lo, hi = p.model.asset.mesh.bounds
        if k == target:
            if table:
                up = p.model.asset.up
                base = float(np.min(np.asarray(p.model.asset.mesh.bounding_box.vertices) @ up))
                count += int(np.sum(local @ up < base - _TABLE_TOLERANCE))
            continue
        near = np.all((local > lo - 0.005) & (local < hi + 0.005), axis=1)
        if near.any():
            sdf = p.model.sampler(hand, config).sdf
            count += int(np.sum(sdf(local[near]) < -_COLLISION_DEPTH))
    return count


def _grasp_in_frame(
    placed: list[_Placed],
    target: int,
    hand: HandModel,
    grasp_config: GraspConfig,
    renderer: _SceneRenderer,
    appearance,
    background: np.ndarray,
    original: _Original | None,
    keep_class0: list[MetaLine],
    rng: np.random.Generator,
    tries: int,
    table: bool,
) -> _HOI | None:
    """The first of ``tries`` grasps of ``placed[target]`` that meets every check, else the best acceptable one
    (fewest conflicts), else None. Raises GraspError when no grasp of the object passes the quality gate."""
    p = placed[target]
    sampler = p.model.sampler(hand, grasp_config)
    best: _HOI | None = None
    error: GraspError | None = None
    for _ in range(tries):
        try:
            grasp = sampler.sample(rng)
        except GraspError as exc:
            error = exc
            continue
        rest_wrist = hand.rest_joints(grasp.params.betas[0])[0]
        params = transform_hand_params(grasp.params, p.T_cam_obj, rest_wrist)
        out = hand.forward(params)
        vertices = out.vertices[0]
        if vertices[:, 2].min() < 0.05:
            continue  # the hand reaches behind the camera
        conflicts = _hand_conflicts(vertices, placed, target, table, hand, grasp_config)
        scene = renderer.render(placed, vertices, np.asarray(hand.faces), appearance, background)
        frame = _compose(scene, placed, original, keep_class0)
        if frame.hand_pixels < MIN_HAND_PIXELS or frame.visible[target] < MIN_VISIBLE_PIXELS:
            continue
        hoi = _HOI(grasp, vertices, params, out.joints[0], frame, conflicts)
        if conflicts == 0:
            return hoi
        if best is None or conflicts < best.conflicts:
            best = hoi
    if best is None and error is not None:
        raise error
    return best


def _hoi_record(
    hoi: _HOI, target: _Placed, intrinsics: Intrinsics, hand: HandModel, appearance, extra: dict
) -> dict:
    R, t = _nocs_pose(target)
    return {
        **extra,
        "grasped": {
            "inst_id": target.meta.inst_id,
            "class_id": target.meta.class_id,
            "synset": target.meta.synset,
            "model_id": target.meta.model_id,
            "scale": target.model.scale,
            "rotation": R.tolist(),
            "translation": t.tolist(),
        },
        "hand": {
            "model": hand.name,
            "mano": {k: v[0] for k, v in hoi.hand_params.to_dict().items()},
            "joints3d": hoi.joints3d.tolist(),
            "joints2d": intrinsics.project(hoi.joints3d).tolist(),
            "pixels": hoi.frame.hand_pixels,
            "conflicting_vertices": hoi.conflicts,
        },
        "grasp": {k: v for k, v in hoi.grasp.to_dict().items() if k != "params"},
        "camera": intrinsics.to_dict(),
        "appearance": appearance.metadata(),
    }


# ---------------------------------------------------------------------------------------------------------------
# the recipe


def _check_args(mode, ratio, num_frames, class0, image, background, grasp_tries, seed) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    number = (int, float, np.integer, np.floating)
    if isinstance(ratio, bool) or not isinstance(ratio, number) or not np.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio must be a number >= 0, got {ratio!r}")
    if mode == "replace" and ratio > 1:
        raise ValueError(
            f"mode='replace' replaces a fraction of the originals, so ratio must be in [0, 1], got {ratio}; "
            "use mode='add' to add more HOI frames than originals"
        )
    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1
    ):
        raise ValueError(f"num_frames must be a positive int or None (all frames), got {num_frames!r}")
    if class0 not in CLASS0_POLICIES:
        raise ValueError(f"class0 must be one of {CLASS0_POLICIES}, got {class0!r}")
    if image not in IMAGES:
        raise ValueError(
            f"image must be 'render', got {image!r}; photoreal HOIDiffusion frames ('photo') are not available in "
            "this version"
        )
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if isinstance(grasp_tries, bool) or not isinstance(grasp_tries, int) or grasp_tries < 1:
        raise ValueError(f"grasp_tries must be an int >= 1, got {grasp_tries!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def _prepare_dir(path: Path, overwrite: bool) -> None:
    """Fail on a non-empty existing output folder unless ``overwrite`` (then it is removed)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} exists and is not a folder; remove it or choose another out")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path} already holds files; pass overwrite=True to replace them")
        shutil.rmtree(path)


def _publish(partial: Path, final: Path, report: dict, list_path: Path, lines: list[str]) -> None:
    """Write the report into the finished ``partial`` folder, move it to ``final`` (replacing an older one) and
    write the list file that points into it."""
    (partial / "hoi_manifest.json").write_text(json.dumps(report, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    _write_list(list_path, lines)


def _write_list(path: Path, names: list[str]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(n + "\n" for n in names))
    os.replace(tmp, path)


def _original_frames(camera_dir: Path, split: str) -> tuple[list[str], str]:
    """Names of the original frames (relative to ``CAMERA/``) and where they came from."""
    list_file = camera_dir / f"{split}_list.txt"
    if list_file.is_file():
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        bad = [n for n in names if not _FRAME_NAME.match(n)]
        if bad:
            raise ValueError(f"{list_file}: lines must look like '{split}/00000/0000', got {bad[:3]}")
        return names, str(list_file)
    names = sorted(
        f"{split}/{p.parent.name}/{p.name[: -len('_color.png')]}"
        for p in (camera_dir / split).glob("*/*_color.png")
    )
    return names, f"{camera_dir / split}/*/*_color.png"


def _link(link: Path, target: Path) -> str:
    """Make ``link`` a symbolic link to ``target`` (kept when it already is one)."""
    if link.is_symlink() and link.resolve() == target.resolve():
        return str(link)
    if link.exists() or link.is_symlink():
        raise FileExistsError(
            f"{link} exists and is not a link to {target}; choose another out or remove it (out/CAMERA/<split> "
            "and out/obj_models link to the originals)"
        )
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=True)
    return str(link)


def nocs_augment(
    nocs_root: str | Path | None = None,
    out: str | Path | None = None,
    *,
    ratio: float = 1.0,
    mode: str = "add",
    num_frames: int | None = None,
    seed: int = 0,
    class0: str = "skip",
    split: str = "train",
    image: str = "render",
    background: str = "original",
    categories: tuple[str, ...] = (),
    hand: HandModel | None = None,
    grasp: GraspConfig | None = None,
    render: RenderConfig | None = None,
    camera: CameraConfig | None = None,
    grasp_tries: int = 3,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """HOI frames in the NOCS (CAMERA) layout and a mixed training list; see the module docstring for the recipe.

    Args:
        nocs_root: a NOCS data root (``CAMERA/<split>/``, ``obj_models/<split>/``); None generates NOCS-layout
            data from the built-in categories instead.
        out: where to write; default ``nocs_root`` (next to the originals). Required without ``nocs_root``.
        ratio: HOI frames per original (``add``) or the fraction of originals replaced (``replace``, <= 1).
        mode: ``add`` or ``replace``.
        num_frames: with a root, use a seeded random subset of this many originals (default all); without, the
            number of frames to generate (required).
        seed: run seed; the same seed gives the same frames.
        class0: ``skip`` or ``keep`` distractors (class 0), see the module docstring.
        split: CAMERA split (``train``, ``val``).
        image: ``render`` (photoreal appearance will be another value).
        background: with a root, ``original`` (the original colour image and depth) or ``render``.
        categories: built-in categories for the generated data (default all six).
        hand: hand model (default hoigen's built-in hand).
        grasp: contact-grasp configuration; render: appearance; camera: camera sampler of the generated data
            (its preset is replaced by ``nocs-camera``).
        grasp_tries: grasps tried per object before the next object of the frame is tried.
        overwrite: replace an existing HOI output folder.
        progress: called as ``progress(done, total)`` after each written frame.

    Returns:
        A JSON-ready report (also written to the HOI folder as ``hoi_manifest.json``): counts of originals, HOI
        frames, failures, class-0 instances skipped/kept, the list file, and one record per HOI frame.

    Raises:
        FileNotFoundError: no ``CAMERA/<split>`` or ``obj_models`` (or ``obj_models/<split>``, or a model file)
            in the root, or no original frame with an SPD ``_label.pkl``.
        ValueError: a bad argument or a malformed meta / label file. FileExistsError: output exists.
    """
    _check_args(mode, ratio, num_frames, class0, image, background, grasp_tries, seed)
    num_frames = None if num_frames is None else int(num_frames)
    if hand is None:
        from hoigen.hands import BuiltinHand

        hand = BuiltinHand()
    grasp = grasp or GraspConfig()
    render = render or RenderConfig()
    if nocs_root is None:
        if out is None:
            raise ValueError("out is required when no nocs_root is given (where to write the generated data)")
        if num_frames is None:
            raise ValueError("num_frames is required without a nocs_root: how many frames to generate")
        return _generate(
            Path(out),
            num_frames,
            int(seed),
            split,
            categories,
            hand,
            grasp,
            render,
            camera,
            grasp_tries,
            overwrite,
            progress,
        )
    return _augment(
        Path(nocs_root),
        Path(out) if out is not None else Path(nocs_root),
        float(ratio),
        mode,
        num_frames,
        int(seed),
        class0,
        split,
        background,
        hand,
        grasp,
        render,
        grasp_tries,
        overwrite,
        progress,
    )


def _read_original(camera_dir: Path, name: str, want_images: bool) -> tuple[list[MetaLine], dict, _Original]:
    base = camera_dir / name
    meta = read_meta(Path(f"{base}_meta.txt"))
    label = read_label(Path(f"{base}_label.pkl"))
    original = _Original()
    if want_images:
        W, H = 640, 480
        for attr, suffix in (("color", "color"), ("depth_mm", "depth"), ("mask", "mask")):
            path = Path(f"{base}_{suffix}.png")
            if not path.is_file():
                continue
            try:
                image = _read_png(path)
            except ValueError as exc:
                logger.warning("%s: unreadable (%s); not used", path, exc)
                continue
            if image.shape[:2] != (H, W):
                logger.warning("%s: %s, not %dx%d; not used", path, image.shape, W, H)
                continue
            if attr == "color":
                image = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
                original.color = image.astype(np.uint8)
            elif attr == "depth_mm":
                original.depth_mm = decode_camera_depth(image[..., :3] if image.ndim == 3 else image)
            else:
                original.mask = (image[..., 0] if image.ndim == 3 else image).astype(np.uint8)
    return meta, label, original


def _place_objects(meta: list[MetaLine], label: dict, cache: _ModelCache, class0: str) -> list[_Placed]:
    """The labelled objects of a frame in their poses (class 0 only when ``class0="keep"``)."""
    by_id = {m.inst_id: m for m in meta}
    placed = []
    for i, inst_id in enumerate(label["instance_ids"]):
        class_id = label["class_ids"][i]
        if class_id == 0 and class0 == "skip":
            continue
        model_id = label["model_list"][i]
        line = by_id.get(inst_id)
        synset = line.synset if line else NOCS_SYNSETS.get(CLASS_NAMES.get(class_id, ""), "0")
        model = cache.get(synset, model_id, class_id, label["scales"][i])
        T = _placement(label["rotations"][i], label["translations"][i], model)
        placed.append(_Placed(model, T, MetaLine(inst_id, class_id, synset, model_id), i))
    return placed


def _augment(
    root: Path,
    out: Path,
    ratio: float,
    mode: str,
    num_frames: int | None,
    seed: int,
    class0: str,
    split: str,
    background: str,
    hand: HandModel,
    grasp_config: GraspConfig,
    render_config: RenderConfig,
    grasp_tries: int,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
) -> dict:
    from hoigen.render.shading import sample_appearance

    started = time.time()
    camera_dir = root / "CAMERA"
    if not (camera_dir / split).is_dir():
        raise FileNotFoundError(
            f"{camera_dir / split} not found: nocs_root must be a NOCS data root holding CAMERA/{split}/ "
            f"(CAMERA/{split}/%05d/%04d_color.png ...)"
        )
    models_dir = root / "obj_models" / split
    if not (root / "obj_models").is_dir():
        raise FileNotFoundError(
            f"{root / 'obj_models'} not found: the NOCS object models (obj_models/{split}/<synset>/<model_id>/"
            "model.obj, from NOCS's obj_models.zip) are needed to grasp and render the objects"
        )
    if not models_dir.is_dir():
        raise FileNotFoundError(
            f"{models_dir} not found: obj_models has no '{split}' models (<synset>/<model_id>/model.obj)"
        )
    originals, list_source = _original_frames(camera_dir, split)
    if not originals:
        raise FileNotFoundError(f"no original frames in {list_source}")
    select_rng = np.random.default_rng([seed, 0])
    if num_frames is not None and num_frames < len(originals):
        pool = sorted(select_rng.choice(len(originals), num_frames, replace=False).tolist())
        originals = [originals[i] for i in pool]
    candidates = [n for n in originals if Path(f"{camera_dir / n}_label.pkl").is_file()]
    candidates = [n for n in candidates if Path(f"{camera_dir / n}_meta.txt").is_file()]
    if not candidates:
        raise FileNotFoundError(
            f"none of the {len(originals)} original frames has both _meta.txt and an SPD-style _label.pkl "
            f"(e.g. {camera_dir / originals[0]}_label.pkl); make the labels with SPD's data preprocessing"
        )
    target = int(round(ratio * len(originals)))
    order = [candidates[i] for i in select_rng.permutation(len(candidates))]

    in_place = out.resolve() == root.resolve()
    out_camera = out / "CAMERA"
    hoi_split = f"{split}_hoi"
    hoi_dir = out_camera / hoi_split
    _prepare_dir(hoi_dir, overwrite)
    links = {}
    if not in_place:
        links[f"CAMERA/{split}"] = _link(out_camera / split, camera_dir / split)
        links["obj_models"] = _link(out / "obj_models", root / "obj_models")
    intr = intrinsics_preset("nocs-camera")
    cache = _ModelCache(models_dir, seed)
    renderer = _SceneRenderer(intr)
    partial = out_camera / f".{hoi_split}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    records: list[dict] = []
    failed: list[dict] = []
    replaced: dict[str, str] = {}
    added: list[str] = []
    class0_stats = {"policy": class0, "skipped": 0, "kept": 0, "not_visible": 0}
    unlabelled = 0
    variants: dict[str, int] = {}
    attempts = 0
    max_attempts = target + len(order) if mode == "add" else len(order)
    try:
        while len(records) < target and attempts < max_attempts:
            source = order[attempts % len(order)]
            attempts += 1
            variant = variants.get(source, 0)
            variants[source] = variant + 1
            match = _FRAME_NAME.match(source)
            folder, image_no = int(match["folder"]), int(match["image"])
            rngs = np.random.default_rng([seed, 1, folder, image_no, variant]).spawn(3)
            try:  # a malformed meta / label or an unusable mesh skips the frame (a missing model is an error)
                meta, label, original = _read_original(camera_dir, source, background == "original")
                placed = _place_objects(meta, label, cache, class0)
            except ValueError as exc:
                failed.append({"source": source, "reason": str(exc)})
                logger.warning("skipping %s: %s", source, exc)
                continue
            labelled = set(label["instance_ids"])
            class0_ids = {m.inst_id for m in meta if m.class_id == 0}
            class0_ids |= {i for i, c in zip(label["instance_ids"], label["class_ids"]) if c == 0}
            # class 0 without a pose (CAMERA's distractors): carried over from the original mask when kept
            carry = (
                [m for m in meta if m.class_id == 0 and m.inst_id not in labelled] if class0 == "keep" else []
            )
            graspable = [k for k, p in enumerate(placed) if p.meta.class_id in CLASS_NAMES]
            if not graspable:
                failed.append({"source": source, "reason": "no labelled NOCS-class object"})
                continue
            start = int(rngs[0].integers(len(graspable)))
            appearance = sample_appearance(render_config.appearance, intr.width, intr.height, rngs[2])
            use_original = background == "original" and original.color is not None
            back = original.color / 255.0 if use_original else appearance.background
            comp_original = original if background == "original" else None
            hoi, target_k, reasons = None, -1, []
            for j in range(len(graspable)):
                k = graspable[(start + variant + j) % len(graspable)]
                try:
                    hoi = _grasp_in_frame(
                        placed,
                        k,
                        hand,
                        grasp_config,
                        renderer,
                        appearance,
                        back,
                        comp_original,
                        carry,
                        rngs[1],
                        grasp_tries,
                        table=True,
                    )
                except GraspError as exc:
                    reasons.append(f"inst {placed[k].meta.inst_id}: {exc}")
                    continue
                if hoi is not None:
                    target_k = k
                    break
                reasons.append(
                    f"inst {placed[k].meta.inst_id}: no grasp left the hand ({MIN_HAND_PIXELS} px) and the object "
                    f"({MIN_VISIBLE_PIXELS} px) visible in {grasp_tries} tries"
                )
            if hoi is None:
                failed.append({"source": source, "reason": "; ".join(reasons)})
                logger.warning("no HOI frame from %s: %s", source, "; ".join(reasons))
                continue
            frame = hoi.frame
            number = len(records)
            name = frame_name(hoi_split, number)
            hoi_meta = [p.meta for p in placed] + frame.kept_class0
            unlabelled += sum(1 for m in meta if m.class_id != 0 and m.inst_id not in labelled)
            if class0 == "skip":
                class0_stats["skipped"] += len(class0_ids)
            else:
                shown = {m.inst_id for m in frame.kept_class0}
                shown |= {
                    p.meta.inst_id for k, p in enumerate(placed) if p.meta.class_id == 0 and frame.visible[k]
                }
                class0_stats["kept"] += len(shown)
                class0_stats["not_visible"] += len(class0_ids) - len(shown)
            extra = {
                "source": source,
                "variant": variant,
                "image": "render",
                "background": "original" if use_original else appearance.background_kind,
            }
            record = _hoi_record(hoi, placed[target_k], intr, hand, appearance, extra)
            stem_folder, stem = name.split("/", 1)[1].split("/")
            _write_frame(partial / stem_folder, stem, frame, hoi_meta, _label(frame, placed), record)
            records.append(
                {
                    "name": name,
                    "source": source,
                    "grasped": record["grasped"]["inst_id"],
                    "class_id": record["grasped"]["class_id"],
                    "objects": len(placed),
                    "hand_pixels": frame.hand_pixels,
                    "conflicting_vertices": hoi.conflicts,
                }
            )
            if mode == "replace":
                replaced[source] = name
            else:
                added.append(name)
            if progress is not None:
                progress(len(records), target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    finally:
        renderer.close()

    if mode == "replace":
        mixed = [replaced.get(n, n) for n in originals]
    else:
        mixed = list(originals) + added
    report = {
        "mode": mode,
        "ratio": ratio,
        "seed": seed,
        "split": split,
        "nocs_root": str(root),
        "out": str(out),
        "originals": len(originals),
        "originals_from": list_source,
        "requested": target,
        "hoi_frames": len(records),
        "shortfall": target - len(records),
        "list": str(out_camera / f"{split}_mixed_list.txt"),
        "list_counts": {
            "original": sum(1 for n in mixed if not n.startswith(hoi_split + "/")),
            "hoi": sum(1 for n in mixed if n.startswith(hoi_split + "/")),
        },
        "hoi_dir": str(hoi_dir),
        "links": links,
        "class0": class0_stats,
        "unlabelled_instances": unlabelled,
        "failed": failed,
        "image": "render",
        "background": background,
        "hand": hand.name,
        "camera": intr.to_dict(),
        "frames": records,
        "seconds": round(time.time() - started, 2),
    }
    _publish(partial, hoi_dir, report, out_camera / f"{split}_mixed_list.txt", mixed)
    if report["shortfall"]:
        logger.warning(
            "%d of %d HOI frames written (%d originals failed); see the report's 'failed'",
            len(records),
            target,
            len(failed),
        )
    return report


def _generate(
    out: Path,
    num_frames: int,
    seed: int,
    split: str,
    categories: tuple[str, ...],
    hand: HandModel,
    grasp_config: GraspConfig,
    render_config: RenderConfig,
    camera: CameraConfig | None,
    grasp_tries: int,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
) -> dict:
    """NOCS-layout HOI frames of built-in objects (one object and a hand per frame)."""
    import dataclasses

    from hoigen.objects import BuiltinSource
    from hoigen.render.shading import sample_appearance
    from hoigen.synth.recipe import stage_rngs

    started = time.time()
    unknown = [c for c in categories if c not in NOCS_CLASSES]
    if unknown:
        raise ValueError(f"categories must be built-in NOCS categories {tuple(NOCS_CLASSES)}, got {unknown}")
    source = BuiltinSource(tuple(categories))
    camera = dataclasses.replace(camera or CameraConfig(), preset="nocs-camera")
    intr = intrinsics_preset("nocs-camera")
    camera_dir = out / "CAMERA"
    split_dir = camera_dir / split
    models_dir = out / "obj_models" / split
    _prepare_dir(split_dir, overwrite)
    renderer = _SceneRenderer(intr)
    partial = camera_dir / f".{split}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    records, failed, names = [], [], []
    index = 0
    try:
        while len(records) < num_frames and index < 3 * num_frames + 10:
            rngs = stage_rngs(seed, index)
            index += 1
            obj = source.object_for(index - 1, rngs["object"])
            synset = NOCS_SYNSETS[obj.category]
            model = _make_model(obj, np.zeros(3), obj.scale, rngs["render"].uniform(0.15, 0.8, 3))
            cam = sample_camera(camera, rngs["camera"], target=np.zeros(3), up=obj.up)
            line = MetaLine(1, obj.class_id, synset, obj.id)
            placed = [_Placed(model, cam.T_cam_world.copy(), line, 0)]
            appearance = sample_appearance(render_config.appearance, intr.width, intr.height, rngs["render"])
            try:
                hoi = _grasp_in_frame(
                    placed,
                    0,
                    hand,
                    grasp_config,
                    renderer,
                    appearance,
                    appearance.background,
                    None,
                    [],
                    rngs["grasp"],
                    grasp_tries,
                    table=False,
                )
            except GraspError as exc:
                failed.append({"sample": index - 1, "object": obj.id, "reason": str(exc)})
                continue
            if hoi is None:
                failed.append({"sample": index - 1, "object": obj.id, "reason": "hand or object not visible"})
                continue
            number = len(records)
            name = frame_name(split, number)
            folder, stem = name.split("/")[1:]
            record = _hoi_record(
                hoi,
                placed[0],
                intr,
                hand,
                appearance,
                {
                    "source": None,
                    "sample": index - 1,
                    "object": obj.metadata(),
                    "image": "render",
                    "background": appearance.background_kind,
                    "seed": seed,
                },
            )
            _write_frame(partial / folder, stem, hoi.frame, [line], _label(hoi.frame, placed), record)
            from hoigen.exports.nocs import write_camera_model

            write_camera_model(models_dir / synset / obj.id, model.vertices / obj.scale, model.faces)
            names.append(name)
            records.append(
                {
                    "name": name,
                    "sample": index - 1,
                    "object": obj.id,
                    "class_id": obj.class_id,
                    "hand_pixels": hoi.frame.hand_pixels,
                }
            )
            if progress is not None:
                progress(len(records), num_frames)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    finally:
        renderer.close()
    report = {
        "mode": "generate",
        "seed": seed,
        "split": split,
        "nocs_root": None,
        "out": str(out),
        "requested": num_frames,
        "hoi_frames": len(records),
        "shortfall": num_frames - len(records),
        "list": str(camera_dir / f"{split}_list.txt"),
        "frames_dir": str(split_dir),
        "models_dir": str(models_dir),
        "categories": list(source.categories),
        "class0": {"policy": "n/a (built-in objects are NOCS classes)", "skipped": 0, "kept": 0},
        "failed": failed,
        "image": "render",
        "hand": hand.name,
        "camera": intr.to_dict(),
        "frames": records,
        "seconds": round(time.time() - started, 2),
    }
    _publish(partial, split_dir, report, camera_dir / f"{split}_list.txt", names)
    return report


__all__ = [
    "CAMERA_DEPTH_INVALID",
    "MIN_HAND_PIXELS",
    "MetaLine",
    "decode_camera_depth",
    "decode_coord",
    "encode_camera_depth",
    "encode_coord",
    "frame_name",
    "nocs_augment",
    "read_label",
    "read_meta",
    "write_label",
    "write_meta",
]
