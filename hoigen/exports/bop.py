"""Export hoigen shards (SPEC §3) in the BOP layout (instance-level 6D object pose).

Layout written under ``out`` (BOP conventions: millimetres, OpenCV camera, row-major matrices, JSON keys are image
ids as strings)::

    <split>/%06d/                      # scene folders of at most ``images_per_scene`` images (BOP PBR: 1000)
        rgb/%06d.png                   # the shard's RGB render (PNG bytes copied unchanged)
        depth/%06d.png                 # uint16, value * depth_scale = mm (the shard's depth, copied unchanged)
        mask/%06d_%06d.png             # IMID_GTID, uint8 0/255: the object's amodal mask (the object alone)
        mask_visib/%06d_%06d.png       # IMID_GTID, uint8 0/255: its visible pixels (the shard's object mask)
        scene_camera.json              # cam_K (row-major 9), depth_scale
        scene_gt.json                  # [{obj_id, cam_R_m2c (row-major 9), cam_t_m2c (mm)}]
        scene_gt_info.json             # [{bbox_obj, bbox_visib, px_count_all, px_count_valid, px_count_visib,
                                       #   visib_fract}]
        scene_hand.json                # hoigen extra: the hand (an occluder, not a BOP object) and the source key
    models/obj_%06d.ply                # canonical mesh in mm (+ normals, colours or texture coordinates)
    models/models_info.json            # diameter, min_x/y/z, size_x/y/z (mm), symmetries_continuous
    models/models_hoigen.json          # hoigen extra: obj_id -> hoigen object id, source, category, class id...

Frames are numbered in shard order (sample by sample, frame by frame): frame ``g`` goes to scene
``g // images_per_scene`` as image ``g % images_per_scene``. Each image has one ground-truth instance (gt id 0):
the object. The hand is not a BOP object: it occludes the object (it is what makes ``mask`` and ``mask_visib``
differ) and its labels go to ``scene_hand.json``: ``hoigen_key`` (``s00000012/f003``), ``joints2d`` (21 x 2 px,
OpenPose order), ``joints3d_mm`` (21 x 3, camera frame, mm), ``bbox_hand`` (amodal, when the shards have it),
``bbox_visib_hand``, ``px_count_visib_hand``, ``visib_fract_hand`` (when present) and ``mano`` (hoigen's MANO
parameters of the frame, as in the shards: metres, camera frame).

**Object ids** — one BOP ``obj_id`` (from 1, in order of first appearance) per distinct object: per stored mesh
(its content address in the output folder's mesh store), id and symmetry label. A ``builtin:nocs`` run draws a new
random shape for every sample, so it gives one model per sample; a folder run reuses the id of an object each time
it comes round again. ``models_hoigen.json`` maps the ids back (hoigen id, source, category, stored mesh...).

**Models** — read from the mesh store next to the shards (:mod:`hoigen.datasets.meshes`): the shards and that
folder are all the export needs (not the object folder, not the synthesis recipe). hoigen's canonical frame
(bounding-box centre at the origin; NOCS-class objects in their NOCS orientation) is the BOP model frame; the PLY
holds its vertices x 1000. ``diameter`` is the largest distance between two vertices (on the convex hull).
``symmetries_continuous`` is ``[{"axis": up, "offset": [0, 0, 0]}]`` when the sample's meta says
``"continuous-up"`` — decided from the instance's geometry for folder objects
(:func:`hoigen.objects.categories.instance_symmetry`: a YCB can is, a mustard bottle is not), by construction for
the revolved built-in bottles, bowls and cans. A mug is symmetric only while its handle is hidden, which BOP cannot
express, so it gets none.

**Masks and boxes (bop_toolkit's conventions)** — ``mask_visib`` is the shard's object mask; ``mask`` (amodal) is
the silhouette of the stored mesh placed with ``T_cam_obj``, rasterised with the pixel-centre rule
(:func:`object_silhouette`), united with ``mask_visib``. As bop_toolkit's ``calc_gt_info``, the amodal silhouette is
computed on a canvas three times the image size (:func:`amodal_on_canvas`), so ``px_count_all`` and ``bbox_obj``
include the part of the object outside the image (``bbox_obj`` may then start at negative coordinates or end
beyond the image) and ``visib_fract = px_count_visib / px_count_all`` is below 1 for an object cut by the border.
Boxes follow ``calc_2d_bbox``: ``[x_min, y_min, x_max - x_min, y_max - y_min]`` of the mask's pixels (one less than
the pixel extent); ``px_count_valid`` counts visible pixels with a depth value. Empty boxes are
``[-1, -1, -1, -1]`` and ``visib_fract`` is 0 when the object is not in the canvas.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoigen.exports.common import MeshCache, check_image, frame_image, vertices_faces

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
SCENE_FILES = ("scene_camera.json", "scene_gt.json", "scene_gt_info.json", "scene_hand.json")
SYMMETRIC_UP = "continuous-up"
_RASTER_CHUNK = 1 << 21  # candidate pixels tested per vectorised batch
_MIN_DEPTH = 1e-9


# ---------------------------------------------------------------------------------------------------------------
# geometry


def object_silhouette(
    vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int
) -> np.ndarray:
    """(height, width) bool: pixels whose centre (integer coordinates) falls inside a projected triangle.

    Vectorised edge-function rasterisation of every triangle (no depth test: this is the mesh's amodal coverage).
    Triangles with a vertex at or behind the camera plane are left out.

    Args:
        vertices_cam: (V, 3) camera-frame (OpenCV) vertices, metres; faces: (F, 3) vertex indices; K: (3, 3).
    """
    mask = np.zeros((height, width), dtype=bool)
    tri = np.asarray(vertices_cam, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    if len(tri) == 0:
        return mask
    in_front = (tri[..., 2] > _MIN_DEPTH).all(axis=1)
    if not in_front.all():
        logger.debug("silhouette: %d triangles at or behind the camera left out", int((~in_front).sum()))
        tri = tri[in_front]
    projected = tri @ np.asarray(K, dtype=np.float64).T
    uv = projected[..., :2] / projected[..., 2:3]
    a, b, c = uv[:, 0], uv[:, 1], uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    x0 = np.maximum(np.ceil(uv[..., 0].min(axis=1)), 0)
    x1 = np.minimum(np.floor(uv[..., 0].max(axis=1)), width - 1)
    y0 = np.maximum(np.ceil(uv[..., 1].min(axis=1)), 0)
    y1 = np.minimum(np.floor(uv[..., 1].max(axis=1)), height - 1)
    keep = (x1 >= x0) & (y1 >= y0) & (area != 0) & np.isfinite(area)
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return mask
    x0, y0 = x0[idx].astype(np.int64), y0[idx].astype(np.int64)
    box_w = x1[idx].astype(np.int64) - x0 + 1
    counts = box_w * (y1[idx].astype(np.int64) - y0 + 1)
    a, b, c, sign = a[idx], b[idx], c[idx], np.sign(area[idx])
    ends = np.cumsum(counts)
    start = 0
    while start < len(idx):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _RASTER_CHUNK, side="right")), start + 1)
        n = counts[start:stop]
        t = np.repeat(np.arange(start, stop), n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        px = x0[t] + local % box_w[t]
        py = y0[t] + local // box_w[t]
        inside = np.ones(len(t), dtype=bool)
        for p, q in ((a, b), (b, c), (c, a)):
            p_t, q_t = p[t], q[t]
            edge = (q_t[:, 0] - p_t[:, 0]) * (py - p_t[:, 1]) - (q_t[:, 1] - p_t[:, 1]) * (px - p_t[:, 0])
            inside &= edge * sign[t] >= 0
        mask[py[inside], px[inside]] = True
        start = stop
    return mask


def mesh_diameter(vertices: np.ndarray) -> float:
    """Largest distance between two of ``vertices`` (N, 3), computed on their convex hull."""
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import cdist

    points = np.unique(np.asarray(vertices, dtype=np.float64), axis=0)
    if len(points) < 2:
        return 0.0
    try:
        points = points[ConvexHull(points).vertices]
    except (RuntimeError, ValueError):  # QhullError (a RuntimeError): flat or degenerate, use every vertex
        pass
    best = 0.0
    for start in range(0, len(points), 1024):
        best = max(best, float(cdist(points[start : start + 1024], points).max()))
    return best


def model_info(vertices_mm: np.ndarray, symmetry: str | None, up) -> dict:
    """The ``models_info.json`` record of a model (vertices in mm)."""
    lo, hi = vertices_mm.min(axis=0), vertices_mm.max(axis=0)
    info = {
        "diameter": mesh_diameter(vertices_mm),
        "min_x": float(lo[0]),
        "min_y": float(lo[1]),
        "min_z": float(lo[2]),
        "size_x": float(hi[0] - lo[0]),
        "size_y": float(hi[1] - lo[1]),
        "size_z": float(hi[2] - lo[2]),
    }
    if symmetry == SYMMETRIC_UP:
        axis = np.asarray(up, dtype=np.float64)
        axis = axis / np.linalg.norm(axis)
        info["symmetries_continuous"] = [{"axis": [float(v) for v in axis], "offset": [0.0, 0.0, 0.0]}]
    return info


# ---------------------------------------------------------------------------------------------------------------
# PLY


def write_ply(
    path: Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    texture_file: str | None = None,
) -> None:
    """Binary little-endian PLY as BOP models use it: float x y z [nx ny nz] [uchar red green blue]
    [float texture_u texture_v], faces ``list uchar int vertex_indices``, texture named by a ``TextureFile``
    comment."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    fields: list[tuple[str, str, np.ndarray]] = [
        (name, "<f4", vertices[:, k]) for k, name in enumerate(("x", "y", "z"))
    ]
    if normals is not None:
        fields += [(name, "<f4", normals[:, k]) for k, name in enumerate(("nx", "ny", "nz"))]
    if colors is not None:
        fields += [(name, "u1", colors[:, k]) for k, name in enumerate(("red", "green", "blue"))]
    if uv is not None:
        fields += [("texture_u", "<f4", uv[:, 0]), ("texture_v", "<f4", uv[:, 1])]
    vertex_data = np.empty(len(vertices), dtype=[(name, dtype) for name, dtype, _ in fields])
    for name, _, values in fields:
        vertex_data[name] = values
    face_data = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_data["n"] = 3
    face_data["v"] = faces
    ply_types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment hoigen BOP model (units: mm)"]
    if texture_file:
        header.append(f"comment TextureFile {texture_file}")
    header.append(f"element vertex {len(vertices)}")
    header += [f"property {ply_types[dtype]} {name}" for name, dtype, _ in fields]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertex_data.tobytes())
        fh.write(face_data.tobytes())


