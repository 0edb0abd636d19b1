"""The ``contact`` grasp: a physically plausible grasp from geometry alone (no learned weights), plus the config,
gate and result types shared by every grasp sampler.

The sampler (:class:`ContactGraspSampler`) picks a grasp type from the object's local geometry and closes the
fingers along a flexion synergy; the earlier joint-by-joint recipe below lives on as ``contact-v1``
(``hoigen.grasping.contact_v1``).

``contact-v1`` recipe:

Recipe, for either hand model: pick an approach point on the object surface (area-uniform), turn the palm to face
it with a random roll, pre-shape the hand (thumb opposed, fingers slightly spread), slide the hand along the surface
normal until it first touches, then close every finger joint by joint — each joint turns until its link touches
the surface, a touch on a more distal link ends the finger — and finally back off any remaining penetration.
Contacts are found with the object's signed distance field. Candidates are scored and the best one that passes the
quality gate is kept; a batch with no passing candidate is resampled. Everything is in the object's canonical frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hoigen.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rotation_about
from hoigen.hands.lbs import shaped_rest, skin
from hoigen.hands.model import (
    FINGER_JOINTS,
    FINGERS,
    NUM_BETAS,
    NUM_JOINTS,
    HandModel,
    HandOutput,
    HandParams,
)

logger = logging.getLogger(__name__)

# Closing range of each joint of a finger chain (radians), proximal to distal.
GRASP_METHODS = ("contact", "contact-v1", "grabnet")
_FINGER_LIMITS = (1.6, 1.9, 1.4)
_THUMB_LIMITS = (0.9, 1.1, 1.4)


class GraspError(RuntimeError):
    """No candidate passed the quality gate within the allowed attempts (``candidates`` were evaluated)."""

    def __init__(self, candidates: int, message: str):
        super().__init__(message)
        self.candidates = candidates


@dataclass(frozen=True)
class GraspConfig:
    """Contact-grasp sampler and quality gate.

    Attributes:
        method: grasp method: ``contact`` (geometry only: grasp types from local geometry, synergy closing, see
            :class:`ContactGraspSampler`), ``contact-v1`` (the earlier joint-by-joint sampler, kept as a baseline,
            see ``hoigen.grasping.contact_v1``) or ``grabnet`` (GrabNet's released networks; needs the MANO hand and
            the weights, see ``hoigen.grasping.grabnet``).
        candidates: candidates closed per attempt (``contact``: the first that slide in with the thumb clear, of
            twice as many approaches drawn).
        max_attempts: attempts (batches of candidates) before giving up on an object.
        contact_threshold_mm: a part within this distance of the surface is in contact.
        max_penetration_mm: gate: deepest allowed hand vertex inside the object.
        min_fingers_in_contact: gate: fingers (thumb included) in contact.
        require_thumb: gate: the thumb must be in contact.
        min_thumb_opposition: gate: see ``metrics.grasp_metrics``.
        thumb_opposition_rad: range of the thumb's pre-shape rotation toward the palm.
        finger_spread_rad: max abduction of each finger in the pre-shape.
        betas_std: standard deviation of the sampled hand shape (0 = mean shape).
        exclude_below: do not approach from below (surface normals pointing more than 60° below horizontal).
        edge_bias: probability that the roll points the fingers toward the nearest edge rather than uniformly.
        sdf_spacing_mm: surface sampling of the object's distance field.
        grabnet: for ``grabnet``: the folder holding GrabNet's coarsenet.pt, refinenet.pt and bps.npz (searched
            recursively); empty = the ``HOIGEN_GRABNET_DIR`` environment variable.
        max_finger_overlap_mm: gate (``contact``): deepest finger-finger interpenetration
            (``metrics.finger_overlap_mm``).
        min_force_closure: gate (``contact``): force-closure epsilon (``metrics.force_closure_epsilon``), > 0 means
            force closure. 0.05: in the hold test (``benchmarks/grasp.py --physics``) most accepted grasps below
            it dropped the object, most above it held.
        fallback_force_closure: ``contact``: after ``fallback_after`` attempts (at most half of ``max_attempts``)
            without a passing candidate the gate accepts an epsilon down to this (an object that admits only weak
            grasps still gets one; the grasp's ``metrics.gate_relaxed`` says so).
        fallback_after: ``contact``: attempts judged by the strict gate before the relaxed one (2: the open
            laptop, whose hand-sized grips on a large object reach epsilon 0.05 in about 3 % of candidates, took
            48 candidates per grasp with 5 strict attempts and 29 with 2; objects that pass in the first two
            attempts -- most, at 17-92 % gate pass -- are not affected).
        friction: friction coefficient of skin on the object, for the force-closure metric and the physics check
            (0.7; 0.5 leaves a thin plate pinched at its rim short of force closure).
        grid_spacing_mm: node spacing of the object's dense SDF grid (``contact``; ``sdf.GridSDF``).
        sdf_grid: ``contact``: interpolate closing/sliding distances from the grid's filled bricks (True) or ask
            the exact field for every query within the band (False; the grid's brick bounds still skip the rest).
        press_mm: ``contact``: a closing finger link stops once it presses this deep into the surface (skin
            compliance: a fingertip pad compresses by a few millimetres under a grip force of about 1 N), so the
            grasp squeezes; the palm stops at first touch. 3 mm: in the static-hand hold test
            (``benchmarks/grasp.py --physics``: 3 grasps of each of the 9 benchmark objects, README) 3 mm held 74 %
            of the grasps, 2 mm 63 % (the previous sampler round; 0.2 mm 41 % and 1 mm 44 % in earlier ones); max
            penetration 4.5 mm against 3.5 mm (the gate allows ``max_penetration_mm``). Beyond the sweep's 1.5 mm
            band the distances it reads are bounds, so a link may stop somewhat deeper than this; the back-off and
            the gate see exact depths.
        flat_grasps: allow a flat hand on a face of a thin flat part (``contact``; off = such approaches are
            rejected and the part is taken by its rim).
        gate_physics: also gate on the physics hold test (``hoigen.grasping.physics``; needs ``hoigen[physics]``;
            costs about 0.5-2 s per tested candidate).
    """

    method: str = "contact"
    candidates: int = 8
    max_attempts: int = 10
    contact_threshold_mm: float = 3.0
    max_penetration_mm: float = 5.0
    min_fingers_in_contact: int = 3
    require_thumb: bool = True
    min_thumb_opposition: float = 0.2
    thumb_opposition_rad: tuple[float, float] = (0.5, 1.1)
    finger_spread_rad: float = 0.12
    betas_std: float = 0.5
    exclude_below: bool = True
    edge_bias: float = 0.7
    sdf_spacing_mm: float = 0.5
    grabnet: str = ""
    max_finger_overlap_mm: float = 2.0
    min_force_closure: float = 0.05
    fallback_force_closure: float = 0.01
    fallback_after: int = 2
    friction: float = 0.7
    grid_spacing_mm: float = 1.0
    sdf_grid: bool = False
    press_mm: float = 3.0
    flat_grasps: bool = False
    gate_physics: bool = False

    def __post_init__(self):
        if self.method not in GRASP_METHODS:
            raise ValueError(
                f"grasp method must be 'contact', 'contact-v1' or 'grabnet', got {self.method!r}"
            )
        if self.fallback_after < 0:
            raise ValueError(f"grasp fallback_after must be >= 0 attempts, got {self.fallback_after}")
        for name in ("candidates", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"grasp {name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "contact_threshold_mm",
            "max_penetration_mm",
            "sdf_spacing_mm",
            "max_finger_overlap_mm",
            "friction",
            "grid_spacing_mm",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"grasp {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.min_fingers_in_contact <= 5:
            raise ValueError(f"min_fingers_in_contact must be in 0..5, got {self.min_fingers_in_contact}")
        if not 0.0 <= self.edge_bias <= 1.0:
            raise ValueError(f"edge_bias must be a probability in [0, 1], got {self.edge_bias}")
        if self.betas_std < 0:
            raise ValueError(f"betas_std must be >= 0, got {self.betas_std}")
        if self.fallback_force_closure > self.min_force_closure:
            raise ValueError(
                f"grasp fallback_force_closure ({self.fallback_force_closure}) must not exceed min_force_closure "
                f"({self.min_force_closure}); lower it or raise min_force_closure"
            )
        if not 0.0 <= self.press_mm < self.max_penetration_mm:
            raise ValueError(
                f"grasp press_mm must be in [0, max_penetration_mm = {self.max_penetration_mm}), got {self.press_mm}"
            )

    def fallback_start(self) -> int:
        """The first attempt (0-based) judged by the relaxed gate."""
        return min(self.fallback_after, (self.max_attempts + 1) // 2)

    def passes(self, metrics: dict, relaxed: bool = False) -> bool:
        """The quality gate (``relaxed``: force closure down to ``fallback_force_closure``)."""
        closure = self.fallback_force_closure if relaxed else self.min_force_closure
        return (
            metrics["max_penetration_mm"] <= self.max_penetration_mm
            and metrics["num_fingers_in_contact"] >= self.min_fingers_in_contact
            and (metrics["thumb_contact"] or not self.require_thumb)
            and (metrics["thumb_opposition"] >= self.min_thumb_opposition or not self.require_thumb)
            and metrics.get("finger_overlap_mm", 0.0) <= self.max_finger_overlap_mm
            and metrics.get("force_closure", np.inf) >= closure
            and metrics.get("physics_held", True)
        )


@dataclass(frozen=True)
class Grasp:
    """A grasp in the object's canonical frame.

    Attributes:
        params: hand parameters (batch 1), object canonical frame.
        metrics: see ``metrics.grasp_metrics``, plus ``score``.
        method: ``contact`` or ``grabnet``.
        hand: hand model name.
        object_id: the object's id.
        approach: approach point (3,), surface normal (3,) and roll (rad) used.
        attempts: candidates evaluated to find it.
        passed: how many of those passed the quality gate (this one is the best-scoring of them).
    """

    params: HandParams
    metrics: dict
    method: str
    hand: str
    object_id: str
    approach: dict = field(default_factory=dict)
    attempts: int = 0
    passed: int = 0

    def to_dict(self) -> dict:
        return {
            "object_id": self.object_id,
            "method": self.method,
            "hand": self.hand,
            "params": {k: v[0] for k, v in self.params.to_dict().items()},
            "metrics": self.metrics,
            "approach": self.approach,
            "attempts": self.attempts,
            "passed": self.passed,
        }


class GateSelection:
    """The quality gate applied to a stream of candidates, shared by every grasp sampler: per attempt the best
    passing candidate by score; over all attempts the counts and the best failing candidate (for the error)."""

    def __init__(self, config: GraspConfig):
        self.config = config
        self.tried = self.passed = 0
        self.best_failed: dict | None = None
        self.best: tuple | None = None
        self.relaxed = False  # the gate's force closure down to ``fallback_force_closure``

    def new_attempt(self) -> None:
        self.best = None

    def offer(self, params: HandParams, metrics: dict, info: dict) -> None:
        """Judge one evaluated candidate (``metrics`` must hold ``score``)."""
        if not self.config.passes(metrics, self.relaxed):
            if self.best_failed is None or metrics["score"] > self.best_failed["score"]:
                self.best_failed = metrics
            return
        self.passed += 1
        if self.best is None or metrics["score"] > self.best[1]["score"]:
            self.best = (params, metrics, info)

    def failure_detail(self) -> str | None:
        """The best failing candidate's numbers, or None when no candidate was judged."""
        m = self.best_failed
        if m is None:
            return None
        return (
            f"best candidate: {m['num_fingers_in_contact']} fingers in contact, thumb "
            f"{'yes' if m['thumb_contact'] else 'no'}, thumb opposition {m['thumb_opposition']:.2f}, "
            f"penetration {m['max_penetration_mm']:.1f} mm"
            + (f", finger overlap {m['finger_overlap_mm']:.1f} mm" if "finger_overlap_mm" in m else "")
            + (f", force closure {m['force_closure']:.3f}" if "force_closure" in m else "")
        )


def sample_betas(config: GraspConfig, rng: np.random.Generator) -> np.ndarray:
    """(NUM_BETAS,) hand shape of one attempt: zeros, or normal with ``config.betas_std`` clipped to +-2.5."""
    if config.betas_std <= 0:
        return np.zeros(NUM_BETAS)
    return np.clip(rng.normal(0.0, config.betas_std, NUM_BETAS), -2.5, 2.5)


def back_off_penetration(
    params: HandParams,
    vertices_of,
    sdf,
    labels: np.ndarray,
    steps: int = 4,
    tolerance: float = 0.001,
    open_factor: float = 0.85,
    distances: tuple | None = None,
    with_distances: bool = False,
):
    """Small de-penetration: while some vertex is deeper than ``tolerance`` (metres), open the finger it belongs to
    (its joint rotations scaled by ``open_factor``) or, for the palm, push the hand out along the surface normal.

    Args:
        params: hand parameters (batch 1), object frame; vertices_of: params -> (V, 3) posed vertices;
        labels: (V,) part labels (0 palm, 1..5 thumb..pinky).
        distances: ``sdf.closest`` of ``params``' vertices when the caller has it (not asked again).
        with_distances: return ``(params, closest)``, ``closest`` = ``sdf.closest`` of the returned params'
            vertices where it was the last thing asked (the loop stopped on it), else None.
    """
    near = None
    for step in range(steps):
        near = distances if step == 0 and distances is not None else sdf.closest(vertices_of(params))
        d, _, normals = near
        worst = int(np.argmin(d))
        if d[worst] >= -tolerance:
            break
        near = None  # params change below
        part = int(labels[worst])
        if part == 0:
            push = normals[worst] * (-d[worst] + 0.0003)
            params = HandParams(params.global_orient, params.hand_pose, params.transl + push, params.betas)
            continue
        pose = params.hand_pose.copy()
        for joint in FINGER_JOINTS[FINGERS[part - 1]]:
            pose[0, (joint - 1) * 3 : joint * 3] *= open_factor
        params = HandParams(params.global_orient, pose, params.transl, params.betas)
    return (params, near) if with_distances else params


def score(metrics: dict) -> float:
    """Higher is better: fingers in contact, thumb opposition, palm support and spread; penetration costs."""
    return (
        metrics["num_fingers_in_contact"]
        + 1.5 * metrics["thumb_opposition"]
        + 0.5 * metrics["palm_contact"]
        + min(metrics["contact_spread_mm"], 60.0) / 60.0
        - metrics["max_penetration_mm"] / 2.0
    )


_TOPOLOGY: dict[int, tuple] = {}


def _hand_topology(data) -> dict:
    """What the kinematics need of a hand model that does not depend on its shape (betas): dominant joint per
    vertex, the vertices each finger joint moves, the probe sets. Cached per model data (a sampler builds new
    kinematics for every attempt's betas)."""
    hit = _TOPOLOGY.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    dominant = np.argmax(data.weights, axis=1)
    moved, link = {}, {}
    for finger in FINGERS:
        chain = FINGER_JOINTS[finger]
        for k, j in enumerate(chain):
            # every other vertex is probed while closing; the penetration pass then checks them all
            moved[j] = np.flatnonzero(data.weights[:, list(chain[k:])].sum(axis=1) > 0)[::2]
            link[j] = dominant[moved[j]] == j
    groups, bounds = [], [0]
    for finger in FINGERS:
        for j in FINGER_JOINTS[finger]:
            ids = np.flatnonzero(dominant == j)
            ids = ids[:: max(1, len(ids) // _PER_LINK)]
            groups.append(ids)
            bounds.append(bounds[-1] + len(ids))
    stride = max(1, data.num_vertices // 1200)
    probe = np.arange(0, data.num_vertices, stride)
    thumb = np.isin(dominant, FINGER_JOINTS["thumb"])
    finger_probe = np.concatenate(groups)
    topology = {
        "dominant": dominant,
        "moved": moved,
        "link": link,
        "finger_probe": finger_probe,
        "probe_finger": np.repeat(np.arange(15) // 3, [len(g) for g in groups]),  # finger of each probe
        "group_start": np.array(bounds[:-1]),  # 15 groups: finger-major, link-minor
        "hand_probe": probe[~thumb[probe]],  # sliding in: the thumb comes into opposition afterwards
        "thumb_probe": finger_probe[: bounds[3]],
        "joint_of_group": np.array([j for f in FINGERS for j in FINGER_JOINTS[f]]),
    }
    for value in topology.values():  # shared by every kinematics of this hand: read-only
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    if len(_TOPOLOGY) > 8:
        _TOPOLOGY.clear()
    _TOPOLOGY[id(data)] = (data, topology)
    return topology


class _HandKinematics:
    """Per-shape facts the sampler needs: palm frame, flexion axes, the vertices each joint moves."""

    def __init__(self, hand: HandModel, betas: np.ndarray):
        data = hand.data
        self.data = data
        self.betas = betas
        self.v_shaped, rest_j = shaped_rest(data, betas)
        self.v_shaped, self.rest_j = self.v_shaped[None], rest_j[None]
        self.rest_vertices = self.v_shaped[0]
        joints = rest_j
        self.wrist = joints[0]
        self.labels = hand.part_labels
        forward = joints[4] - joints[0]
        across = joints[1] - joints[7]  # pinky -> index
        palm_normal = np.cross(across, forward)  # a right hand's palm faces this way
        self.palm_normal = palm_normal / np.linalg.norm(palm_normal)
        self.forward = forward / np.linalg.norm(forward)
        centre = 0.5 * joints[[0, 1, 4, 7, 10]].mean(axis=0) + 0.5 * joints[[1, 4, 7, 10]].mean(axis=0)
        palm_ids = np.flatnonzero(self.labels == 0)
        near = palm_ids[np.linalg.norm(self.rest_vertices[palm_ids] - centre, axis=1) < 0.025]
        depth = (self.rest_vertices[near] - centre) @ self.palm_normal
        self.palm_point = centre + self.palm_normal * depth.max()
        tips = dict(zip(FINGERS, data.tip_vertex_ids))
        self.axes = np.zeros((NUM_JOINTS, 3))
        self.topology = _hand_topology(data)
        self.moved: dict[int, np.ndarray] = self.topology["moved"]
        self.link: dict[int, np.ndarray] = self.topology["link"]
        for finger in FINGERS:
            chain = FINGER_JOINTS[finger]
            for k, j in enumerate(chain):
                nxt = joints[chain[k + 1]] if k + 1 < 3 else self.rest_vertices[tips[finger]]
                axis = np.cross(nxt - joints[j], self.palm_normal)
                self.axes[j] = axis / np.linalg.norm(axis)
        # the thumb's opposition turns it about the hand's long axis, toward the palm side
        thumb_tip = self.rest_vertices[tips["thumb"]] - joints[13]
        probe = rotation_about(self.forward, 0.3) @ thumb_tip
        self.opposition_axis = self.forward if (probe - thumb_tip) @ self.palm_normal > 0 else -self.forward
        self.probe_ids = np.arange(0, data.num_vertices, 2)

    def pose(self, params: HandParams, vertex_ids: np.ndarray | None = None) -> HandOutput:
        return skin(self.data, self.v_shaped, self.rest_j, params.full_pose(), params.transl, vertex_ids)


def _rigid_params(kin: _HandKinematics, rotation: np.ndarray, palm_target: np.ndarray, hand_pose: np.ndarray):
    """Params whose palm point lands on ``palm_target`` with global rotation ``rotation``."""
    transl = palm_target - rotation @ (kin.palm_point - kin.wrist) - kin.wrist
    return HandParams(matrix_to_axis_angle(rotation), hand_pose, transl, kin.betas)


def _hand_rotation(kin: _HandKinematics, normal: np.ndarray, roll: float) -> np.ndarray:
    """Rotation taking the palm normal to ``-normal`` and turned by ``roll`` about it."""
    a, b = kin.palm_normal, -normal / np.linalg.norm(normal)
    v = np.cross(a, b)
    c = float(a @ b)
    if np.linalg.norm(v) < 1e-9:
        perp = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        align = rotation_about(perp, np.pi) if c < 0 else np.eye(3)
    else:
        align = rotation_about(v, np.arctan2(np.linalg.norm(v), c))
    return rotation_about(b, roll) @ align


def _set_joint(hand_pose: np.ndarray, joint: int, rotation: np.ndarray) -> np.ndarray:
    out = np.array(hand_pose, dtype=np.float64).reshape(-1, 45).copy()
    out[:, (joint - 1) * 3 : joint * 3] = matrix_to_axis_angle(rotation)
    return out


# -- the ``contact`` sampler: grasp types, synergy closing, vectorised ----------------------------------------------

# Synergy: flexion (radians) of the proximal, middle and distal joint at full closure; a finger closes along
# ``s * FLEXION`` so the distal joints follow the proximal one (DIP ~ 2/3 PIP, as in human hands).
FINGER_SYNERGY = (1.45, 1.75, 1.15)
THUMB_SYNERGY = (0.55, 0.85, 1.1)
GRASP_TYPES = ("power", "precision", "lateral")
# pre-shape closure, thumb opposition range (rad) per grasp type
_PRESHAPE = {"power": (0.08, None), "precision": (0.35, (0.9, 1.25)), "lateral": (0.2, (0.7, 1.1))}
_STEPS = 32  # closing steps over the full synergy range (tip moves ~4 mm a step)
_BISECT = 5
_CHUNK = 8  # closing steps probed together
_RETRO = np.array([-0.15, -0.3])  # thumb retroposition tried when no opposition leaves it clear (radians)
_EDGE_WRAP = 0.03  # on a flat face of a thin part, an edge this near is wrapped by the fingers
_FLAT = 0.09  # a face is flat where straight lines through the point stay inside the part this far both ways
_SLAB = 0.03  # power grasps on parts at most this thick put the middle finger joints over the edge
_PER_LINK = 40  # probe vertices per link while closing
_BACK_OFF = 0.02  # exact distances this deep when the hand backs off to free the thumb
_SWEEP_BAND = 0.0015  # closing and sliding need exact distances only this close (touch at 0.5 mm)


def _thin_flat_face(thickness: np.ndarray, exit_line: np.ndarray, flat_grasps: bool) -> np.ndarray:
    """Points on a flat face (straight lines stay inside ``_FLAT`` both ways) of a part under 15 mm thick, where
    the hand does not lie flat (``flat_grasps`` off): grasped only by wrapping a near edge."""
    return (thickness < 0.015) & (exit_line > _FLAT) & (not flat_grasps)


def classify_approach(
    thickness: np.ndarray,
    exit_min: np.ndarray,
    object_diagonal: float,
    flat_grasps: bool = False,
    exit_line: np.ndarray | None = None,
) -> np.ndarray:
    """Grasp type of each approach point from local geometry (``""`` = rejected).

    Args:
        thickness: (M,) metres through the object along ``-normal`` from the point (0.2 = did not exit).
        exit_min: (M,) metres, the shortest distance (over 12 directions in the tangent plane, 4 mm below the
            surface or halfway through a thinner part) at which the object ends -- small on an edge or rim of a thin part, ~1.5 cm around a can.
        object_diagonal: bounding-box diagonal, metres.
        exit_line: (M,) metres, over the 6 lines through the point in the tangent plane, the smallest distance at
            which the object has ended both ways (small around a curved wall, large on a flat plate even near its
            rim); default ``exit_min``.

    Rules, in order: ``lateral`` where the part is thin across the tangent plane (``exit_min`` <= 6 mm: a plate's
    rim, a lid's edge, a spoon's handle; thumb and fingers pinch across it); rejected on a face of a thin flat part
    (``thickness`` < 15 mm with ``exit_line`` > 2 cm: a flat hand on a face, unless ``flat_grasps``) except on a
    flat face (``exit_line`` > 9 cm) within 3 cm of its edge -- there the fingers wrap the edge (a laptop lid's top,
    a tray's rim: the sampler turns them toward the edge and the palm back until their middle joints are over it,
    the thumb on the near face); ``precision``
    on small objects (diagonal < 10 cm: fingertips); ``power`` where the fingers can curl around: an edge or the
    surface curving away within 3 cm (cylinders, handles, boxes' edges), or within 4.5 cm where the part is at most
    9 cm thick (a box's side) -- anywhere on a part at most 9 cm thick with ``flat_grasps``; otherwise rejected
    (too large to wrap here: the middle of a big face, where a hand could only lie flat).
    """
    out = np.full(len(thickness), "", dtype=object)
    exit_line = exit_min if exit_line is None else exit_line
    lateral = exit_min <= 0.006
    thin = (thickness < 0.015) & (exit_line > 0.02) & (not flat_grasps)
    flat = thin & ~(_thin_flat_face(thickness, exit_line, flat_grasps) & (exit_min <= _EDGE_WRAP))
    small = object_diagonal < 0.10
    power = (exit_min <= 0.03) | ((thickness <= 0.09) & ((exit_min <= 0.045) | flat_grasps))
    out[~lateral & ~flat & power] = "precision" if small else "power"
    out[~lateral & ~flat & ~power & small] = "precision"
    out[lateral] = "lateral"
    return out


class _SynergyKinematics(_HandKinematics):
    """Adds what the vectorised sampler needs: probe vertices grouped by link, rest positions, fan-out signs."""

    def __init__(self, hand: HandModel, betas: np.ndarray):
        super().__init__(hand, betas)
        from hoigen.grasping.metrics import HandLinks

        data = self.data
        top = self.topology
        self.dominant = top["dominant"]
        self.links = HandLinks.from_rest(
            data.weights, self.rest_vertices, self.rest_j[0], data.tip_vertex_ids, dominant=self.dominant
        )
        self.finger_probe, self.probe_finger = top["finger_probe"], top["probe_finger"]
        self.group_start, self.hand_probe = top["group_start"], top["hand_probe"]
        self.thumb_probe, self.joint_of_group = top["thumb_probe"], top["joint_of_group"]
        self._plans: dict[int, tuple] = {}  # probe_positions' per-joint grouping of each probe set
        self.group_axes = self.axes[self.joint_of_group]  # (15, 3) flexion axes, finger-major, link-minor
        self.flexion = np.array([THUMB_SYNERGY if f == "thumb" else FINGER_SYNERGY for f in FINGERS])
        # abduction sign that fans each finger away from the middle finger (0 for the middle finger)
        tips = self.rest_vertices[data.tip_vertex_ids]
        # how far ahead of the palm point the fingers' middle joints (PIP) are, along the fingers
        self.pip_reach = float((self.rest_j[0, [2, 5, 8, 11]].mean(axis=0) - self.palm_point) @ self.forward)
        self.fan = np.zeros(5)
        for k, finger in enumerate(FINGERS):
            if finger in ("thumb", "middle"):
                continue
            j = FINGER_JOINTS[finger][0]
            base = self.rest_j[0, j]
            moved = rotation_about(self.palm_normal, 0.1) @ (tips[k] - base) + base
            self.fan[k] = 1.0 if np.linalg.norm(moved - tips[2]) > np.linalg.norm(tips[k] - tips[2]) else -1.0

    def vertices_of(self, params: HandParams) -> np.ndarray:
        """(V, 3) posed vertices (full skinning) of one set of parameters."""
        return self.pose(params).vertices[0]

    def probe_positions(self, rotations: np.ndarray, transl: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Rigidly skinned (dominant joint only) positions (B, P, 3) of vertices ``ids`` for local joint rotations
        (B, 16, 3, 3) and ``transl`` (B, 3)."""
        from hoigen.hands.lbs import joint_transforms

        b = rotations.shape[0]
        world = joint_transforms(
            self.data.parents, rotations, np.broadcast_to(self.rest_j, (b, NUM_JOINTS, 3))
        )
        rot = world[:, :, :3, :3]
        offset = world[:, :, :3, 3] - np.einsum("bjcd,jd->bjc", rot, self.rest_j[0]) + transl[:, None]
        order, groups, rest = self._probe_plan(ids)
        out = np.empty((b, len(ids), 3))
        for j, lo, hi in groups:  # one matrix product per joint over its vertices (no (B, P, 3, 3) gather)
            out[:, lo:hi] = np.matmul(rest[lo:hi], rot[:, j].transpose(0, 2, 1))
            out[:, lo:hi] += offset[:, j, None]
        return out if order is None else out[:, order]

    def _probe_plan(self, ids: np.ndarray):
        """(order back to ``ids``' order or None, [(joint, start, stop)], rest positions (P, 3)) of ``ids`` sorted
        by dominant joint; cached per array (the probe sets are attributes)."""
        hit = self._plans.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1:]
        dom = self.dominant[ids]
        perm = np.argsort(dom, kind="stable")
        joints, starts, counts = np.unique(dom[perm], return_index=True, return_counts=True)
        groups = [(int(j), int(a), int(a + n)) for j, a, n in zip(joints, starts, counts)]
        order = None if np.array_equal(perm, np.arange(len(ids))) else np.argsort(perm)
        self._plans[id(ids)] = (ids, order, groups, self.rest_vertices[ids[perm]])
        return self._plans[id(ids)][1:]


class ContactGraspSampler:
    """Samples ``contact`` grasps of one object with one hand (reusable across calls; works with any
    :class:`HandModel`: it uses only the MANO-structured model data).

    Recipe, per attempt of ``candidates`` candidates, all closed in one vectorised pass:

    1. approach points: area-uniform surface samples (not from below with ``exclude_below``), each probed for its
       local geometry (thickness through the object, distance to the nearest edge in the tangent plane) and given a
       grasp type by :func:`classify_approach` -- points that admit none are rejected early;
    2. hand frame: palm facing the surface; the roll points the fingers across the thin direction (``lateral``) or,
       with probability ``edge_bias``, toward the nearest edge (they wrap around a can or over a rim), else uniform;
    3. pre-shape by type (closure ``s0`` of the synergy, thumb opposition, fingers fanned out), slide in along the
       normal until the first touch (conservative advancement);
    4. synergy closing: each finger (and the thumb) closes along ``s * FINGER_SYNERGY`` (distal joints follow the
       proximal one) until a link presses ``press_mm`` into the surface (``_STEPS`` steps, then bisection); if the
       touching link is not the
       distal one, the joints up to it stop and the distal ones continue along the synergy -- the finger wraps;
    5. back-off of a penetration deeper than ``max_penetration_mm`` - 0.5 mm (only what the gate would reject:
       opening a squeezing finger loses the hold), metrics (penetration, contacts per link, finger overlap, force
       closure), gate.

    Distances come from a dense narrow-band SDF grid (:class:`GridSDF`, exact node values, trilinear lookup),
    cached with the sampler. Everything is in the object's canonical frame.
    """

    def __init__(self, obj, hand: HandModel, config: GraspConfig, sdf=None):
        from hoigen.grasping.sdf import GridSDF, stratified_surface_samples

        self.obj = obj
        self.hand = hand
        self.config = config
        if sdf is None:
            sdf = GridSDF(obj.mesh, spacing=config.grid_spacing_mm / 1000.0, fill=config.sdf_grid)
        self.sdf = sdf
        self.approach_points, self.approach_normals, _ = stratified_surface_samples(obj.mesh, 0.003, 60_000)
        self._touch = 0.0005
        self._settle = 0.0003
        self._press = config.press_mm / 1000.0
        # back off only what the gate would reject: opening a finger that squeezes loses the hold
        self._backoff = max(self._press + 0.001, (config.max_penetration_mm - 0.5) / 1000.0)
        self._kin_cache: dict[bytes, _SynergyKinematics] = {}
        mesh = obj.mesh
        self.centre = np.asarray(mesh.center_mass if mesh.is_watertight else mesh.bounds.mean(axis=0), float)
        self.scale = float(np.linalg.norm(mesh.vertices - self.centre, axis=1).max())
        self.diagonal = float(np.linalg.norm(mesh.extents))
        self.rejected: dict[str, int] = {}
        self._physics = None

    def _kinematics(self, betas: np.ndarray) -> _SynergyKinematics:
        key = betas.tobytes()
        if key not in self._kin_cache:
            self._kin_cache = {key: _SynergyKinematics(self.hand, betas)}
        return self._kin_cache[key]

    # -- 1. approach points and grasp types ------------------------------------------------------------------
    def _local_geometry(self, points: np.ndarray, normals: np.ndarray):
        """Thickness (M,), exit distances (M, 12) and their directions (M, 12, 3) at ``points`` (M, 3)."""
        m = len(points)
        helper = np.where(
            np.abs(normals[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])
        )
        a = np.cross(normals, helper)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b = np.cross(normals, a)
        angles = 2.0 * np.pi * np.arange(12) / 12
        dirs = np.cos(angles)[None, :, None] * a[:, None] + np.sin(angles)[None, :, None] * b[:, None]
        depth = np.array(
            [0.002, 0.003, 0.005, 0.008, 0.011, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.09, 0.12]
        )
        line = points[:, None] - normals[:, None] * depth[None, :, None]
        out = ~self.sdf.inside(line)
        thickness = np.where(out.any(axis=1), depth[np.argmax(out, axis=1)], 0.2)
        # probe the tangent plane 4 mm below the surface, or halfway through a thinner part
        below = np.minimum(
            0.004, 0.5 * np.where(out.any(axis=1), depth[np.maximum(np.argmax(out, axis=1) - 1, 0)], 1.0)
        )
        below = np.maximum(below, 0.001)
        steps = np.array([0.002, 0.004, 0.006, 0.009, 0.013, 0.018, 0.025, 0.035, 0.05, 0.07, 0.1, 0.13])
        probes = (points - below[:, None] * normals)[:, None, None] + dirs[:, :, None] * steps[
            None, None, :, None
        ]
        outside = ~self.sdf.inside(probes)  # (M, 12, 12)
        exit_at = np.where(outside.any(axis=2), steps[np.argmax(outside, axis=2)], 0.2)
        return thickness, exit_at.reshape(m, 12), dirs

    def _approaches(self, kin: _SynergyKinematics, rng: np.random.Generator, count: int) -> list[dict]:
        cfg = self.config
        draw = rng.integers(len(self.approach_points), size=max(6 * count, 48))
        pts, nrm = self.approach_points[draw], self.approach_normals[draw]
        keep = np.ones(len(draw), dtype=bool)
        if cfg.exclude_below:
            keep &= nrm @ self.obj.up > -0.5
        # the local geometry of the kept points in chunks, in draw order, only until ``count`` are found (each
        # point's probes are its own: the same approaches as probing all drawn points at once)
        out = []
        for start in range(0, len(draw), 2 * count):
            if len(out) == count:
                break
            span = np.arange(start, min(start + 2 * count, len(draw)))
            ids = span[keep[span]]
            row = np.cumsum(keep[span]) - 1  # row of each kept point of the span in the chunk's geometry
            if len(ids):
                thickness, exit_at, dirs = self._local_geometry(pts[ids], nrm[ids])
                line = np.maximum(exit_at[:, :6], exit_at[:, 6:]).min(axis=1)
                types = classify_approach(thickness, exit_at.min(axis=1), self.diagonal, cfg.flat_grasps, line)
                # a flat face of a thin part (classified power only near its edge): the fingers go toward that edge
                thin_face = _thin_flat_face(thickness, line, cfg.flat_grasps)
            for i, r in zip(span, row):
                if not keep[i]:
                    self._count("below")
                    continue
                if types[r] == "":
                    reason = "flat face of a thin part" if thickness[r] < 0.015 else "too large to wrap"
                    self._count(reason)
                    continue
                out.append(
                    self._approach(
                        kin, rng, pts[i], nrm[i], types[r], thickness[r], exit_at[r], dirs[r], thin_face[r]
                    )
                )
                if len(out) == count:
                    break
        return out

    def _approach(self, kin, rng, point, normal, kind, thickness, exit_at, dirs, thin_face) -> dict:
        """One approach (hand frame from the roll, grasp type, local geometry) at a kept surface point."""
        cfg = self.config
        if kind == "lateral":
            k = int(np.argmin(exit_at))
            direction = dirs[k] * (1.0 if rng.uniform() < 0.5 else -1.0)
        elif thin_face or rng.uniform() < cfg.edge_bias:
            w = np.exp(-exit_at / 0.02)
            k = rng.choice(12, p=w / w.sum())
            direction = dirs[k]
            if kind == "power" and thickness <= _SLAB and exit_at[k] < kin.pip_reach:
                # a slab's edge: the palm moves back until the fingers' middle joints are over the edge, the
                # proximal phalanges lie on the near face and the middle and distal ones curl around the edge
                point = point - direction * (kin.pip_reach - exit_at[k])
        else:
            ang = rng.uniform(0.0, 2.0 * np.pi)
            direction = np.cos(ang) * dirs[0] + np.sin(ang) * dirs[3]
        jitter = rng.uniform(-np.pi / 12, np.pi / 12) if kind != "lateral" else rng.uniform(-0.1, 0.1)
        fingers0 = _hand_rotation(kin, normal, 0.0) @ kin.forward
        roll = float(np.arctan2(np.cross(fingers0, direction) @ -normal, fingers0 @ direction) + jitter)
        return {
            "point": point,
            "normal": normal,
            "roll": roll,
            "type": kind,
            "thickness_mm": float(thickness * 1000.0),
            "edge_mm": float(exit_at.min() * 1000.0),
        }

    # -- 2-4. pose, slide, close -----------------------------------------------------------------------------
    def _local_rotations(self, kin, rglob: np.ndarray, base: np.ndarray, angles: np.ndarray) -> np.ndarray:
        """(B, 16, 3, 3) local joint rotations from global rotations (B, 3, 3), pre-shape rotations (B, 16, 3, 3)
        and flexion angles (B, 5, 3)."""
        rot = base.copy()
        rot[:, 0] = rglob
        # every joint about its fixed flexion axis in one call
        flex = axis_angle_to_matrix(angles.reshape(len(angles), 15)[..., None] * kin.group_axes)
        rot[:, kin.joint_of_group] = flex @ base[:, kin.joint_of_group]
        return rot

    def _group_min(self, kin, d: np.ndarray) -> np.ndarray:
        """(B, 15) smallest distance per finger link from (B, P) probe distances."""
        return np.minimum.reduceat(d, kin.group_start, axis=1)

    def _sweep(self, kin, rglob, base, transl, lo, hi, active):
        """Close every active (candidate, finger) from ``lo`` to ``hi`` (C, 5, 3) angles until a link presses
        ``press_mm`` into the surface.

        Returns the final angles (C, 5, 3) and the touching link (C, 5) (-1 = none, the finger reached ``hi``)."""
        c = len(rglob)
        t = np.linspace(0.0, 1.0, _STEPS + 1)
        ang = lo[:, None] + t[None, :, None, None] * (hi - lo)[:, None]  # (C, K, 5, 3)
        moving = np.abs(hi - lo) > 1e-9  # (C, 5, 3): links whose joint turns (frozen ones already touch)
        # the steps in chunks: a finger that has touched (or is not active) is not probed in later chunks -- the
        # first touching step of every finger is the same as with all steps probed
        gmin = np.full((c, _STEPS + 1, 5, 3), np.inf)
        pending = active.copy()
        for start in range(0, _STEPS + 1, _CHUNK):
            rows = np.flatnonzero(pending.any(axis=1))
            if len(rows) == 0:
                break
            ks = np.arange(start, min(start + _CHUNK, _STEPS + 1))
            n = len(ks)
            rep = lambda x: np.repeat(x[rows], n, axis=0)  # noqa: E731, B023
            rot = self._local_rotations(kin, rep(rglob), rep(base), ang[rows][:, ks].reshape(-1, 5, 3))
            pos = kin.probe_positions(rot, rep(transl), kin.finger_probe)
            need = np.repeat(pending[rows][:, kin.probe_finger], n, axis=0)
            d = np.full(need.shape, np.inf)
            d[need] = self.sdf(pos[need], _SWEEP_BAND)
            g = np.where(moving[rows][:, None], self._group_min(kin, d).reshape(len(rows), n, 5, 3), np.inf)
            gmin[rows[:, None], ks[None, :]] = g
            pending[rows] &= ~(g.min(axis=3) <= -self._press).any(axis=1)
        touched = gmin.min(axis=3) <= -self._press  # (C, K, 5)
        first = np.where(touched.any(axis=1), np.argmax(touched, axis=1), -1)  # (C, 5)
        first[~active] = -1
        t_lo = np.where(first > 0, t[np.maximum(first - 1, 0)], 0.0)
        t_hi = np.where(first >= 0, t[np.maximum(first, 0)], 1.0)
        # each finger's link distances at its ``t_hi`` (a finger's probes move with its own joints only, so the
        # values asked with the other fingers elsewhere are its own): the touching link needs no new query
        g_hi = np.full((c, 5, 3), np.inf)
        ci, fi = np.nonzero(first >= 0)
        g_hi[ci, fi] = gmin[ci, first[ci, fi], fi]
        refine = first > 0
        for _ in range(_BISECT):  # only the refined fingers of the candidates that have one are probed
            if not refine.any():
                break
            mid = 0.5 * (t_lo + t_hi)
            rows = np.flatnonzero(refine.any(axis=1))
            a = lo[rows] + np.where(refine[rows], mid[rows], t_hi[rows])[..., None] * (hi - lo)[rows]
            rot = self._local_rotations(kin, rglob[rows], base[rows], a)
            pos = kin.probe_positions(rot, transl[rows], kin.finger_probe)
            need = refine[rows][:, kin.probe_finger]
            d = np.full(need.shape, np.inf)
            d[need] = self.sdf(pos[need], _SWEEP_BAND)
            g = np.full((c, 5, 3), np.inf)
            g[rows] = np.where(moving[rows], self._group_min(kin, d).reshape(len(rows), 5, 3), np.inf)
            hit = g.min(axis=2) <= -self._press
            g_hi = np.where((refine & hit)[..., None], g, g_hi)
            t_hi = np.where(refine & hit, mid, t_hi)
            t_lo = np.where(refine & ~hit, mid, t_lo)
        t_fin = np.where(active, t_hi, 0.0)
        final = lo + t_fin[..., None] * (hi - lo)
        link = np.where(first >= 0, np.argmin(np.where(g_hi <= -self._press, np.arange(3), 9), axis=2), -1)
        return final, np.where(active, link, -1)

    def _close(self, kin, rglob, base, transl, s0):
        """Synergy closing with distal continuation; returns flexion angles (C, 5, 3)."""
        c = len(rglob)
        full = np.broadcast_to(kin.flexion, (c, 5, 3))
        lo = s0[:, :, None] * full
        active = np.ones((c, 5), dtype=bool)
        angles, link = self._sweep(kin, rglob, base, transl, lo, full, active)
        for _ in range(2):  # the joints up to the touching link stop, the distal ones go on
            more = (link >= 0) & (link < 2)
            if not more.any():
                break
            frozen = np.arange(3)[None, None, :] <= link[..., None]
            hi = np.where(frozen, angles, np.maximum(full, angles))
            new, new_link = self._sweep(kin, rglob, base, transl, angles, hi, more)
            angles = np.where(more[..., None], new, angles)
            link = np.where(more, np.where(new_link >= 0, np.maximum(new_link, link + 1), 2), 2)
        return angles

    def _candidates(self, kin, approaches: list[dict], rng: np.random.Generator, keep: int | None = None):
        """Pose, slide in and close the hand for ``approaches``: (params, approach) of at most ``keep`` (default
        all) of them, the first that slid onto the object with the thumb clear, in order."""
        cfg = self.config
        c = len(approaches)
        if c == 0:  # every drawn approach point was rejected (counted in ``self.rejected``)
            return []
        rglob = np.stack([_hand_rotation(kin, a["normal"], a["roll"]) for a in approaches])
        base = np.broadcast_to(np.eye(3), (c, NUM_JOINTS, 3, 3)).copy()
        s0 = np.zeros((c, 5))
        for i, a in enumerate(approaches):
            pre, opp_range = _PRESHAPE[a["type"]]
            opp = float(rng.uniform(*(opp_range or cfg.thumb_opposition_rad)))
            a["thumb_opposition"] = opp
            base[i, 13] = rotation_about(kin.opposition_axis, opp)
            for k, finger in enumerate(FINGERS[1:], start=1):
                spread = kin.fan[k] * rng.uniform(0.0, cfg.finger_spread_rad)
                base[i, FINGER_JOINTS[finger][0]] = rotation_about(kin.palm_normal, spread)
            s0[i] = pre
        # slide in and free the thumb in order, a first chunk then the rest only when too few got through (each
        # approach's slide is its own: the same candidates as sliding all at once)
        keep = c if keep is None else keep
        transl = np.zeros((c, 3))
        ok = np.zeros(c, dtype=bool)
        first = min(c, keep + (keep + 1) // 2)
        for chunk in (np.arange(first), np.arange(first, c)):
            if len(chunk) == 0 or ok.sum() >= keep:
                break
            ok[chunk], transl[chunk], opposition = self._slide_in(
                kin, rglob[chunk], base[chunk], s0[chunk], [approaches[i] for i in chunk]
            )
            for i, opp in zip(chunk, opposition):
                approaches[i]["thumb_opposition"] = float(opp)
                base[i, 13] = rotation_about(kin.opposition_axis, float(opp))
        sel = np.flatnonzero(ok)[:keep]
        if len(sel) == 0:
            return []
        angles = self._close(kin, rglob[sel], base[sel], transl[sel], s0[sel])
        rot = self._local_rotations(kin, rglob[sel], base[sel], angles)
        out = []
        for n, i in enumerate(sel):
            pose = matrix_to_axis_angle(rot[n, 1:]).reshape(1, 45)
            params = HandParams(matrix_to_axis_angle(rglob[i]), pose, transl[i], kin.betas)
            out.append((params, approaches[i]))
        return out

    def _slide_in(self, kin, rglob, base, s0, approaches: list[dict]):
        """Slide the pre-shaped hands (C,) in along -normal from 8 cm out until the first touch (conservative
        advancement), then turn each thumb into the largest clear opposition. Returns (ok (C,), transl (C, 3),
        thumb opposition (C,))."""
        c = len(approaches)
        # slide in along -normal from 8 cm out (rigid, pre-shaped)
        pre_angles = s0[:, :, None] * kin.flexion[None]
        rot = self._local_rotations(kin, rglob, base, pre_angles)
        normal = np.stack([a["normal"] for a in approaches])
        point = np.stack([a["point"] for a in approaches])
        palm = np.einsum("bij,j->bi", rglob, kin.palm_point - kin.wrist) + kin.wrist
        transl = point + normal * 0.08 - palm
        verts = kin.probe_positions(rot, transl, kin.hand_probe)
        travelled = np.zeros(c)
        ok = np.ones(c, dtype=bool)
        moving = np.ones(c, dtype=bool)
        for it in range(40):
            if not moving.any():
                break
            ids = np.flatnonzero(moving)
            clearance = self.sdf(verts[ids] - (normal[ids] * travelled[ids, None])[:, None], _SWEEP_BAND).min(
                axis=1
            )
            clearance -= self._touch
            if it == 0:
                blocked = clearance <= 0.0
                ok[ids[blocked]] = False
                moving[ids[blocked]] = False
            done = clearance <= self._settle
            moving[ids[done]] = False
            step = np.where(done, 0.0, clearance)
            travelled[ids] += step
            gone = travelled > 0.2
            ok &= ~gone
            moving &= ~gone
        ok &= ~moving
        self._count("slide: blocked at the start or missed the object", int((~ok).sum()))
        transl = transl - normal * travelled[:, None]
        # thumb into opposition: the largest fraction of the sampled opposition that leaves it clear of the object
        # (down to none, then a little retroposition: with the palm on a face the thumb's plane is the face's)
        opp = np.array([a["thumb_opposition"] for a in approaches])
        tries = np.concatenate([opp[:, None] * np.linspace(1.0, 0.0, 9)[None], np.tile(_RETRO, (c, 1))], axis=1)
        n_try = tries.shape[1]
        trial = np.repeat(base, n_try, axis=0)
        trial[:, 13] = rotation_about(kin.opposition_axis, tries.reshape(-1))
        rep = lambda x: np.repeat(x, n_try, axis=0)  # noqa: E731
        rot = self._local_rotations(kin, rep(rglob), trial, rep(pre_angles))
        gap = self.sdf(kin.probe_positions(rot, rep(transl), kin.thumb_probe), _SWEEP_BAND).min(axis=1)
        gap = gap.reshape(c, n_try)
        clear = gap > self._touch
        # no thumb position clear (the palm on a face, the thenar below its plane): the hand backs off along the
        # normal until the least penetrating one is, then the fingers close from there
        back = np.flatnonzero(ok & ~clear.any(axis=1))
        if len(back):
            k = np.argmax(gap[back], axis=1)
            thumb_rot = rot.reshape(c, n_try, *rot.shape[1:])[back, k]
            moved = transl[back].copy()
            for _ in range(3):  # exact depths (beyond the band the sweep's field is only a bound)
                depth = self.sdf(kin.probe_positions(thumb_rot, moved, kin.thumb_probe), _BACK_OFF).min(axis=1)
                moved += normal[back] * np.maximum(self._touch + self._settle - depth, 0.0)[:, None]
            fixed = self.sdf(kin.probe_positions(thumb_rot, moved, kin.thumb_probe), _BACK_OFF).min(axis=1)
            fixed = fixed > self._touch
            transl[back[fixed]] = moved[fixed]
            clear[back[fixed], k[fixed]] = True
        self._count("thumb cannot clear the object", int((ok & ~clear.any(axis=1)).sum()))
        ok &= clear.any(axis=1)
        return ok, transl, tries[np.arange(c), np.argmax(clear, axis=1)]

    def _count(self, reason: str, n: int = 1) -> None:
        if n:
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def _enough_contacts(self, kin, vertices: np.ndarray, dist: np.ndarray | None = None) -> bool:
        """Early rejection before the metrics: enough fingers (and the thumb) of the posed ``vertices`` (V, 3) within
        the contact threshold? The field is exact within the threshold and a lower bound beyond, so the count is the
        metrics' count (``dist``: the vertices' distances from ``self.sdf.closest`` when already asked)."""
        cfg = self.config
        thr = cfg.contact_threshold_mm / 1000.0
        d = self.sdf(vertices, thr) if dist is None else dist
        near = np.array([d[kin.labels == k + 1].min() <= thr for k in range(5)])
        if near.sum() >= cfg.min_fingers_in_contact and (near[0] or not cfg.require_thumb):
            return True
        self._count("closing left the thumb or too many fingers off the object")
        return False

    def _settled(self, kin, params: HandParams):
        """Back off a penetration the gate would reject; the final params, their posed hand and its distances
        (``sdf.closest``, reused by the screen and the metrics)."""
        out = kin.pose(params)
        near = self.sdf.closest(out.vertices[0])
        if near[0].min() < -self._backoff:
            params, near = back_off_penetration(
                params, kin.vertices_of, self.sdf, kin.labels, tolerance=self._backoff, distances=near,
                with_distances=True,
            )
            out = kin.pose(params)
            if near is None:  # the back-off stopped after its last step, unasked
                near = self.sdf.closest(out.vertices[0])
        return params, out, near

    def _evaluate(
        self, kin, params: HandParams, screen: bool = False, posed=None, relaxed: bool | None = None
    ) -> dict | None:
        """Metrics and score of ``params``; with ``screen``, None when :meth:`_enough_contacts` rejects it.
        ``posed``: (HandOutput, distances) of ``params`` from :meth:`_settled`. With ``relaxed`` (the gate's state)
        the costly terms (finger overlap, force closure) are computed only when the rest of the gate passes -- a
        candidate failing it fails whatever they are, and its metrics go without them; None = always."""
        from hoigen.grasping.metrics import grasp_metrics as metrics_of
        from hoigen.grasping.metrics import link_quality

        out, near = posed if posed is not None else (kin.pose(params), None)
        vertices = out.vertices[0]
        if near is None:
            near = self.sdf.closest(vertices)
        if screen and not self._enough_contacts(kin, vertices, near[0]):
            return None
        cfg = self.config
        thr = cfg.contact_threshold_mm / 1000.0
        m = metrics_of(
            vertices,
            kin.data.faces,
            kin.labels,
            self.sdf,
            thr,
            links=kin.links,
            joints16=out.joints_mano[0],
            distances=near,
            closure=False,
        )
        if relaxed is None or cfg.passes(m, relaxed):
            m.update(
                link_quality(
                    vertices, out.joints_mano[0], kin.links, near, thr, self.centre, self.scale, cfg.friction
                )
            )
        m["score"] = score_v2(m)
        return m

    def physics(self):
        """The hold test of this object (built on first use; see ``hoigen.grasping.physics``)."""
        if self._physics is None:
            from hoigen.grasping.physics import HoldTest

            self._physics = HoldTest(self.obj.mesh, friction=self.config.friction)
        return self._physics

    # -- public ---------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Grasp:
        """The best gate-passing grasp, or :class:`GraspError` after ``max_attempts`` batches."""
        cfg = self.config
        gate = GateSelection(cfg)
        for attempt in range(cfg.max_attempts):
            kin = self._kinematics(sample_betas(cfg, rng))
            gate.new_attempt()
            gate.relaxed = attempt >= cfg.fallback_start()
            # twice the approaches: those that cannot slide in or free the thumb are dropped before the closing,
            # which gets the first ``candidates`` of the rest
            approaches = self._approaches(kin, rng, 2 * cfg.candidates)
            closed = self._candidates(kin, approaches, rng, keep=cfg.candidates)
            gate.tried += len(closed)
            passing = []
            for params, approach in closed:
                params, out, near = self._settled(kin, params)
                metrics = self._evaluate(kin, params, screen=True, posed=(out, near), relaxed=gate.relaxed)
                if metrics is None:
                    continue
                metrics["grasp_type"] = approach["type"]
                metrics["gate_relaxed"] = gate.relaxed
                info = {
                    "point": approach["point"].tolist(),
                    "normal": approach["normal"].tolist(),
                    "roll": approach["roll"],
                    "thumb_opposition": approach["thumb_opposition"],
                    "type": approach["type"],
                    "thickness_mm": approach["thickness_mm"],
                    "edge_mm": approach["edge_mm"],
                }
                if cfg.gate_physics and cfg.passes(metrics, gate.relaxed):
                    passing.append((params, metrics, info))
                    continue
                gate.offer(params, metrics, info)
            if passing:  # physics only for the gate's survivors, best first, until one holds
                passing.sort(key=lambda x: -x[1]["score"])
                for params, metrics, info in passing:
                    held = self.physics().run(self.hand, params)
                    metrics["physics_held_directions"] = held["held_directions"]
                    metrics["physics_held"] = held["held"]
                    gate.offer(params, metrics, info)
                    if held["held"]:
                        break
            if gate.best is not None:
                params, metrics, approach = gate.best
                return Grasp(
                    params, metrics, "contact", self.hand.name, self.obj.id, approach, gate.tried, gate.passed
                )
        detail = gate.failure_detail()
        if detail is None:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "none touched"
            detail = f"no approach point admits a grasp ({reasons})"
        raise GraspError(
            gate.tried,
            f"no grasp of {self.obj.id} passed the quality gate after {gate.tried} candidates ({detail}); "
            "relax the gate (e.g. min_fingers_in_contact) or raise max_attempts",
        )


def score_v2(metrics: dict) -> float:
    """:func:`score` plus force closure, contacts with middle/distal links; finger overlap costs."""
    return (
        score(metrics)
        + 10.0 * min(metrics.get("force_closure", 0.0), 0.2)
        + 0.5 * metrics.get("segment_contact_fraction", 0.0)
        - 0.5 * metrics.get("finger_overlap_mm", 0.0)
    )


def sample_contact_grasp(obj, hand: HandModel, config: GraspConfig, rng: np.random.Generator) -> Grasp:
    """One grasp of ``obj`` (an ObjectAsset) with ``hand`` by ``config.method`` (``contact`` or ``contact-v1``)."""
    if config.method == "contact-v1":
        from hoigen.grasping.contact_v1 import ContactV1Sampler

        return ContactV1Sampler(obj, hand, config).sample(rng)
    return ContactGraspSampler(obj, hand, config).sample(rng)
