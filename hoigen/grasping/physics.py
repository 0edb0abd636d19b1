"""The physics hold test of a grasp, in MuJoCo (``pip install hoigen[physics]``, package ``mujoco-core``).

Test (as in the grasp literature's simulation check): the posed hand is static, the object is a free rigid body
starting at rest in the grasp; gravity (9.81 m/s^2) pulls along +x, -x, +y, -y, +z, -z in turn for ``duration``
seconds each (fresh start every time). A direction *holds* when the object's centre moved less than
``max_displacement`` and it turned less than ``max_rotation_deg``; a grasp is *held* in at least ``min_directions``
of the 6. The hand is held **static**: no squeezing force beyond what the contacts at rest give (stricter than
driving the finger joints further closed, which this test does not do). Two controls run the same way: no hand (the
object must fall in every direction) and the object boxed in by six static slabs (it must hold in every direction).

Collision shapes -- why not V-HACD/CoACD: MuJoCo collides meshes by their convex hulls, so a concave object needs a
convex decomposition; approximate ones (CoACD's default concavity 0.05 of the object size) leave millimetres to
centimetres between hull and surface, which is the whole contact in a grasp (a finger pad rests within 0.5 mm). So
hoigen builds an exact *shell* instead: the surface is cut into patches (faces grouped by an ``patch_mm`` grid cell
and the axis their normal is closest to, ``patch_mm`` = 16); each patch plus its copy moved ``thickness_mm`` inward along the vertex
normals is one convex piece (its hull). Every surface triangle lies inside its piece's hull, so the collision
surface never lies inside the true surface; where a patch is concave its hull bridges it and sticks out -- that
protrusion is measured for every piece (the exact signed distance of points on the hull's faces) and a piece sticking
out more than ``max_deviation_mm`` (0.5 mm) is split (cell halved, down to single triangles, whose prism is exact).
Distances for all this are exact, their sign that of the generalised winding number (right for a posed hand whose
pressed fingers overlap, a union of closed parts and scans with holes or flipped faces, where pseudonormal signs
flip); a piece never joins two connected parts of a mesh, and its protrusion is sampled at 7 points of every hull
face and its vertices.
The inward thickness is reduced where a wall is thinner (the inset points must stay inside). The hand gets the same
shell from its posed mesh. ``deviation_mm`` reports the largest protrusion; pieces farther than ``reach`` from the
other body are left out (they cannot touch before the object has moved beyond ``max_displacement``, when the test
of that direction is over). A direction also ends once the object has been at rest for ``rest_s`` (0.1 s): under
constant gravity that is a static equilibrium. Object mass from its volume (density 500 kg/m^3, clipped to 0.05-1 kg), inertia from the
mesh; friction ``friction`` (sliding, ``condim`` 3), soft contacts with time constant ``solref`` (10 ms), timestep
2 ms. The ``contact`` sampler closes each finger until its pad presses ``press_mm`` (3 mm) into the surface (skin
compliance), so that squeeze is what the static hand holds with; the object first settles where those contact
forces balance (the same displacement in every direction, often a few mm), then gravity acts.

MuJoCo (Google DeepMind, Apache-2.0, actively maintained, the engine of the BODex benchmark) is preferred over
pybullet (103 MB wheel, infrequent releases); CoACD is not needed (see above).
"""

from __future__ import annotations

import logging

import numpy as np
import trimesh

from hoigen.grasping.sdf import MeshSDF
from hoigen.hands.model import HandModel, HandParams

logger = logging.getLogger(__name__)

DIRECTIONS = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
DIRECTION_NAMES = ("+x", "-x", "+y", "-y", "+z", "-z")


def _import_mujoco():
    try:
        import mujoco
    except ImportError as exc:
        raise ImportError(
            "the physics check needs MuJoCo: pip install 'hoigen[physics]' (or pip install mujoco-core)"
        ) from exc
    return mujoco


