"""The ``contact`` grasp: a physically plausible grasp from geometry alone (no learned weights).

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
from hoigen.grasping.metrics import grasp_metrics
from hoigen.grasping.sdf import SurfaceSDF
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
        method: grasp method: ``contact`` (geometry only) or ``grabnet`` (GrabNet's released networks; needs the MANO
            hand and the weights, see ``hoigen.grasping.grabnet``).
        candidates: candidates tried per attempt.
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

    def __post_init__(self):
        if self.method not in ("contact", "grabnet"):
            raise ValueError(f"grasp method must be 'contact' or 'grabnet', got {self.method!r}")
        for name in ("candidates", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"grasp {name} must be >= 1, got {getattr(self, name)}")
        for name in ("contact_threshold_mm", "max_penetration_mm", "sdf_spacing_mm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"grasp {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.min_fingers_in_contact <= 5:
            raise ValueError(f"min_fingers_in_contact must be in 0..5, got {self.min_fingers_in_contact}")
        if not 0.0 <= self.edge_bias <= 1.0:
            raise ValueError(f"edge_bias must be a probability in [0, 1], got {self.edge_bias}")
        if self.betas_std < 0:
            raise ValueError(f"betas_std must be >= 0, got {self.betas_std}")

    def passes(self, metrics: dict) -> bool:
        """The quality gate."""
        return (
            metrics["max_penetration_mm"] <= self.max_penetration_mm
            and metrics["num_fingers_in_contact"] >= self.min_fingers_in_contact
            and (metrics["thumb_contact"] or not self.require_thumb)
            and (metrics["thumb_opposition"] >= self.min_thumb_opposition or not self.require_thumb)
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

    def new_attempt(self) -> None:
        self.best = None

    def offer(self, params: HandParams, metrics: dict, info: dict) -> None:
        """Judge one evaluated candidate (``metrics`` must hold ``score``)."""
        if not self.config.passes(metrics):
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
        )


def back_off_penetration(
    params: HandParams,
    vertices_of,
    sdf: SurfaceSDF,
    labels: np.ndarray,
    steps: int = 4,
    tolerance: float = 0.001,
    open_factor: float = 0.85,
) -> HandParams:
    """Small de-penetration: while some vertex is deeper than ``tolerance`` (metres), open the finger it belongs to
    (its joint rotations scaled by ``open_factor``) or, for the palm, push the hand out along the surface normal.

    Args:
        params: hand parameters (batch 1), object frame; vertices_of: params -> (V, 3) posed vertices;
        labels: (V,) part labels (0 palm, 1..5 thumb..pinky).
    """
    for _ in range(steps):
        d, nearest = sdf.query(vertices_of(params))
        worst = int(np.argmin(d))
        if d[worst] >= -tolerance:
            break
        part = int(labels[worst])
        if part == 0:
            push = sdf.normals[nearest[worst]] * (-d[worst] + 0.0003)
            params = HandParams(params.global_orient, params.hand_pose, params.transl + push, params.betas)
            continue
        pose = params.hand_pose.copy()
        for joint in FINGER_JOINTS[FINGERS[part - 1]]:
            pose[0, (joint - 1) * 3 : joint * 3] *= open_factor
        params = HandParams(params.global_orient, pose, params.transl, params.betas)
    return params


def score(metrics: dict) -> float:
    """Higher is better: fingers in contact, thumb opposition, palm support and spread; penetration costs."""
    return (
        metrics["num_fingers_in_contact"]
        + 1.5 * metrics["thumb_opposition"]
        + 0.5 * metrics["palm_contact"]
        + min(metrics["contact_spread_mm"], 60.0) / 60.0
        - metrics["max_penetration_mm"] / 2.0
    )


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
        self.moved: dict[int, np.ndarray] = {}
        self.link: dict[int, np.ndarray] = {}
        dominant = np.argmax(data.weights, axis=1)
        for finger in FINGERS:
            chain = FINGER_JOINTS[finger]
            for k, j in enumerate(chain):
                nxt = joints[chain[k + 1]] if k + 1 < 3 else self.rest_vertices[tips[finger]]
                axis = np.cross(nxt - joints[j], self.palm_normal)
                self.axes[j] = axis / np.linalg.norm(axis)
                # every other vertex is probed while closing; the penetration pass then checks them all
                self.moved[j] = np.flatnonzero(data.weights[:, list(chain[k:])].sum(axis=1) > 0)[::2]
                self.link[j] = dominant[self.moved[j]] == j
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


class ContactGraspSampler:
    """Samples contact grasps of one object with one hand (reusable across calls)."""

    def __init__(self, obj, hand: HandModel, config: GraspConfig, sdf: SurfaceSDF | None = None):
        self.obj = obj
        self.hand = hand
        self.config = config
        self.sdf = sdf if sdf is not None else SurfaceSDF(obj.mesh, spacing=config.sdf_spacing_mm / 1000.0)
        self._touch = 0.0005  # a link "touches" within this distance (metres)
        self._settle = 0.0003  # advancing stops within this distance above the touch distance
        self._kin_cache: dict[bytes, _HandKinematics] = {}

    def _kinematics(self, betas: np.ndarray) -> _HandKinematics:
        key = betas.tobytes()
        if key not in self._kin_cache:
            self._kin_cache = {key: _HandKinematics(self.hand, betas)}
        return self._kin_cache[key]

    # -- one candidate --------------------------------------------------------------------------------------
    def _candidate(self, kin: _HandKinematics, rng: np.random.Generator) -> tuple[HandParams, dict] | None:
        cfg = self.config
        for _ in range(20):
            i = rng.integers(len(self.sdf.points))
            normal = self.sdf.normals[i]
            if not cfg.exclude_below or normal @ self.obj.up > -0.5:
                break
        point = self.sdf.points[i]
        roll = self._roll(kin, point, normal, rng)
        rotation = _hand_rotation(kin, normal, roll)

        # pre-shape: thumb opposition, finger abduction about the palm normal
        opp = float(rng.uniform(*cfg.thumb_opposition_rad))
        hand_pose = _set_joint(np.zeros(45), 13, rotation_about(kin.opposition_axis, opp))
        for finger in ("index", "middle", "ring", "pinky"):
            spread = rng.uniform(-cfg.finger_spread_rad, cfg.finger_spread_rad)
            hand_pose = _set_joint(
                hand_pose, FINGER_JOINTS[finger][0], rotation_about(kin.palm_normal, spread)
            )

        # slide in along -normal until the first touch (conservative advancement: a translation by the current
        # clearance cannot pass through the surface)
        start = _rigid_params(kin, rotation, point + normal * 0.06, hand_pose)
        verts = kin.pose(start, kin.probe_ids).vertices[0]
        travelled = 0.0
        for _ in range(40):
            clearance = float(self.sdf(verts - normal * travelled).min()) - self._touch
            if travelled == 0.0 and clearance <= 0.0:
                return None  # touching before moving: the approach is blocked
            if clearance <= self._settle:
                break
            travelled += clearance
            if travelled > 0.12:
                return None  # slid past the object without touching it
        params = HandParams(start.global_orient, hand_pose, start.transl - normal * travelled, kin.betas)

        for finger in ("index", "middle", "ring", "pinky", "thumb"):
            params = self._close_finger(kin, params, finger)
        params = self._resolve_penetration(kin, params)
        approach = {"point": point.tolist(), "normal": normal.tolist(), "roll": roll, "thumb_opposition": opp}
        return params, approach

    def _roll(
        self, kin: _HandKinematics, point: np.ndarray, normal: np.ndarray, rng: np.random.Generator
    ) -> float:
        """Roll about the approach axis. With probability ``edge_bias`` the fingers point toward the direction in
        which the surface ends soonest (probed just beneath it: around a cylinder, over a rim or a laptop edge),
        where they can wrap; otherwise uniform."""
        if rng.uniform() >= self.config.edge_bias:
            return float(rng.uniform(0.0, 2.0 * np.pi))
        fingers0 = _hand_rotation(kin, normal, 0.0) @ kin.forward
        a = fingers0 - (fingers0 @ normal) * normal
        a /= np.linalg.norm(a)
        b = np.cross(-normal, a)  # rotating a by +90° about -normal
        angles = 2.0 * np.pi * np.arange(12) / 12
        dirs = np.cos(angles)[:, None] * a + np.sin(angles)[:, None] * b
        steps = np.linspace(0.01, 0.12, 12)
        probes = point - 0.004 * normal + dirs[:, None, :] * steps[None, :, None]
        outside = self.sdf(probes) > 0.0  # (12 directions, 12 steps)
        exit_at = np.where(outside.any(axis=1), steps[np.argmax(outside, axis=1)], 0.2)
        weights = np.exp(-exit_at / 0.02)
        k = rng.choice(len(angles), p=weights / weights.sum())
        return float(angles[k] + rng.uniform(-np.pi / 12, np.pi / 12))

    def _close_finger(self, kin: _HandKinematics, params: HandParams, finger: str) -> HandParams:
        """Turn each joint of ``finger`` about its flexion axis until its link touches (conservative advancement:
        no vertex moves farther than its distance from the joint times the angle step)."""
        limits = _THUMB_LIMITS if finger == "thumb" else _FINGER_LIMITS
        for k, joint in enumerate(FINGER_JOINTS[finger]):
            ids = kin.moved[joint]
            sl = slice((joint - 1) * 3, joint * 3)
            base_rot = axis_angle_to_matrix(params.hand_pose[0, sl])
            angle, step, touched_link = 0.0, 0.0, None
            for _ in range(40):
                trial = HandParams(
                    params.global_orient,
                    _set_joint(params.hand_pose, joint, rotation_about(kin.axes[joint], angle) @ base_rot),
                    params.transl,
                    params.betas,
                )
                out = kin.pose(trial, ids)
                d = self.sdf(out.vertices[0])
                arg = int(np.argmin(d))
                clearance = float(d[arg]) - self._touch
                if clearance <= self._settle:
                    touched_link = bool(kin.link[joint][arg])
                    if clearance < -self._settle and angle > 0.0:
                        angle = max(angle - 0.5 * step, 0.0)  # overshoot (skin blending): step back once
                    break
                if angle >= limits[k]:
                    break
                centre = out.joint_transforms[0, joint, :3, 3]
                axis_w = out.joint_transforms[0, joint, :3, :3] @ kin.axes[joint]
                rel = out.vertices[0] - centre
                radius = float(np.linalg.norm(rel - np.outer(rel @ axis_w, axis_w), axis=1).max())
                step = max(clearance / max(radius, 1e-3), 0.002)
                angle = min(angle + step, limits[k])
            if angle > 0.0:
                params = HandParams(
                    params.global_orient,
                    _set_joint(params.hand_pose, joint, rotation_about(kin.axes[joint], angle) @ base_rot),
                    params.transl,
                    params.betas,
                )
            if touched_link is not None and not touched_link:
                break  # a more distal link touched: the finger is closed
            if touched_link is not None and angle == 0.0:
                break  # resting on the surface already
        return params

    def _resolve_penetration(self, kin: _HandKinematics, params: HandParams) -> HandParams:
        return back_off_penetration(params, lambda p: kin.pose(p).vertices[0], self.sdf, kin.labels)

    # -- public ---------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Grasp:
        """The best gate-passing grasp, or :class:`GraspError` after ``max_attempts`` batches."""
        cfg = self.config
        threshold = cfg.contact_threshold_mm / 1000.0
        gate = GateSelection(cfg)
        for _attempt in range(cfg.max_attempts):
            betas = np.zeros(NUM_BETAS)
            if cfg.betas_std > 0:
                betas = np.clip(rng.normal(0.0, cfg.betas_std, NUM_BETAS), -2.5, 2.5)
            kin = self._kinematics(betas)
            gate.new_attempt()
            for _ in range(cfg.candidates):
                gate.tried += 1
                found = self._candidate(kin, rng)
                if found is None:
                    continue
                params, approach = found
                verts = kin.pose(params).vertices[0]
                metrics = grasp_metrics(verts, kin.data.faces, kin.labels, self.sdf, threshold)
                metrics["score"] = score(metrics)
                gate.offer(params, metrics, approach)
            if gate.best is not None:
                params, metrics, approach = gate.best
                return Grasp(
                    params, metrics, "contact", self.hand.name, self.obj.id, approach, gate.tried, gate.passed
                )
        detail = gate.failure_detail() or "no candidate touched the object"
        raise GraspError(
            gate.tried,
            f"no grasp of {self.obj.id} passed the quality gate after {gate.tried} candidates ({detail}); "
            "relax the gate (e.g. min_fingers_in_contact) or raise max_attempts",
        )


def sample_contact_grasp(obj, hand: HandModel, config: GraspConfig, rng: np.random.Generator) -> Grasp:
    """One contact grasp of ``obj`` (an ObjectAsset) with ``hand``; see :class:`ContactGraspSampler`."""
    return ContactGraspSampler(obj, hand, config).sample(rng)