def _mesh_appearance(mesh) -> tuple[np.ndarray | None, np.ndarray | None, object]:
    """(vertex colours (V, 3) uint8, uv (V, 2), texture image) of a trimesh mesh; None where absent."""
    visual = getattr(mesh, "visual", None)
    kind = getattr(visual, "kind", None)
    if kind == "texture":
        uv = getattr(visual, "uv", None)
        material = getattr(visual, "material", None)
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if uv is not None and image is not None and len(uv) == len(mesh.vertices):
            return None, np.asarray(uv, dtype=np.float64), image
        return None, None, None
    if kind in ("face", "vertex"):
        colors = np.asarray(visual.vertex_colors)
        if colors.shape == (len(mesh.vertices), 4) or colors.shape == (len(mesh.vertices), 3):
            return colors[:, :3].astype(np.uint8), None, None
    return None, None, None


# ---------------------------------------------------------------------------------------------------------------
# objects


def object_key(meta: dict) -> tuple:
    """What identifies the object of a sample across samples: its stored mesh (content address) and labels."""
    obj = meta["object"]
    ref = obj.get("mesh") or {}
    return (ref.get("sha256"), obj.get("id"), obj.get("symmetry"))


@dataclass
class _Model:
    obj_id: int
    vertices: np.ndarray  # canonical frame, metres
    faces: np.ndarray