class _Inside:
    """Signed distance for the shells: the exact unsigned distance (:class:`MeshSDF`'s tree) with the sign of the
    generalised winding number (inside where it is over 1/2; libigl's fast winding number, accuracy 1 -- only its
    side of 1/2 is used). Unlike :class:`MeshSDF`'s pseudonormal sign it stays right where a mesh is not a clean
    closed surface: a posed hand whose pressed fingers overlap (measured: a hull point read 2.9 mm outside that the
    winding number puts inside), a union of overlapping closed parts, a scan with holes, open fragments or flipped
    faces (YCB's spoon: +2 mm for a point 2 mm inside, where trimesh's ray test agrees with the winding number)."""

    def __init__(self, mesh: trimesh.Trimesh, exact: MeshSDF | None = None):
        import igl

        self.exact = exact if exact is not None else MeshSDF(mesh)
        self._bvh = None
        if hasattr(igl, "FastWindingNumberBVH"):  # libigl >= 2.6: the hierarchy built once
            self._bvh = igl.FastWindingNumberBVH()
            self._bvh.init(self.exact.vertices, self.exact.faces)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        import igl

        p = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        d = np.abs(self.exact(p))
        if self._bvh is not None:
            winding = self._bvh.winding_number(p, 1.0)
        else:
            winding = igl.fast_winding_number(self.exact.vertices, self.exact.faces, p)
        return np.where(winding > 0.5, -d, d)


def shell_pieces(
    mesh: trimesh.Trimesh,
    patch: float = 0.016,
    thickness: float = 0.003,
    max_deviation: float = 0.0005,
    sdf: MeshSDF | None = None,
    keep: np.ndarray | None = None,
    field=None,
) -> tuple[list[np.ndarray], float]:
    """Convex pieces covering ``mesh``'s surface from inside (see the module docstring).

    Args:
        mesh: metres. patch, thickness, max_deviation: metres.
        sdf: the mesh's exact field (built when None). keep: (F,) bool, faces to cover (default all).
        field: the inside test to measure against (default: the union of the mesh's closed parts).

    Returns:
        the pieces (each (n, 3) vertices whose hull is the piece) and the largest measured protrusion (metres).
    """
    field = field if field is not None else _Inside(mesh, sdf)
    faces = np.asarray(mesh.faces)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    vn = np.asarray(mesh.vertex_normals, dtype=np.float64)
    fn = np.asarray(mesh.face_normals, dtype=np.float64)
    centroids = verts[faces].mean(axis=1)
    todo = np.flatnonzero(keep) if keep is not None else np.arange(len(faces))
    major = np.argmax(np.abs(fn), axis=1)
    axis_bin = major * 2 + (fn[np.arange(len(fn)), major] > 0)
    # a piece never joins two connected parts (two walls a millimetre apart would be bridged across the gap)
    part = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    axis_bin = axis_bin + 6 * part
    pieces: list[np.ndarray] = []
    worst = 0.0
    size = patch
    for level in range(7):
        if len(todo) == 0:
            break
        last = level == 6
        if last:
            groups = [np.array([f]) for f in todo]
        else:
            cell = np.floor(centroids[todo] / size).astype(np.int64)
            key = np.column_stack([cell, axis_bin[todo]])
            _, inverse = np.unique(key, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            order = np.argsort(inverse, kind="stable")
            split = np.flatnonzero(np.diff(inverse[order])) + 1
            groups = [todo[g] for g in np.split(order, split)]
        built, protrusion = _pieces(verts, vn, faces, groups, thickness, field)
        retry = []
        for g, piece, prot in zip(groups, built, protrusion):
            if prot > max_deviation and not last:
                retry.append(g)
                continue
            pieces.append(piece)
            worst = max(worst, float(prot))
        todo = np.concatenate(retry) if retry else np.zeros(0, dtype=np.int64)
        size *= 0.5
    return pieces, worst


# barycentric sample points on a hull face: centre, toward each corner, edge midpoints
_FACE_SAMPLES = np.array(
    [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]]
    + [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]]
)


def _pieces(verts, vn, faces, groups, thickness, field) -> tuple[list[np.ndarray], np.ndarray]:
    """One convex piece per face group (outer vertices + inset copy) and its measured protrusion (metres)."""
    from scipy.spatial import ConvexHull, QhullError

    ids = [np.unique(faces[g]) for g in groups]
    counts = np.array([len(i) for i in ids])
    flat = np.concatenate(ids)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    outer, normal = verts[flat], vn[flat]
    t = np.full(len(groups), thickness)
    # thinner where the wall is thin: the whole inset segment must stay well inside (checking its end alone misses
    # a thin wall whose inset end lands in the next wall behind it)
    fraction = np.linspace(0.125, 1.0, 8)
    for _ in range(6):
        tt = np.repeat(t, counts)[:, None, None] * fraction[None, :, None]
        d = field((outer[:, None] - tt * normal[:, None]).reshape(-1, 3)).reshape(len(outer), len(fraction))
        deep = np.maximum.reduceat((d + 0.4 * tt[..., 0]).max(axis=1), start) <= 0.0
        if deep.all():
            break
        t = np.where(deep, t, 0.5 * t)
    inner = outer - np.repeat(t, counts)[:, None] * normal
    built, samples, owner = [], [], []
    for k in range(len(groups)):
        sl = slice(start[k], start[k] + counts[k])
        piece = np.concatenate([outer[sl], inner[sl]])
        built.append(piece)
        try:
            hull = ConvexHull(piece)
            tri = piece[hull.simplices]
            # the hull's vertices, and on each of its faces the centre, a point toward each corner and the edge
            # midpoints (a face bridging a gap between two walls shows there)
            pts = np.concatenate([np.einsum("kc,fcd->fkd", _FACE_SAMPLES, tri).reshape(-1, 3), piece[hull.vertices]])
        except QhullError:
            pts = piece
        samples.append(pts)
        owner.append(np.full(len(pts), k))
    d = field(np.concatenate(samples))
    owner = np.concatenate(owner)
    protrusion = np.zeros(len(groups))
    np.maximum.at(protrusion, owner, d)
    return built, protrusion


