"""The hand interface shared by MANO (smplx) and hoigen's built-in hand.

Conventions (SPEC §2): right hand, MANO parameterisation — ``global_orient`` (3, axis-angle), ``hand_pose``
(45, axis-angle per finger joint, flat mean), ``transl`` (3, metres), ``betas`` (10). The 16 kinematic joints are in
MANO order (wrist, index 1-3, middle 1-3, pinky 1-3, ring 1-3, thumb 1-3); keypoints returned to users are 21 in
OpenPose order (wrist, thumb 1-4, index 1-4, middle 1-4, ring 1-4, pinky 1-4) with fingertips taken at mesh
vertices. ``transl`` is added after the global rotation, which turns the hand about the rest-pose wrist joint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_JOINTS = 16
NUM_BETAS = 10
# Parent of each MANO joint (-1 for the wrist).
MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# MANO joints of each finger, proximal to distal.
FINGER_JOINTS: dict[str, tuple[int, int, int]] = {
    "thumb": (13, 14, 15),
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "ring": (10, 11, 12),
    "pinky": (7, 8, 9),
}
# Part label of each vertex: 0 palm, then one label per finger in FINGERS order.
PART_NAMES = ("palm",) + FINGERS
MANO_TIP_VERTEX_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (MANO right hand)
# 16 MANO joints + 5 tips (thumb, index, middle, ring, pinky as 16..20) -> OpenPose order.
OPENPOSE_FROM_MANO = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])
OPENPOSE_NAMES = ("wrist",) + tuple(f"{f}{i}" for f in FINGERS for i in range(1, 5))


def joint_part_labels() -> np.ndarray:
    """(16,) part label of each MANO joint (0 for the wrist)."""
    labels = np.zeros(NUM_JOINTS, dtype=np.uint8)
    for k, finger in enumerate(FINGERS):
        labels[list(FINGER_JOINTS[finger])] = k + 1
    return labels


@dataclass(frozen=True, eq=False)
class HandModelData:
    """A MANO-structured linear blend skinning model, as numpy arrays (metres).

    Attributes:
        name: model name written to metadata (``mano``, ``hoigen-builtin-v2`` or ``hoigen-builtin-v1``).
        v_template: (V, 3) rest vertices.
        faces: (F, 3) int triangle indices.
        shapedirs: (V, 3, B) shape blend shapes, B >= 10 (only the first 10 are used).
        posedirs: (135, V * 3) pose corrective blend shapes (smplx layout) or None.
        J_regressor: (16, V) joint regressor.
        weights: (V, 16) skinning weights, rows sum to 1.
        parents: (16,) kinematic tree (MANO_PARENTS).
        tip_vertex_ids: (5,) fingertip vertices, thumb to pinky.
    """

    name: str
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray | None
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    tip_vertex_ids: np.ndarray

    def __post_init__(self):
        v = self.v_template.shape[0]
        checks = [
            (self.v_template.shape == (v, 3), "v_template", (v, 3), self.v_template.shape),
            (self.faces.ndim == 2 and self.faces.shape[1] == 3, "faces", ("F", 3), self.faces.shape),
            (
                self.shapedirs.ndim == 3
                and self.shapedirs.shape[:2] == (v, 3)
                and self.shapedirs.shape[2] >= NUM_BETAS,
                "shapedirs",
                (v, 3, ">=10"),
                self.shapedirs.shape,
            ),
            (
                self.J_regressor.shape == (NUM_JOINTS, v),
                "J_regressor",
                (NUM_JOINTS, v),
                self.J_regressor.shape,
            ),
            (self.weights.shape == (v, NUM_JOINTS), "weights", (v, NUM_JOINTS), self.weights.shape),
            (self.tip_vertex_ids.shape == (5,), "tip_vertex_ids", (5,), self.tip_vertex_ids.shape),
        ]
        if self.posedirs is not None:
            shape = ((NUM_JOINTS - 1) * 9, v * 3)
            checks.append((self.posedirs.shape == shape, "posedirs", shape, self.posedirs.shape))
        for ok, name, want, got in checks:
            if not ok:
                raise ValueError(f"hand model {self.name!r}: {name} has shape {got}, expected {want}")
        if not np.array_equal(np.asarray(self.parents).reshape(-1)[1:], MANO_PARENTS[1:]):
            raise ValueError(
                f"hand model {self.name!r}: kinematic tree {np.asarray(self.parents).tolist()} is not MANO's "
                f"{MANO_PARENTS.tolist()}"
            )
        if self.faces.min() < 0 or self.faces.max() >= v or self.tip_vertex_ids.max() >= v:
            raise ValueError(f"hand model {self.name!r}: face or tip indices out of range for {v} vertices")

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def part_labels(self) -> np.ndarray:
        """(V,) uint8 part of each vertex (0 palm, 1 thumb ... 5 pinky) from its dominant skinning joint."""
        return joint_part_labels()[np.argmax(self.weights, axis=1)]


@dataclass(frozen=True)
class HandParams:
    """Batched MANO parameters (B = batch size), all float64.

    Attributes:
        global_orient: (B, 3) axis-angle, radians.
        hand_pose: (B, 45) axis-angle of the 15 finger joints (MANO order), flat mean.
        transl: (B, 3) metres.
        betas: (B, 10) shape coefficients.
    """

    global_orient: np.ndarray
    hand_pose: np.ndarray
    transl: np.ndarray
    betas: np.ndarray

    def __post_init__(self):
        for name, width in (("global_orient", 3), ("hand_pose", 45), ("transl", 3), ("betas", NUM_BETAS)):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim == 1:
                value = value[None]
            if value.ndim != 2 or value.shape[1] != width:
                raise ValueError(
                    f"HandParams.{name} must have shape (B, {width}) or ({width},), got {value.shape}"
                )
            if not np.isfinite(value).all():
                raise ValueError(f"HandParams.{name} contains NaN or infinite values")
            object.__setattr__(self, name, value)
        sizes = {getattr(self, n).shape[0] for n in ("global_orient", "hand_pose", "transl", "betas")}
        if len(sizes) != 1:
            raise ValueError(f"HandParams fields have different batch sizes: {sorted(sizes)}")

    @classmethod
    def zeros(cls, batch: int = 1) -> HandParams:
        return cls(
            np.zeros((batch, 3)), np.zeros((batch, 45)), np.zeros((batch, 3)), np.zeros((batch, NUM_BETAS))
        )

    @property
    def batch_size(self) -> int:
        return int(self.global_orient.shape[0])

    def full_pose(self) -> np.ndarray:
        """(B, 16, 3) axis-angle of all joints, wrist first."""
        return np.concatenate([self.global_orient, self.hand_pose], axis=1).reshape(-1, NUM_JOINTS, 3)

    def __getitem__(self, index) -> HandParams:
        sl = np.arange(self.batch_size)[index]
        sl = np.atleast_1d(sl)
        return HandParams(self.global_orient[sl], self.hand_pose[sl], self.transl[sl], self.betas[sl])

    @staticmethod
    def stack(items: list[HandParams]) -> HandParams:
        return HandParams(
            *(
                np.concatenate([getattr(p, n) for p in items])
                for n in ("global_orient", "hand_pose", "transl", "betas")
            )
        )

    def to_dict(self) -> dict:
        """JSON-ready lists (batched)."""
        return {n: getattr(self, n).tolist() for n in ("global_orient", "hand_pose", "transl", "betas")}

    @classmethod
    def from_dict(cls, d: dict) -> HandParams:
        return cls(
            *(np.asarray(d[n], dtype=np.float64) for n in ("global_orient", "hand_pose", "transl", "betas"))
        )


@dataclass(frozen=True)
class HandOutput:
    """A posed hand (B = batch size), metres, in the frame the parameters are expressed in.

    Attributes:
        vertices: (B, V, 3).
        joints: (B, 21, 3) keypoints in OpenPose order.
        joints_mano: (B, 16, 3) kinematic joints in MANO order.
        joint_transforms: (B, 16, 4, 4) world transform of each joint's frame (rest-aligned axes).
    """

    vertices: np.ndarray
    joints: np.ndarray
    joints_mano: np.ndarray
    joint_transforms: np.ndarray


class HandModel:
    """A hand: MANO parameters in, posed mesh and keypoints out.

    Subclasses set ``data`` (a :class:`HandModelData`) and may override :meth:`forward` with another backend;
    the numpy path in :mod:`hoigen.hands.lbs` is always available for fast batched queries.
    """

    data: HandModelData

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def faces(self) -> np.ndarray:
        return self.data.faces

    @property
    def part_labels(self) -> np.ndarray:
        return self.data.part_labels()

    def rest_joints(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(16, 3) rest-pose joints for ``betas`` (10,) (zeros when None)."""
        from hoigen.hands.lbs import shaped_rest

        _, joints = shaped_rest(self.data, np.zeros(NUM_BETAS) if betas is None else betas)
        return joints

    def forward(self, params: HandParams) -> HandOutput:
        from hoigen.hands.lbs import lbs

        return lbs(self.data, params)

    def metadata(self) -> dict:
        return {"model": self.name}