class _Models:
    """Assigns obj_ids, writes models (read from the mesh store), and keeps the geometry of recently used objects."""

    def __init__(self, folder: Path, cache_size: int = 32):
        self.folder = folder
        self.meshes = MeshCache(cache_size)
        self.ids: dict[tuple, int] = {}
        self.infos: dict[str, dict] = {}
        self.hoigen: dict[str, dict] = {}
        self._geometry: OrderedDict[int, _Model] = OrderedDict()
        self._cache_size = cache_size

    def model_for(self, sequence: dict) -> _Model:
        """The model of ``sequence``'s object (written to ``models/`` the first time it is seen)."""
        meta = sequence["meta"]
        ident = object_key(meta)
        obj_id = self.ids.get(ident)
        if obj_id is not None and obj_id in self._geometry:
            self._geometry.move_to_end(obj_id)
            return self._geometry[obj_id]
        mesh, _ = self.meshes.mesh(sequence)
        vertices, faces = vertices_faces(mesh)
        expected = float(meta["object"]["scale"])
        scale = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
        if not math.isclose(scale, expected, rel_tol=1e-6):
            raise ValueError(
                f"sample {sequence['key']}: its stored mesh has a bounding-box diagonal of {scale:.6g} m but "
                f"meta.json says scale {expected:.6g} m; the mesh store is not the one of these shards"
            )
        if obj_id is None:
            obj_id = len(self.ids) + 1
            self.ids[ident] = obj_id
            self._write(obj_id, meta["object"], mesh, vertices, faces)
        model = _Model(obj_id, vertices, faces)
        self._geometry[obj_id] = model
        if len(self._geometry) > self._cache_size:
            self._geometry.popitem(last=False)
        return model

    def _write(self, obj_id: int, obj: dict, mesh, vertices: np.ndarray, faces: np.ndarray) -> None:
        vertices_mm = vertices * 1000.0
        colors, uv, image = _mesh_appearance(mesh)
        texture_file = None
        if image is not None:
            texture_file = f"obj_{obj_id:06d}.png"
            image.save(self.folder / texture_file)
        normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
        write_ply(
            self.folder / f"obj_{obj_id:06d}.ply", vertices_mm, faces, normals, colors, uv, texture_file
        )
        up = obj.get("up", [0.0, 1.0, 0.0])
        self.infos[str(obj_id)] = model_info(vertices_mm, obj.get("symmetry"), up)
        self.hoigen[str(obj_id)] = {
            "id": obj.get("id"),
            "source": obj.get("source"),
            "category": obj.get("category"),
            "class_id": int(obj.get("class_id", 0)),
            "symmetry": obj.get("symmetry"),
            "up": [float(v) for v in up],
            "scale_m": float(obj["scale"]),
            "mesh": (obj.get("mesh") or {}).get("file"),
        }

    def finish(self) -> None:
        _write_json(self.folder / "models_info.json", self.infos)
        _write_json(self.folder / "models_hoigen.json", self.hoigen)