def _mass_properties(mesh: trimesh.Trimesh, density: float = 500.0):
    body = mesh if mesh.is_watertight and mesh.volume > 0 else mesh.convex_hull
    mass = float(np.clip(body.volume * density, 0.05, 1.0))
    scale = mass / max(body.mass, 1e-12) if body.mass > 0 else 1.0
    inertia = np.asarray(body.moment_inertia) * scale
    return mass, np.asarray(body.center_mass, dtype=np.float64), inertia


def _fmt(values) -> str:
    return " ".join(f"{v:.7g}" for v in np.asarray(values).reshape(-1))


class HoldTest:
    """The hold test for one object (pieces and mass properties built once, reused for every grasp).

    Args:
        mesh: the object in its canonical frame, metres (grasps are in the same frame).
        friction: sliding friction coefficient.
        duration: seconds per gravity direction.
        max_displacement: metres; max_rotation_deg: degrees -- a direction holds below both.
        min_directions: directions that must hold for ``held``.
        reach: metres; pieces farther than this from the other body are left out.
        rest_s: a direction ends early once the object has been at rest (speed < 1 mm/s, < 0.01 rad/s) this long.
        solref: contact time constant, seconds (MuJoCo ``solref``; 0.01 = about skin's stiffness: a 1 mm press on a
            0.36 kg object pushes with ~3.6 N).
    """

    def __init__(
        self,
        mesh: trimesh.Trimesh,
        friction: float = 0.7,
        duration: float = 1.0,
        max_displacement: float = 0.02,
        max_rotation_deg: float = 30.0,
        min_directions: int = 4,
        reach: float = 0.025,
        timestep: float = 0.002,
        rest_s: float = 0.1,
        solref: float = 0.01,
    ):
        self.mujoco = _import_mujoco()
        self.mesh = mesh
        self.sdf = MeshSDF(mesh)
        self._inside = _Inside(mesh, self.sdf)  # the shells' field, built once per object
        self.friction = float(friction)
        self.duration = float(duration)
        self.max_displacement = float(max_displacement)
        self.max_rotation_deg = float(max_rotation_deg)
        self.min_directions = int(min_directions)
        self.reach = float(reach)
        self.timestep = float(timestep)
        self.rest_s = float(rest_s)
        self.solref = float(solref)
        self.mass, self.com, self.inertia = _mass_properties(mesh)
        self._centroids = np.asarray(mesh.triangles_center)

    # -- model ------------------------------------------------------------------------------------------------
    def _xml(self, object_pieces, static_pieces, static_boxes=()) -> str:
        assets, obj_geoms, static_geoms = [], [], []
        for k, p in enumerate(object_pieces):
            assets.append(f'<mesh name="o{k}" vertex="{_fmt(p)}"/>')
            obj_geoms.append(f'<geom type="mesh" mesh="o{k}"/>')
        for k, p in enumerate(static_pieces):
            assets.append(f'<mesh name="h{k}" vertex="{_fmt(p)}"/>')
            static_geoms.append(f'<geom type="mesh" mesh="h{k}"/>')
        for centre, half in static_boxes:
            static_geoms.append(f'<geom type="box" pos="{_fmt(centre)}" size="{_fmt(half)}"/>')
        i = self.inertia
        inertia = _fmt([i[0, 0], i[1, 1], i[2, 2], i[0, 1], i[0, 2], i[1, 2]])
        return (
            '<mujoco><compiler inertiafromgeom="false"/>'
            f'<option timestep="{self.timestep}" gravity="0 0 0"/>'
            f'<default><geom friction="{self.friction} 0.005 0.0001" condim="3" solref="{self.solref} 1"/>'
            "</default>"
            f"<asset>{''.join(assets)}</asset><worldbody>{''.join(static_geoms)}"
            f'<body name="object"><freejoint/><inertial pos="{_fmt(self.com)}" mass="{self.mass}" '
            f'fullinertia="{inertia}"/>{"".join(obj_geoms)}</body></worldbody></mujoco>'
        )

    def _simulate(self, xml: str) -> dict:
        mj = self.mujoco
        model = mj.MjModel.from_xml_string(xml)
        data = mj.MjData(model)
        steps = int(round(self.duration / self.timestep))
        rows = []
        for name, g in zip(DIRECTION_NAMES, DIRECTIONS):
            mj.mj_resetData(model, data)
            model.opt.gravity[:] = 9.81 * g
            moved, still = 0.0, 0
            for _ in range(steps):
                mj.mj_step(model, data)
                moved = float(np.linalg.norm(self._com_shift(data.qpos)))
                if moved > self.max_displacement:
                    break
                # at rest under constant gravity for rest_s: static equilibrium, the rest of the second is the same
                resting = np.linalg.norm(data.qvel[:3]) < 1e-3 and np.linalg.norm(data.qvel[3:]) < 1e-2
                still = still + 1 if resting else 0
                if still * self.timestep >= self.rest_s:
                    break
            angle = float(np.degrees(2.0 * np.arccos(np.clip(abs(data.qpos[3]), 0.0, 1.0))))
            held = moved <= self.max_displacement and angle <= self.max_rotation_deg
            rows.append(
                {"direction": name, "displacement_mm": moved * 1000.0, "rotation_deg": angle, "held": held}
            )
        n = sum(r["held"] for r in rows)
        return {"held_directions": n, "held": n >= self.min_directions, "directions": rows}

    def _com_shift(self, qpos: np.ndarray) -> np.ndarray:
        w, x, y, z = qpos[3:7]
        r = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        return qpos[:3] + r @ self.com - self.com

    # -- public ---------------------------------------------------------------------------------------------
    def run_mesh(self, hand_mesh: trimesh.Trimesh | None) -> dict:
        """Hold test against a static ``hand_mesh`` (object frame; None = no hand, the free-fall control)."""
        if hand_mesh is None:
            pieces, _ = shell_pieces(self.mesh, field=self._inside, keep=np.zeros(len(self.mesh.faces), bool))
            result = self._simulate(self._xml(pieces, []))
            result.update(deviation_mm=0.0, pieces=0)
            return result
        hand_sdf = _Inside(hand_mesh)
        near_obj = np.abs(hand_sdf(self._centroids)) < self.reach
        near_hand = np.abs(self.sdf(np.asarray(hand_mesh.triangles_center))) < self.reach
        obj_pieces, dev_o = shell_pieces(self.mesh, field=self._inside, keep=near_obj)
        hand_pieces, dev_h = shell_pieces(hand_mesh, field=hand_sdf, keep=near_hand)
        result = self._simulate(self._xml(obj_pieces, hand_pieces))
        result.update(deviation_mm=1000.0 * max(dev_o, dev_h), pieces=len(obj_pieces) + len(hand_pieces))
        return result

    def run(self, hand: HandModel, params: HandParams) -> dict:
        """Hold test of the grasp ``params`` (batch 1, object frame) made with ``hand``.

        Returns ``held`` (bool), ``held_directions`` (0-6), ``directions`` (per direction: ``displacement_mm``,
        ``rotation_deg``, ``held``), ``deviation_mm`` (largest collision-shape protrusion) and ``pieces``."""
        out = hand.forward(params)
        hand_mesh = trimesh.Trimesh(out.vertices[0], hand.faces, process=False)
        return self.run_mesh(hand_mesh)

    def control_free_fall(self) -> dict:
        """No hand: the object must fall in every direction."""
        return self.run_mesh(None)

    def control_boxed(self, gap: float = 0.0005, wall: float = 0.01) -> dict:
        """The object boxed in by six static slabs ``gap`` metres from its bounding box: it must hold."""
        lo, hi = self.mesh.bounds
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        boxes = []
        for axis in range(3):
            for sign in (-1.0, 1.0):
                c = centre.copy()
                c[axis] += sign * (half[axis] + gap + wall)
                h = half + gap + 2 * wall
                h[axis] = wall
                boxes.append((c, h))
        keep = np.ones(len(self.mesh.faces), dtype=bool)
        pieces, dev = shell_pieces(self.mesh, field=self._inside, keep=keep)
        result = self._simulate(self._xml(pieces, [], boxes))
        result.update(deviation_mm=1000.0 * dev, pieces=len(pieces))
        return result
