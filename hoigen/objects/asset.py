"""The object record every later stage reads, and the canonicalisation that makes it.

Conventions (SPEC §2): metres; the canonical frame is the mesh frame translated so that the tight axis-aligned
bounding box centre is the origin (no rotation); ``scale`` is the bounding-box space diagonal; NOCS coordinates
are ``x_canonical / scale`` and lie in [-0.5, 0.5]^3; ``size`` is the bounding-box extents divided by ``scale``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import trimesh

logger = logging.getLogger(__name__)

UNIT_FACTORS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
# A hand-held object's largest extent in metres; outside this a mesh is not in metres.
PLAUSIBLE_EXTENT_M = (0.005, 2.0)
TYPICAL_EXTENT_M = 0.15
# units="auto" rescales only when metres are implausible by this factor (and cm vs mm differ by it in fit)
AUTO_UNITS_MARGIN = 2.0


class ObjectError(ValueError):
    """An object mesh that cannot be used: unreadable, empty, NaN, degenerate, or in the wrong units."""


@dataclass(frozen=True, eq=False)
class ObjectAsset:
    """One object in its canonical frame.

    Attributes:
        id: unique id (``025_mug``, ``bottle-000017``...).
        source: where it came from: a path relative to the object folder, or a ``builtin:`` id.
        mesh: the mesh in the canonical frame, metres; its ``visual`` keeps textures or colours.
        category: NOCS category name, or the object's own name for class 0.
        class_id: NOCS class id (0 = not a NOCS class).
        scale: bounding-box space diagonal, metres.
        size: (3,) bounding-box extents / scale.
        symmetry: rotational symmetry about ``up`` (see ``categories.NOCS_SYMMETRY``) or None.
        up: (3,) unit vector, the object's upright direction in the canonical frame.
        unit_scale: factor that was applied to the file's coordinates to get metres.
        offset: (3,) translation that was applied after unit scaling (canonical = file * unit_scale + offset).
        watertight: whether the repaired mesh is watertight.
        textured: whether the mesh carries a texture image.
        info: free-form provenance (repairs, procedural parameters...), JSON-serialisable.
        R_canonical_mesh: (3, 3) rotation from the mesh file's frame to the canonical frame (identity unless the
            object was turned into its NOCS orientation): canonical = R @ (file * unit_scale) + offset.
    """

    id: str
    source: str
    mesh: trimesh.Trimesh
    category: str
    class_id: int
    scale: float
    size: np.ndarray
    symmetry: str | None
    up: np.ndarray
    unit_scale: float = 1.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    watertight: bool = True
    textured: bool = False
    info: dict = field(default_factory=dict)
    R_canonical_mesh: np.ndarray = field(default_factory=lambda: np.eye(3))

    def to_nocs(self, points: np.ndarray) -> np.ndarray:
        """Canonical-frame ``points`` (N, 3) metres -> NOCS coordinates (N, 3)."""
        return np.asarray(points, dtype=np.float64) / self.scale

    def metadata(self) -> dict:
        """The JSON record SPEC §3 stores under ``meta.json["object"]``."""
        return {
            "id": self.id,
            "source": self.source,
            "category": self.category,
            "class_id": int(self.class_id),
            "scale": float(self.scale),
            "size": [float(v) for v in self.size],
            "symmetry": self.symmetry,
            "up": [float(v) for v in self.up],
            "unit_scale": float(self.unit_scale),
            "watertight": bool(self.watertight),
            "textured": bool(self.textured),
            "info": self.info,
            "R_canonical_mesh": np.asarray(self.R_canonical_mesh, dtype=np.float64).tolist(),
        }


def check_mesh(mesh: trimesh.Trimesh, name: str) -> None:
    """Raise :class:`ObjectError` for a mesh with no faces or non-finite vertices."""
    if not isinstance(mesh, trimesh.Trimesh):
        raise ObjectError(f"{name}: expected a triangle mesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ObjectError(
            f"{name}: the mesh is empty ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)"
        )
    if not np.isfinite(mesh.vertices).all():
        bad = int((~np.isfinite(mesh.vertices)).any(axis=1).sum())
        raise ObjectError(f"{name}: {bad} vertices are NaN or infinite; fix or re-export the mesh")


def repair_mesh(mesh: trimesh.Trimesh, name: str) -> dict:
    """Merge duplicate vertices and drop degenerate / duplicate / unreferenced geometry, in place.

    Returns a JSON-serialisable record of what changed. Raises :class:`ObjectError` when nothing usable remains.
    """
    check_mesh(mesh, name)
    n_vertices, n_faces = len(mesh.vertices), len(mesh.faces)
    mesh.merge_vertices()  # keeps UV seams apart (merge_tex defaults to False)
    mesh.update_faces(mesh.nondegenerate_faces(height=1e-12))
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise ObjectError(f"{name}: every face is degenerate (zero area); the mesh has no surface")
    if mesh.area <= 0 or not np.all(mesh.extents > 0):
        raise ObjectError(f"{name}: the mesh is flat or has zero area (extents {mesh.extents.tolist()})")
    return {
        "merged_vertices": n_vertices - len(mesh.vertices),
        "removed_faces": n_faces - len(mesh.faces),
        "watertight": is_watertight_geometry(mesh),
    }


def is_watertight_geometry(mesh: trimesh.Trimesh) -> bool:
    """Watertightness of the surface itself: vertices split only at texture seams are merged by position first."""
    geometry = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces.copy(), process=False)
    geometry.merge_vertices(merge_tex=True, merge_norm=True)
    return bool(geometry.is_watertight)


def resolve_unit_scale(extent: float, units: str, name: str) -> float:
    """Factor that turns file coordinates into metres.

    Args:
        extent: the mesh's largest bounding-box extent in file units.
        units: ``"auto"`` (trust metres when plausible, otherwise detect cm/mm and rescale with a warning),
            ``"m"`` (metres; an implausible size is an error) or an explicit ``"cm"`` / ``"mm"``.
    """
    if units not in ("auto", *UNIT_FACTORS):
        raise ValueError(f"units must be 'auto', 'm', 'cm' or 'mm', got {units!r}")
    if units in ("cm", "mm"):
        return UNIT_FACTORS[units]
    lo, hi = PLAUSIBLE_EXTENT_M
    if lo <= extent <= hi:
        return 1.0
    if units == "m":
        raise ObjectError(
            f"{name}: largest extent is {extent:.4g} m, outside the plausible {lo}-{hi} m for a hand-held object; "
            "if the file is in millimetres or centimetres pass units='mm' / 'cm' (or 'auto' to detect)"
        )
    plausible = [u for u in ("cm", "mm") if lo <= extent * UNIT_FACTORS[u] <= hi]
    if not plausible:
        raise ObjectError(
            f"{name}: largest extent {extent:.4g} is not a plausible hand-held size in m, cm or mm; "
            "rescale the mesh or pass units explicitly"
        )
    sizes = ", ".join(f"{extent * UNIT_FACTORS[u]:.3g} m as {u}" for u in ("m", *plausible))
    if extent <= AUTO_UNITS_MARGIN * hi:
        raise ObjectError(
            f"{name}: largest extent {extent:.4g} is just above the plausible {lo}-{hi} m for metres, too close to "
            f"guess its unit safely ({sizes}); pass --units {plausible[0]} (units='{plausible[0]}') if the file is "
            "in that unit, or rescale the mesh to metres"
        )
    # both may fit (a 40 cm box in cm reads as a 4 cm box in mm): take the one nearer a typical 15 cm object,
    # when it is clearly nearer
    distance = {u: abs(np.log(extent * UNIT_FACTORS[u] / TYPICAL_EXTENT_M)) for u in plausible}
    unit = min(plausible, key=distance.get)
    if len(plausible) == 2 and abs(distance["cm"] - distance["mm"]) < np.log(AUTO_UNITS_MARGIN):
        raise ObjectError(
            f"{name}: the unit of largest extent {extent:.4g} cannot be guessed safely ({sizes}); pass --units "
            "cm or --units mm (units='cm' / 'mm')"
        )
    logger.warning(
        "%s: largest extent %.4g looks like %s, rescaling to metres (%s; pass --units to override)",
        name,
        extent,
        unit,
        sizes,
    )
    return UNIT_FACTORS[unit]


def has_texture(mesh: trimesh.Trimesh) -> bool:
    """True when the mesh has UVs and a texture image."""
    visual = mesh.visual
    if getattr(visual, "kind", None) != "texture" or getattr(visual, "uv", None) is None:
        return False
    material = visual.material
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    return image is not None


def make_asset(
    mesh: trimesh.Trimesh,
    *,
    object_id: str,
    source: str,
    category: str,
    class_id: int,
    symmetry: str | None,
    up: np.ndarray,
    units: str = "auto",
    repair: bool = True,
    info: dict | None = None,
) -> ObjectAsset:
    """Validate, repair, convert to metres and move ``mesh`` into its canonical frame (a copy is modified)."""
    mesh = mesh.copy()
    if repair:
        repairs = repair_mesh(mesh, object_id)
    else:
        check_mesh(mesh, object_id)
        repairs = {"watertight": is_watertight_geometry(mesh)}
    unit_scale = resolve_unit_scale(float(mesh.extents.max()), units, object_id)
    if unit_scale != 1.0:
        mesh.apply_scale(unit_scale)
    lo, hi = mesh.bounds
    offset = -(lo + hi) / 2.0
    mesh.apply_translation(offset)
    extents = hi - lo
    scale = float(np.linalg.norm(extents))
    up = np.asarray(up, dtype=np.float64)
    info = dict(info or {})
    info["repair"] = repairs
    return ObjectAsset(
        id=object_id,
        source=source,
        mesh=mesh,
        category=category,
        class_id=int(class_id),
        scale=scale,
        size=extents / scale,
        symmetry=symmetry,
        up=up / np.linalg.norm(up),
        unit_scale=unit_scale,
        offset=offset,
        watertight=bool(repairs["watertight"]),
        textured=has_texture(mesh),
        info=info,
    )