# ---------------------------------------------------------------------------------------------------------------
# scenes


def _write_json(path: Path, table: dict) -> None:
    """A ``{id: record}`` table as JSON, one record per line (the BOP toolkit's style), via a temporary file."""
    lines = [f"  {json.dumps(str(k))}: {json.dumps(v, separators=(', ', ': '))}" for k, v in table.items()]
    text = "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Scene:
    def __init__(self, folder: Path):
        self.folder = folder
        for sub in ("rgb", "depth", "mask", "mask_visib"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.tables: dict[str, dict] = {name: {} for name in SCENE_FILES}

    def flush(self) -> None:
        for name, table in self.tables.items():
            _write_json(self.folder / name, table)


def bop_bbox(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[int]:
    """bop_toolkit's ``calc_2d_bbox`` of a mask's pixels: ``[x_min, y_min, x_max - x_min, y_max - y_min]`` (w, h
    one less than the pixel counts), shifted by ``-offset`` (x, y); ``[-1, -1, -1, -1]`` when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [-1, -1, -1, -1]
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0 - offset[0], y0 - offset[1], int(xs.max()) - x0, int(ys.max()) - y0]


def amodal_on_canvas(
    vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int, visible: np.ndarray
) -> np.ndarray:
    """The object's amodal silhouette on BOP's enlarged canvas: (3 height, 3 width) bool, the image at
    ``[height:2 height, width:2 width]`` (bop_toolkit renders ``calc_gt_info`` masks on a 3x canvas), united with
    the ``visible`` (height, width) mask."""
    K_large = np.asarray(K, dtype=np.float64).copy()
    K_large[0, 2] += width
    K_large[1, 2] += height
    canvas = object_silhouette(vertices_cam, faces, K_large, 3 * width, 3 * height)
    canvas[height : 2 * height, width : 2 * width] |= visible
    return canvas


def _prepare(out: Path, split: str, overwrite: bool) -> None:
    split_dir, models = out / split, out / MODELS_DIR
    taken = (split_dir.is_dir() and any(split_dir.iterdir())) or (models / "models_info.json").exists()
    if taken:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a BOP export ({split}/ or {MODELS_DIR}/models_info.json); choose a new "
                "output folder or pass overwrite=True to replace it"
            )
        shutil.rmtree(split_dir, ignore_errors=True)
        shutil.rmtree(models, ignore_errors=True)
    split_dir.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)


def export_bop(
    shards,
    out,
    split: str = "train_pbr",
    images_per_scene: int = 1000,
    *,
    image: str = "rgb",
    overwrite: bool = False,
    progress: bool = False,
    verify: bool = True,
) -> dict:
    """Write the frames of ``shards`` in the BOP layout under ``out`` (see the module docstring).

    Args:
        shards: anything :func:`hoigen.datasets.reader.open_sequences` accepts.
        out: output folder (created); holds ``<split>/`` and ``models/``.
        split: name of the split folder (BOP: ``train_pbr``, ``test``...).
        images_per_scene: images per scene folder (BOP PBR training sets use 1000).
        image: the frame image written to ``rgb/`` (``"rgb"`` or ``"photo"``).
        overwrite: replace an existing export in ``out`` (its ``<split>/`` and ``models/`` folders); otherwise an
            existing one is a ``FileExistsError``.
        progress: show a progress bar (frames).
        verify: check every shard against its manifest first (``hoigen.datasets.integrity``); every copied image
            is decoded either way.

    Returns:
        a summary: ``images``, ``scenes``, ``objects`` (models written), ``split_dir`` and ``models_dir``.
    """
    from tqdm import tqdm

    from hoigen.datasets.integrity import decoded_png
    from hoigen.datasets.reader import open_sequences
    from hoigen.render.png import encode_png

    check_image(image)
    if isinstance(images_per_scene, bool) or not isinstance(images_per_scene, int) or images_per_scene < 1:
        raise ValueError(f"images_per_scene must be an int >= 1, got {images_per_scene!r}")
    split = str(split)
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise ValueError(f"split must be a plain folder name (e.g. 'train_pbr'), got {split!r}")
    out = Path(out)
    _prepare(out, split, overwrite)
    models = _Models(out / MODELS_DIR)
    scene: _Scene | None = None
    scene_id = -1
    count = 0
    bar = tqdm(unit="frame", desc="export bop", dynamic_ncols=True, disable=not progress)
    try:
        for sequence in open_sequences(shards, decode=False, verify=verify):
            meta, key = sequence["meta"], sequence["key"]
            kinds = {v: int(k) for k, v in meta.get("instances", {"1": "object", "2": "hand"}).items()}
            object_inst, hand_inst = kinds.get("object", 1), kinds.get("hand", 2)
            depth_scale = float(meta["depth_scale"])
            camera = meta["camera"]
            K = np.asarray(camera["K"], dtype=np.float64)
            width, height = int(camera["width"]), int(camera["height"])
            model = models.model_for(sequence)
            for t, frame in enumerate(sequence["frames"]):
                if count // images_per_scene != scene_id:
                    if scene is not None:
                        scene.flush()
                    scene_id = count // images_per_scene
                    scene = _Scene(out / split / f"{scene_id:06d}")
                im_id = count % images_per_scene
                labels = meta["frames"][t]
                mask = decoded_png(frame["mask"], sequence["url"], f"{key}.f{t:03d}.mask.png")
                depth = decoded_png(frame["depth"], sequence["url"], f"{key}.f{t:03d}.depth.png")
                picture = frame_image(sequence, t, image)
                decoded_png(picture, sequence["url"], f"{key}.f{t:03d}.{image}.png")
                if (
                    mask.shape != (height, width)
                    or depth.shape != (height, width)
                    or depth.dtype != np.uint16
                ):
                    raise ValueError(
                        f"sample {key} frame {t}: mask {mask.shape} / depth {depth.shape} {depth.dtype} do not "
                        f"match the {width}x{height} camera (uint16 depth expected)"
                    )
                T = np.asarray(labels["T_cam_obj"], dtype=np.float64)
                R, tr = T[:3, :3], T[:3, 3]
                visible = mask == object_inst
                canvas = amodal_on_canvas(model.vertices @ R.T + tr, model.faces, K, width, height, visible)
                amodal = canvas[height : 2 * height, width : 2 * width]
                n_all, n_visib = int(canvas.sum()), int(visible.sum())
                name = f"{im_id:06d}"
                (scene.folder / "rgb" / f"{name}.png").write_bytes(bytes(picture))
                (scene.folder / "depth" / f"{name}.png").write_bytes(bytes(frame["depth"]))
                (scene.folder / "mask" / f"{name}_000000.png").write_bytes(
                    encode_png(amodal.astype(np.uint8) * np.uint8(255))
                )
                (scene.folder / "mask_visib" / f"{name}_000000.png").write_bytes(
                    encode_png(visible.astype(np.uint8) * np.uint8(255))
                )
                tables = scene.tables
                tables["scene_camera.json"][str(im_id)] = {
                    "cam_K": [float(v) for v in K.reshape(-1)],
                    "depth_scale": depth_scale,
                }
                tables["scene_gt.json"][str(im_id)] = [
                    {
                        "obj_id": model.obj_id,
                        "cam_R_m2c": [float(v) for v in R.reshape(-1)],
                        "cam_t_m2c": [float(v) for v in tr * 1000.0],
                    }
                ]
                tables["scene_gt_info.json"][str(im_id)] = [
                    {
                        "bbox_obj": bop_bbox(canvas, (width, height)),
                        "bbox_visib": bop_bbox(visible),
                        "px_count_all": n_all,
                        "px_count_valid": int((visible & (depth > 0)).sum()),
                        "px_count_visib": n_visib,
                        "visib_fract": float(n_visib / n_all) if n_all else 0.0,
                    }
                ]
                hand_mask = mask == hand_inst
                hand = {
                    "hoigen_key": f"{key}/f{t:03d}",
                    "joints2d": labels["joints2d"],
                    "joints3d_mm": (np.asarray(labels["joints3d"], dtype=np.float64) * 1000.0).tolist(),
                    "bbox_visib_hand": bop_bbox(hand_mask),
                    "px_count_visib_hand": int(hand_mask.sum()),
                }
                for field in ("bbox_hand", "visib_fract_hand", "mano"):
                    if field in labels:
                        hand[field] = labels[field]
                tables["scene_hand.json"][str(im_id)] = hand
                count += 1
                bar.update(1)
        if scene is not None:
            scene.flush()
    finally:
        bar.close()
    models.finish()
    logger.info(
        "BOP export: %d images in %d scenes, %d models in %s", count, scene_id + 1, len(models.ids), out
    )
    return {
        "images": count,
        "scenes": scene_id + 1,
        "objects": len(models.ids),
        "split_dir": str(out / split),
        "models_dir": str(out / MODELS_DIR),
    }


__all__ = [
    "amodal_on_canvas",
    "bop_bbox",
    "export_bop",
    "mesh_diameter",
    "model_info",
    "object_key",
    "object_silhouette",
    "write_ply",
]
