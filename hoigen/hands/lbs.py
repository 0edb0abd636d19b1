"""Linear blend skinning for MANO-structured models, in numpy (pure functions).

Same maths as MANO/smplx: shape blend shapes, joints regressed from the shaped template, pose correctives from
(R - I) of the 15 finger joints, forward kinematics down ``parents``, skinning, then ``transl``.
"""

from __future__ import annotations

import numpy as np

from hoigen.geometry.rotations import axis_angle_to_matrix
from hoigen.hands.model import NUM_BETAS, OPENPOSE_FROM_MANO, HandModelData, HandOutput, HandParams


def shaped_rest(data: HandModelData, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rest vertices (V, 3) and joints (16, 3) for one ``betas`` (10,)."""
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)[:NUM_BETAS]
    v_shaped = data.v_template + data.shapedirs[:, :, :NUM_BETAS] @ betas
    return v_shaped, data.J_regressor @ v_shaped


def joint_transforms(parents: np.ndarray, rotations: np.ndarray, rest_joints: np.ndarray) -> np.ndarray:
    """Global joint transforms.

    Args:
        parents: (16,) kinematic tree.
        rotations: (B, 16, 3, 3) local rotations.
        rest_joints: (B, 16, 3) rest-pose joint positions.

    Returns:
        (B, 16, 4, 4) transforms of the joint frames: rotation = accumulated rotation, translation = posed joint.
    """
    b, n = rotations.shape[:2]
    rel = rest_joints.copy()
    rel[:, 1:] -= rest_joints[:, parents[1:]]
    local = np.zeros((b, n, 4, 4))
    local[:, :, :3, :3] = rotations
    local[:, :, :3, 3] = rel
    local[:, :, 3, 3] = 1.0
    world = np.empty_like(local)
    world[:, 0] = local[:, 0]
    for j in range(1, n):
        world[:, j] = world[:, parents[j]] @ local[:, j]
    return world


def lbs(data: HandModelData, params: HandParams, vertex_ids: np.ndarray | None = None) -> HandOutput:
    """Pose the hand. With ``vertex_ids`` only those vertices are skinned (keypoint tips are then exact only when
    the tip vertices are included; ``joints`` holds NaN for missing tips)."""
    v_shaped = data.v_template[None] + np.einsum(
        "vck,bk->bvc", data.shapedirs[:, :, :NUM_BETAS], params.betas
    )
    rest_j = np.einsum("jv,bvc->bjc", data.J_regressor, v_shaped)
    return skin(data, v_shaped, rest_j, params.full_pose(), params.transl, vertex_ids)


def skin(
    data: HandModelData,
    v_shaped: np.ndarray,
    rest_j: np.ndarray,
    full_pose: np.ndarray,
    transl: np.ndarray,
    vertex_ids: np.ndarray | None = None,
) -> HandOutput:
    """Skinning step of :func:`lbs` with the shaped rest pose given.

    Args:
        v_shaped: (B or 1, V, 3) shaped rest vertices; rest_j: (B or 1, 16, 3) their joints.
        full_pose: (B, 16, 3) axis-angle; transl: (B, 3).
    """
    b = full_pose.shape[0]
    v_shaped = np.broadcast_to(v_shaped, (b,) + v_shaped.shape[1:])
    rest_j = np.broadcast_to(rest_j, (b,) + rest_j.shape[1:])
    rot = axis_angle_to_matrix(full_pose)  # (B, 16, 3, 3)
    ids = np.arange(data.num_vertices) if vertex_ids is None else np.asarray(vertex_ids)
    v_posed = v_shaped[:, ids]
    if data.posedirs is not None:
        feature = (rot[:, 1:] - np.eye(3)).reshape(b, -1)
        cols = (ids[:, None] * 3 + np.arange(3)).reshape(-1)
        v_posed = v_posed + (feature @ data.posedirs[:, cols]).reshape(b, len(ids), 3)
    world = joint_transforms(data.parents, rot, rest_j)
    skin_t = world.copy()
    skin_t[:, :, :3, 3] -= np.einsum("bjcd,bjd->bjc", world[:, :, :3, :3], rest_j)
    # (B, n, 3, 4) blended transforms: one matrix product (BLAS) over the 16 joints
    weights = data.weights if vertex_ids is None else data.weights[ids]
    blend = np.matmul(weights, skin_t[:, :, :3].reshape(b, skin_t.shape[1], 12)).reshape(b, len(ids), 3, 4)
    verts = np.einsum("bvcd,bvd->bvc", blend[..., :3], v_posed) + blend[..., 3]
    verts += transl[:, None]
    joints16 = world[:, :, :3, 3] + transl[:, None]
    tips = np.full((b, 5, 3), np.nan)
    if vertex_ids is None:
        tips = verts[:, data.tip_vertex_ids]
    else:
        for k, vid in enumerate(data.tip_vertex_ids):
            where = np.flatnonzero(ids == vid)
            if len(where):
                tips[:, k] = verts[:, where[0]]
    joints21 = np.concatenate([joints16, tips], axis=1)[:, OPENPOSE_FROM_MANO]
    world_t = world.copy()
    world_t[:, :, :3, 3] += transl[:, None]
    return HandOutput(vertices=verts, joints=joints21, joints_mano=joints16, joint_transforms=world_t)
