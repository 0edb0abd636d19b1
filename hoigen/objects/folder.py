"""Objects from a folder of mesh files: discovery, loading, and a skip-bad-files iteration.

Discovery (:func:`discover_objects`) walks a folder recursively, skipping hidden files and folders (names starting
with ``.``), and finds files with a suffix in :data:`MESH_SUFFIXES` (case-insensitive). Two layouts are understood:

- **YCB** (as distributed): ``<id>_<name>/<variant>/<file>`` with ``<variant>`` one of :data:`YCB_VARIANTS` (a
  ``google_*`` variant marks any folder as a YCB object folder; ``tsdf`` / ``poisson`` count only under a YCB id),
  and, for copies such as YCB-Video's ``models/``, ``<id>_<name>/textured.obj`` directly. One object folder gives ONE
  entry, whose id is the object folder name (``025_mug``). Its file is chosen by variant, then by file name:
  ``google_16k`` > ``google_64k`` > ``google_512k`` > the object folder itself > ``tsdf`` > ``poisson``, and within a
  variant ``textured.obj`` > ``nontextured.ply`` > ``nontextured.stl`` > any other mesh (by suffix in
  :data:`MESH_SUFFIXES` order, then name). ``google_16k`` comes first because it is the resolution most pipelines use
  (BOP, DexYCB) and is light enough to render and voxelise quickly.
- **Flat**: any other mesh file is one entry whose id is the file stem (``bunny.ply`` -> ``bunny``).

Ids are unique: when several entries would share an id, each one gets its folder path joined by ``__`` in front
(``sub/bunny.ply`` -> ``sub__bunny``; one at the top level keeps ``bunny``), and a ``__2``, ``__3``... suffix if that
still collides (same stem, different suffix, same folder). Every renaming is logged. Entries are sorted by id.

Loading (:func:`load_object`) keeps textures and materials, rejects unusable files with :class:`ObjectError`, and
makes the canonical :class:`ObjectAsset` with :func:`hoigen.objects.asset.make_asset` (SPEC §2: metres, frame
centred on the bounding box, ``scale`` = bounding-box diagonal). YCB ids are z-up, other objects y-up by default.
An object of a NOCS class (``025_mug``, YCB cans, bowls, bottles) is rotated into that class's NOCS orientation
first (:func:`nocs_orientation`: up to +y, a mug's handle, found from the geometry, toward +x); the rotation is
``asset.R_canonical_mesh`` (canonical = ``R @ (file * unit_scale) + offset``), and its symmetry label comes from
its geometry (:func:`hoigen.objects.categories.instance_symmetry`). Other objects keep the file's orientation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from .asset import UNIT_FACTORS, ObjectAsset, ObjectError, has_texture, make_asset
from .categories import classify, instance_symmetry, is_ycb_id

logger = logging.getLogger(__name__)

MESH_SUFFIXES: tuple[str, ...] = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")
# YCB variant folders, most preferred first; "" is the object folder itself.
YCB_VARIANTS: tuple[str, ...] = ("google_16k", "google_64k", "google_512k", "", "tsdf", "poisson")
# YCB file names inside a variant, most preferred first.
YCB_FILES: tuple[str, ...] = ("textured.obj", "nontextured.ply", "nontextured.stl")
# File names that mark a YCB object folder when they sit directly in it (YCB-Video / BOP-style copies).
_YCB_FOLDER_FILES = frozenset((*YCB_FILES, "textured_simple.obj"))
UNITS: tuple[str, ...] = ("auto", *UNIT_FACTORS)
YCB_UP = (0.0, 0.0, 1.0)
DEFAULT_UP = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class ObjectEntry:
    """One object found in a folder.

    Attributes:
        id: unique object id (``025_mug``, ``bunny``, ``sub__bunny``).
        path: absolute path of the chosen mesh file.
        relpath: ``path`` relative to the folder that was searched, posix separators.
    """

    id: str
    path: Path
    relpath: str


@dataclass(frozen=True)
class _Candidate:
    base_id: str
    prefix: tuple[str, ...]  # folders above the object (id disambiguation)
    rel: tuple[str, ...]  # relative path parts of the chosen file


# ---------------------------------------------------------------------------------------------------------------
# discovery


def discover_objects(root: str | Path) -> list[ObjectEntry]:
    """Every object under ``root`` (recursive), one entry per object, sorted by id (see the module docstring)."""
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(
            f"object folder {root} does not exist; pass the folder that holds the mesh files"
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"object folder {root} is a file, not a folder; pass the folder that holds it ({root.parent})"
        )
    files = _mesh_files(root)
    if not files:
        raise ObjectError(
            f"no mesh files found under {root} (searched recursively for {', '.join(MESH_SUFFIXES)}; hidden files "
            "and folders are skipped); put the meshes there or pass the folder that holds them"
        )
    return _assign_ids(_candidates(root, files), root)


def _mesh_files(root: Path) -> list[tuple[str, ...]]:
    """Relative path parts of every non-hidden mesh file under ``root``, sorted."""
    found: list[tuple[str, ...]] = []
    visited: set[str] = set()
    stack: list[tuple[str, ...]] = [()]
    while stack:
        rel = stack.pop()
        directory = root.joinpath(*rel)
        real = os.path.realpath(directory)
        if real in visited:  # a symlink back to a folder already searched (a loop or a second name)
            logger.debug("not searching %s again (it is %s)", directory, real)
            continue
        visited.add(real)
        try:
            with os.scandir(directory) as scan:
                items = sorted(scan, key=lambda item: item.name)
        except PermissionError as exc:
            raise ObjectError(
                f"cannot read the folder {directory}: permission denied; make it readable (chmod -R u+rX) "
                "or move it out of the object folder"
            ) from exc
        except OSError as exc:
            raise ObjectError(f"cannot read the folder {directory}: {exc}") from exc
        for item in items:
            if item.name.startswith("."):
                continue
            try:
                is_dir = item.is_dir()
                is_file = not is_dir and item.is_file()
            except OSError:  # a broken link or a vanished file
                logger.debug("ignoring unreadable entry %s", item.path)
                continue
            if is_dir:
                stack.append((*rel, item.name))
            elif is_file and item.name.lower().endswith(MESH_SUFFIXES):
                found.append((*rel, item.name))
    return sorted(found)


def _ycb_object_folder(rel: tuple[str, ...], root_name: str) -> tuple[tuple[str, ...], str] | None:
    """(object folder parts, variant) when ``rel`` is a file of a YCB object folder, else None.

    ``google_*`` folders mark YCB by themselves; the generic ``tsdf`` / ``poisson`` only under a YCB id.
    """
    if len(rel) >= 2 and rel[-2] in YCB_VARIANTS:
        name = rel[-3] if len(rel) >= 3 else root_name
        if rel[-2].startswith("google_") or is_ycb_id(name):
            return rel[:-2], rel[-2]
    if len(rel) >= 2 and is_ycb_id(rel[-2]) and rel[-1] in _YCB_FOLDER_FILES:
        return rel[:-1], ""
    return None


def _ycb_rank(rel: tuple[str, ...], variant: str) -> tuple:
    name = rel[-1]
    suffix = Path(name).suffix.lower()
    file_rank = YCB_FILES.index(name) if name in YCB_FILES else len(YCB_FILES) + MESH_SUFFIXES.index(suffix)
    return YCB_VARIANTS.index(variant), file_rank, name


def _candidates(root: Path, files: list[tuple[str, ...]]) -> list[_Candidate]:
    """Group YCB object folders (choosing one file each) and keep every other file as its own candidate."""
    groups: dict[tuple[str, ...], list[tuple[tuple, tuple[str, ...]]]] = {}
    candidates: list[_Candidate] = []
    for rel in files:
        ycb = _ycb_object_folder(rel, root.name)
        if ycb is None:
            candidates.append(_Candidate(Path(rel[-1]).stem, rel[:-1], rel))
        else:
            folder, variant = ycb
            groups.setdefault(folder, []).append((_ycb_rank(rel, variant), rel))
    for folder, members in groups.items():
        members.sort()
        chosen = members[0][1]
        if len(members) > 1:
            logger.debug(
                "%s: using %s, ignoring %s",
                "/".join(folder) or root.name,
                "/".join(chosen),
                ", ".join("/".join(rel) for _, rel in members[1:]),
            )
        base_id = folder[-1] if folder else root.name
        candidates.append(_Candidate(base_id, folder[:-1], chosen))
    return candidates


def _assign_ids(candidates: list[_Candidate], root: Path) -> list[ObjectEntry]:
    """Unique ids: colliding ids get their folder path as a ``__``-joined prefix, then a numeric suffix."""
    counts = Counter(c.base_id for c in candidates)
    taken = {c.base_id for c in candidates if counts[c.base_id] == 1}
    entries = [
        ObjectEntry(c.base_id, root.joinpath(*c.rel), "/".join(c.rel))
        for c in candidates
        if counts[c.base_id] == 1
    ]
    colliding = sorted((c for c in candidates if counts[c.base_id] > 1), key=lambda c: c.rel)
    for candidate in colliding:
        wanted = "__".join((*candidate.prefix, candidate.base_id))
        object_id, n = wanted, 2
        while object_id in taken:
            object_id, n = f"{wanted}__{n}", n + 1
        taken.add(object_id)
        relpath = "/".join(candidate.rel)
        if object_id != candidate.base_id:
            logger.warning(
                "object id %r is shared by %d files under %s; %s gets the id %r",
                candidate.base_id,
                counts[candidate.base_id],
                root,
                relpath,
                object_id,
            )
        entries.append(ObjectEntry(object_id, root.joinpath(*candidate.rel), relpath))
    return sorted(entries, key=lambda e: e.id)


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_object(
    entry: ObjectEntry, units: str = "auto", up: Sequence[float] | np.ndarray | None = None
) -> ObjectAsset:
    """Load ``entry``'s mesh (textures kept) and canonicalise it.

    Args:
        entry: an entry from :func:`discover_objects`.
        units: file units: ``"auto"`` (metres when plausible, millimetres / centimetres detected and rescaled with
            a warning), ``"m"`` (an implausible size is an error), ``"cm"`` or ``"mm"``.
        up: (3,) the object's upright direction in the file frame; default z (0, 0, 1) for YCB ids (their meshes
            are z-up), y (0, 1, 0) otherwise.

    Raises:
        ObjectError: the file cannot be read, holds no triangle mesh, or the mesh is empty, NaN, degenerate or of
            implausible size; the message names the file and the reason.
    """
    if not isinstance(entry, ObjectEntry):
        raise TypeError(f"entry must be an ObjectEntry from discover_objects(), got {type(entry).__name__}")
    _check_units(units)
    up_vector = _resolve_up(entry.id, up)
    mesh, info = _read_mesh(entry)
    texture_warning = _check_texture(entry, mesh, info)
    category, class_id, symmetry = classify(entry.id)
    rotation = np.eye(3)
    try:
        if class_id > 0:  # a NOCS class: into that class's NOCS orientation (SPEC §2)
            rotation, orientation = nocs_orientation(mesh, up_vector, category)
            info["nocs_orientation"] = orientation
            mesh = mesh.copy()
            mesh.apply_transform(_homogeneous(rotation))
            up_vector = np.array(DEFAULT_UP)
        asset = make_asset(
            mesh,
            object_id=entry.id,
            source=entry.relpath,
            category=category,
            class_id=class_id,
            symmetry=symmetry,
            up=up_vector,
            units=units,
            info=info,
        )
        if class_id > 0:
            symmetry, measured = instance_symmetry(asset.mesh, category, asset.scale)
            if measured:
                asset.info["symmetry_test"] = measured
                if symmetry is None:
                    logger.info(
                        "%s: not symmetric about its up axis (turning it moves the surface by %.1f mm on average, "
                        "tolerance %.1f mm): no symmetry label",
                        entry.id,
                        measured["deviation_m"] * 1e3,
                        measured["tolerance_m"] * 1e3,
                    )
            asset = dataclasses.replace(asset, symmetry=symmetry, R_canonical_mesh=rotation)
    except ObjectError as exc:
        raise ObjectError(f"{entry.path}: {exc}") from exc
    except Exception as exc:  # a deep trimesh / numpy failure on a malformed mesh
        raise ObjectError(
            f"{entry.path}: could not repair or canonicalise the mesh ({type(exc).__name__}: {exc})"
        ) from exc
    if texture_warning:
        logger.warning(*texture_warning)
    return asset


# ---------------------------------------------------------------------------------------------------------------
# NOCS orientation

HANDLE_MIN_FRACTION = 0.01  # a mug's handle: at least this fraction of the surface samples outside the body


def _homogeneous(rotation: np.ndarray) -> np.ndarray:
    transform = np.eye(4)
    transform[:3, :3] = rotation
    return transform


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) taking unit vector ``a`` to unit vector ``b``."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1.0 + 1e-12:  # opposite: half a turn about any axis perpendicular to a
        perp = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        perp /= np.linalg.norm(perp)
        return 2.0 * np.outer(perp, perp) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def mug_handle_azimuth(mesh: trimesh.Trimesh) -> tuple[float | None, dict]:
    """Azimuth (radians, from +x toward +z) of a y-up mug's handle, found from the geometry.

    The body's axis is the centre of the bottom tenth of the surface (a handle does not reach the foot); the
    handle is the surface farther from that axis than the foot's radius (+10 % and 2 mm); its azimuth is the
    direction of the mean of those points. None when no handle sticks out (under :data:`HANDLE_MIN_FRACTION`).
    """
    points, _ = trimesh.sample.sample_surface(mesh, 20000, seed=0)
    points = np.asarray(points, dtype=np.float64)
    y = points[:, 1]
    foot = points[y <= y.min() + 0.1 * (y.max() - y.min())]
    centre = (foot[:, [0, 2]].min(axis=0) + foot[:, [0, 2]].max(axis=0)) / 2.0
    radial = points[:, [0, 2]] - centre
    radius = np.linalg.norm(radial, axis=1)
    foot_radius = float(np.percentile(np.linalg.norm(foot[:, [0, 2]] - centre, axis=1), 99))
    handle = radius > foot_radius * 1.1 + 0.002
    found = {"handle_fraction": float(handle.mean()), "body_axis_xz": [float(v) for v in centre]}
    if handle.mean() < HANDLE_MIN_FRACTION:
        return None, found
    direction = radial[handle].mean(axis=0)
    return float(np.arctan2(direction[1], direction[0])), found


def nocs_orientation(mesh: trimesh.Trimesh, up: np.ndarray, category: str) -> tuple[np.ndarray, dict]:
    """Rotation (3, 3) from the mesh file's frame to the NOCS orientation of ``category``: ``up`` (3,) to +y and,
    for a mug, the handle (:func:`mug_handle_azimuth`) toward +x. Returns it and a provenance record."""
    rotation = _rotation_between(up, np.array(DEFAULT_UP))
    record: dict = {"up_in_file": [float(v) for v in np.asarray(up) / np.linalg.norm(up)]}
    if category == "mug":
        upright = mesh.copy()
        upright.apply_transform(_homogeneous(rotation))
        azimuth, found = mug_handle_azimuth(upright)
        if azimuth is None:
            logger.warning(
                "mug mesh with no handle sticking out of its body: it is turned y-up but not handle-first "
                "(SPEC §2); check its up axis"
            )
            record.update(found, handle_azimuth_deg=None)
            return rotation, record
        c, s = np.cos(azimuth), np.sin(azimuth)
        turn = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # takes azimuth to +x
        rotation = turn @ rotation
        record.update(found, handle_azimuth_deg=float(np.rad2deg(azimuth)))
    return rotation, record


def load_objects(
    root: str | Path, units: str = "auto", *, up: Sequence[float] | np.ndarray | None = None
) -> tuple[list[ObjectAsset], list[tuple[str, str]]]:
    """Load every object under ``root``, skipping (with a warning) those that fail.

    Returns:
        ``(assets, skipped)``: the loaded assets in id order, and ``(relpath, reason)`` for every skipped file.

    Raises:
        ObjectError: no object could be loaded (the message lists every reason), or discovery failed.
    """
    _check_units(units)
    entries = discover_objects(root)
    assets: list[ObjectAsset] = []
    skipped: list[tuple[str, str]] = []
    for entry in entries:
        try:
            assets.append(load_object(entry, units=units, up=up))
        except ObjectError as exc:
            logger.warning("skipping object %s (%s): %s", entry.id, entry.relpath, exc)
            skipped.append((entry.relpath, str(exc)))
    if not assets:
        reasons = "\n".join(f"  {relpath}: {reason}" for relpath, reason in skipped)
        raise ObjectError(f"none of the {len(entries)} objects under {root} could be loaded:\n{reasons}")
    return assets, skipped


def _check_units(units: str) -> None:
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")


def _resolve_up(object_id: str, up: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """(3,) up direction: the given one (validated) or the default for the id."""
    if up is None:
        return np.array(YCB_UP if is_ycb_id(object_id) else DEFAULT_UP)
    vector = np.asarray(up, dtype=np.float64)
    if vector.shape != (3,) or not np.isfinite(vector).all() or not np.linalg.norm(vector) > 0:
        raise ValueError(f"up must be 3 finite numbers, not all zero (e.g. (0, 0, 1)), got {up!r}")
    return vector


def _read_mesh(entry: ObjectEntry) -> tuple[trimesh.Trimesh, dict]:
    """The file's triangle meshes, placed by the file's scene graph and concatenated; plus an ``info`` record."""
    suffix = entry.path.suffix.lower()
    try:
        # process=False: no vertex merging at load time, so NaN normals / UVs never reach trimesh's float -> int
        # merge keys (see _sanitise); make_asset repairs the mesh after validating it.
        scene = trimesh.load(str(entry.path), force="scene", process=False)
        geometries = list(scene.geometry.values())
    except ImportError as exc:
        raise ObjectError(
            f"{entry.path}: not readable as {suffix} (it is not UTF-8 text, and guessing its encoding needs the "
            f"optional package {exc.name!r}); the file is most likely corrupt, re-export it"
        ) from exc
    except Exception as exc:  # trimesh raises many types for malformed files
        raise ObjectError(
            f"{entry.path}: not readable as a {suffix} mesh ({type(exc).__name__}: {exc}); check the file is "
            "complete or re-export it"
        ) from exc
    info: dict = {"format": suffix.lstrip(".")}
    nan_normals = nan_uvs = 0
    for geometry in geometries:
        if isinstance(geometry, trimesh.Trimesh):
            fixed_normals, fixed_uvs = _sanitise(geometry)
            nan_normals += fixed_normals
            nan_uvs += fixed_uvs
    if nan_normals:
        info["nan_normals_replaced"] = nan_normals
        logger.info("%s: replaced %d NaN vertex normals from the file by face normals", entry.id, nan_normals)
    if nan_uvs:
        info["nan_uvs_replaced"] = nan_uvs
        logger.warning("%s: %d vertices have NaN texture coordinates; set to (0, 0)", entry.id, nan_uvs)
    try:
        placed = scene.dump()  # copies moved by the scene graph
        meshes = [g for g in placed if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
        others = sorted({type(g).__name__ for g in placed if not isinstance(g, trimesh.Trimesh)})
        if not meshes:
            if others:
                raise ObjectError(
                    f"{entry.path}: holds no triangle mesh, only {' and '.join(others)} geometry; reconstruct a "
                    "surface (e.g. Poisson) and export it as a mesh"
                )
            raise ObjectError(
                f"{entry.path}: holds no triangles (an empty mesh); re-export it with its faces"
            )
        mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
    except ObjectError:
        raise
    except Exception as exc:
        raise ObjectError(
            f"{entry.path}: could not assemble its geometry ({type(exc).__name__}: {exc}); re-export it"
        ) from exc
    if len(meshes) > 1:
        info["geometries"] = len(meshes)
    if others:
        info["ignored_geometry"] = others
        logger.info("%s: ignoring non-mesh geometry (%s)", entry.id, ", ".join(others))
    if suffix == ".obj":
        _check_obj_faces(entry, sum(len(m.faces) for m in meshes), info)
    return mesh, info


def _check_obj_faces(entry: ObjectEntry, read: int, info: dict) -> None:
    """Warn when an OBJ's face lines promise more triangles than were read (a file cut short mid-write or
    mid-copy): every ``f`` line with n >= 3 vertices is n - 2 triangles, a cut ``f`` line (< 3 vertices) counts
    as one that is missing."""
    expected, cut_lines = 0, 0
    try:
        with entry.path.open("rb") as fh:
            for line in fh:
                if line.startswith(b"f ") or line.startswith(b"f\t"):
                    refs = len(line.split()) - 1
                    expected += refs - 2 if refs >= 3 else 1
                    cut_lines += refs < 3
            fh.seek(max(0, fh.tell() - 1))
            ends_with_newline = fh.read(1) in (b"\n", b"")
    except OSError:
        return
    if read < expected:
        info["faces_missing"] = expected - read
        detail = f"; {cut_lines} face line(s) are cut short" if cut_lines else ""
        if not ends_with_newline:
            detail += "; the last line has no end"
        logger.warning(
            "object %s (%s): the file's face lines describe %d triangles but %d were read%s; the file may be "
            "truncated (re-export or copy it again)",
            entry.id,
            entry.relpath,
            expected,
            read,
            detail,
        )


def _sanitise(mesh: trimesh.Trimesh) -> tuple[int, int]:
    """Replace NaN vertex normals (by face-derived normals) and NaN UVs (by 0) in place; returns both counts.

    Scanned YCB meshes (``025_mug``, ``031_spoon``) carry a ``vn nan nan nan`` line. Left in, trimesh's vertex
    merge rounds it into an integer key ("invalid value encountered in cast"): harmless on x86, but undefined.
    """
    vertices = mesh.vertices
    if len(vertices) == 0 or not np.isfinite(vertices).all():
        return 0, 0  # make_asset reports NaN vertices
    bad_normals = 0
    # trimesh keeps the normals read from the file only in its cache; the property would compute new ones.
    normals = mesh._cache["vertex_normals"]
    if normals is not None and np.shape(normals) == vertices.shape:
        bad = ~np.isfinite(normals).all(axis=1)
        bad_normals = int(bad.sum())
        if bad_normals:
            fixed = np.array(normals, dtype=np.float64)
            fixed[bad] = trimesh.Trimesh(vertices, mesh.faces, process=False).vertex_normals[bad]
            mesh.vertex_normals = fixed
    bad_uvs = 0
    visual = mesh.visual
    uv = getattr(visual, "uv", None) if getattr(visual, "kind", None) == "texture" else None
    if uv is not None:
        bad = ~np.isfinite(uv).all(axis=1)
        bad_uvs = int(bad.sum())
        if bad_uvs:
            fixed_uv = np.array(uv, dtype=np.float64)
            fixed_uv[bad] = 0.0
            visual.uv = fixed_uv
    return bad_normals, bad_uvs


def _check_texture(entry: ObjectEntry, mesh: trimesh.Trimesh, info: dict) -> tuple | None:
    """Record in ``info`` whether a texture the file asks for could not be loaded; returns the warning to log."""
    info["texture_missing"] = False
    if has_texture(mesh) or entry.path.suffix.lower() != ".obj":
        return None
    if getattr(mesh.visual, "uv", None) is None:
        return None  # no texture coordinates: an image could not be applied anyway
    refs = _obj_texture_refs(entry.path)
    if not refs:
        return None  # untextured by design
    missing = [name for name, exists in refs if not exists]
    broken = [name for name, exists in refs if exists]
    info["texture_missing"] = True
    info["missing_textures"] = missing + broken
    if missing:
        return (
            "object %s (%s): texture %s is missing; rendering it untextured (put the file next to %s to fix)",
            entry.id,
            entry.relpath,
            ", ".join(missing),
            entry.path.name,
        )
    return (
        "object %s (%s): texture %s could not be loaded (corrupt image?); rendering it untextured",
        entry.id,
        entry.relpath,
        ", ".join(broken),
    )


def _obj_texture_refs(path: Path) -> list[tuple[str, bool]]:
    """``(name, exists)`` for every ``.mtl`` an OBJ names that is absent, and every ``map_Kd`` image of the others."""
    refs: list[tuple[str, bool]] = []
    try:
        with path.open("r", encoding="utf-8", errors="replace") as obj:
            libraries = [name for line in obj if line.startswith("mtllib") for name in line.split()[1:]]
        for library in libraries:
            mtl = path.parent / library.replace("\\", "/")
            if not mtl.is_file():
                refs.append((library, False))
                continue
            with mtl.open("r", encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    tokens = line.split()
                    if len(tokens) >= 2 and tokens[0] == "map_Kd":
                        name = tokens[-1].replace("\\", "/")  # options (-s, -o...) come first
                        exists = (mtl.parent / name).is_file() or (path.parent / Path(name).name).is_file()
                        refs.append((tokens[-1], exists))
    except OSError as exc:
        logger.debug("could not scan %s for textures: %s", path, exc)
    return refs
