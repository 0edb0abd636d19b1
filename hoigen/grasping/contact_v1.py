"""The ``contact-v1`` grasp, kept selectable as the baseline of the ``contact`` grasp (``--grasp contact-v1``).

Recipe, for either hand model: pick an approach point on the object surface (area-uniform), turn the palm to face
it with a random roll, pre-shape the hand (thumb opposed, fingers slightly spread), slide the hand along the surface
normal until it first touches, then close every finger joint by joint -- each joint turns until its link touches
the surface, a touch on a more distal link ends the finger -- and finally back off any remaining penetration.
Contacts are found with the object's sampled signed distance field (:class:`SurfaceSDF`, KD-tree queries).
Candidates are scored and the best one that passes the quality gate is kept; a batch with no passing candidate is
resampled. Everything is in the object's canonical frame.
"""

from __future__ import annotations

import numpy as np

from hoigen.geometry.rotations import axis_angle_to_matrix, rotation_about
from hoigen.grasping.contact import (
    _FINGER_LIMITS,
    _THUMB_LIMITS,
    GateSelection,
    Grasp,
    GraspConfig,
    GraspError,
    _hand_rotation,
    _HandKinematics,
    _rigid_params,
    _set_joint,
    back_off_penetration,
    sample_betas,
    score,
)
from hoigen.grasping.metrics import grasp_metrics
from hoigen.grasping.sdf import SurfaceSDF
from hoigen.hands.model import FINGER_JOINTS, HandModel, HandParams


class ContactV1Sampler:
    """Samples ``contact-v1`` grasps of one object with one hand (reusable across calls)."""

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
            kin = self._kinematics(sample_betas(cfg, rng))
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
                    params,
                    metrics,
                    "contact-v1",
                    self.hand.name,
                    self.obj.id,
                    approach,
                    gate.tried,
                    gate.passed,
                )
        detail = gate.failure_detail() or "no candidate touched the object"
        raise GraspError(
            gate.tried,
            f"no grasp of {self.obj.id} passed the quality gate after {gate.tried} candidates ({detail}); "
            "relax the gate (e.g. min_fingers_in_contact) or raise max_attempts",
        )
