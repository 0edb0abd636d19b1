"""Tiny DexYCB and HO-3D roots for the tests, in those datasets' exact layouts, made from hoigen's own renders.

Everything is generated here: a synthetic MANO-shaped model (``hoigen.hands.synthetic``, never the licensed file),
procedural box meshes saved as ``models/<ycb name>/textured_simple.obj``, hand and object poses chosen in a world
frame, and per camera the frames rendered by hoigen (colour as JPEG, depth, segmentation). Poses are stored the
way each dataset stores them: DexYCB per-camera ``labels_%06d.npz`` (float32, PCA hand pose with the model's own
``hands_components`` and ``flat_hand_mean=False``, -1 / all-zero for missing), ``pose.npz`` in the master camera
frame (quaternion x, y, z, w + translation), YAML calibration; HO-3D ``meta/NNNN.pkl`` in the OpenGL camera frame.
The returned ``truth`` holds the original float64 values every test compares against.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import trimesh
import yaml

from hoigen.geometry.camera import Intrinsics
from hoigen.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from hoigen.grasping.trajectory import Trajectory, transform_hand_params
from hoigen.hands.model import HandParams
from hoigen.hands.synthetic import write_synthetic_mano
from hoigen.render.renderer import HAND_ID, OBJECT_ID, Renderer
from hoigen.sources.dexycb import SERIALS, dexycb_pose_m
from hoigen.sources.record import canonical_from_mesh, load_model_object

SIZE = (64, 48)
GRASP_NAME, GRASP_ID = "036_wood_block", 16
OTHER_NAME, OTHER_ID = "061_foam_brick", 21
SUBJECT = "20200709-subject-01"
SEQUENCE = "20200709_141754"
CALIB = "20200709_subject_01"
EXTRINSICS = "20200702_151821"
HO3D_SEQ = "ABF10"
HO3D_OBJECT = "021_bleach_cleanser"
OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class CameraTruth:
    """Per camera: intrinsics and, per frame (None where unannotated), hand params, T_cam_obj, 2D joints, mask."""

    intrinsics: Intrinsics
    hand: list = field(default_factory=list)  # HandParams (batch 1) per frame, camera frame
    T_cam_obj: list = field(default_factory=list)  # (4, 4) canonical -> camera
    joints2d: list = field(default_factory=list)
    mask: list = field(default_factory=list)  # hoigen instance ids rendered for the fixture
    rgb: list = field(default_factory=list)  # the decoded JPEG, RGB


def mano_dir(root: Path) -> Path:
    write_synthetic_mano(root / "MANO_RIGHT.pkl", np.random.default_rng(0))
    return root


def _box_obj(path: Path, extents, offset) -> None:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(offset)  # the file frame is not the bounding-box centre
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path, file_type="obj")


def _world_hand(rng: np.random.Generator, t: int, betas: np.ndarray, hand) -> HandParams:
    """A right hand ~0.45 m in front of the master camera, palm toward the object, fingers slightly bent."""
    pose = rng.normal(0.0, 0.15, 45) + 0.05 * t
    orient = np.array([0.3 + 0.05 * t, -1.2, 0.4])
    wrist = np.array([0.06 + 0.01 * t, 0.0, 0.45])
    rest = hand.rest_joints(betas)[0]
    return HandParams(orient, pose, wrist - rest, betas)


def _world_object(t: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = axis_angle_to_matrix(np.array([0.2, 0.4 + 0.1 * t, 0.1]))
    T[:3, 3] = [-0.02 - 0.005 * t, 0.01, 0.47]
    return T


def _render(renderer: Renderer, obj, hand, params: HandParams, T_cam_obj: np.ndarray, seed: int):
    traj = Trajectory(T_cam_obj[None], params, np.ones(1), np.zeros(1, dtype=np.int64))
    seq = renderer.render_sequence(obj, hand, traj, np.eye(4), np.random.default_rng(seed))
    return seq.frames[0]


def _jpeg(path: Path, rgb: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def write_dexycb_root(
    root: Path, hand, frames: int = 3, missing: tuple[int, int] | None = (1, 1), side="right"
):
    """A DexYCB root: one subject, one sequence, two cameras (``SERIALS[0]`` master, ``SERIALS[1]``).

    Args:
        hand: the MANO hand built from :func:`mano_dir` (its PCA basis encodes ``pose_m``).
        missing: (camera, frame) whose annotation is removed (all-zero ``pose_m``, -1 joints), or None.
        side: ``mano_sides`` of the sequence.

    Returns:
        ``{serial: CameraTruth}``.
    """
    rng = np.random.default_rng(5)
    models = root / "models"
    _box_obj(models / GRASP_NAME / "textured_simple.obj", (0.05, 0.035, 0.07), (0.01, -0.02, 0.03))
    _box_obj(models / OTHER_NAME / "textured_simple.obj", (0.05, 0.075, 0.05), (0.0, 0.0, 0.0))
    obj = load_model_object(root, models, GRASP_NAME)
    T_mesh_canon = np.linalg.inv(canonical_from_mesh(obj))
    betas = rng.normal(0.0, 0.5, 10)
    calib = root / "calibration"
    serials = SERIALS[:2]
    # camera 1 sits 0.1 m to the right of the master, turned slightly toward the scene
    T_master_cam = {serials[0]: np.eye(4), serials[1]: np.eye(4)}
    T_master_cam[serials[1]][:3, :3] = axis_angle_to_matrix(np.array([0.0, -0.15, 0.0]))
    T_master_cam[serials[1]][:3, 3] = [0.08, 0.0, 0.01]
    intr = {
        serials[0]: Intrinsics(62.0, 61.5, 31.2, 23.9, *SIZE),
        serials[1]: Intrinsics(58.0, 58.5, 32.4, 24.6, *SIZE),
    }
    for serial, K in intr.items():
        path = calib / "intrinsics" / f"{serial}_640x480.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        color = {"fx": K.fx, "fy": K.fy, "ppx": K.cx, "ppy": K.cy}
        path.write_text(yaml.safe_dump({"serial": serial, "color": color, "depth": color}))
    extr = calib / f"extrinsics_{EXTRINSICS}" / "extrinsics.yml"
    extr.parent.mkdir(parents=True, exist_ok=True)
    entries = {s: [float(v) for v in T[:3].reshape(-1)] for s, T in T_master_cam.items()}
    entries["apriltag"] = [float(v) for v in np.eye(4)[:3].reshape(-1)]
    extr.write_text(yaml.safe_dump({"extrinsics": entries, "master": serials[0]}))
    mano_file = calib / f"mano_{CALIB}" / "mano.yml"
    mano_file.parent.mkdir(parents=True, exist_ok=True)
    mano_file.write_text(yaml.safe_dump({"betas": [float(b) for b in betas]}))

    seq_dir = root / SUBJECT / SEQUENCE
    seq_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "serials": list(serials),
        "num_frames": frames,
        "extrinsics": EXTRINSICS,
        "ycb_ids": [GRASP_ID, OTHER_ID],
        "ycb_grasp_ind": 0,
        "mano_sides": [side],
        "mano_calib": [CALIB],
    }
    (seq_dir / "meta.yml").write_text(yaml.safe_dump(meta))
    world_hand = [_world_hand(rng, t, betas, hand) for t in range(frames)]
    world_obj = [_world_object(t) @ np.linalg.inv(T_mesh_canon) for t in range(frames)]  # mesh -> master
    other_T = np.eye(4)
    other_T[:3, 3] = [3.0, 0.0, 0.5]  # out of every camera's view
    pose_y_master = np.zeros((frames, 2, 7), np.float32)
    pose_m_master = np.zeros((frames, 1, 51), np.float32)
    truth = {}
    for c, serial in enumerate(serials):
        K = intr[serial]
        cam = CameraTruth(K)
        T_cam_master = np.linalg.inv(T_master_cam[serial])
        renderer = Renderer(K)
        for t in range(frames):
            rest = hand.rest_joints(betas)[0]
            params = transform_hand_params(world_hand[t], T_cam_master, rest)
            T_cam_mesh = T_cam_master @ world_obj[t]
            T_cam_obj = T_cam_mesh @ T_mesh_canon
            frame = _render(renderer, obj, hand, params, T_cam_obj, seed=10 * c + t)
            joints3d = hand.forward(params).joints[0]
            joints2d = K.project(joints3d)
            seg = np.zeros(frame.mask.shape, np.uint8)
            seg[frame.mask == OBJECT_ID] = GRASP_ID
            seg[frame.mask == HAND_ID] = 255
            pose_m = dexycb_pose_m(params, hand).astype(np.float32)
            pose_y = np.stack([T_cam_mesh[:3], (T_cam_master @ other_T)[:3]]).astype(np.float32)
            j3 = joints3d[None].astype(np.float32)
            j2 = joints2d[None].astype(np.float32)
            if missing == (c, t):
                pose_m[:] = 0.0
                j3[:] = -1.0
                j2[:] = -1.0
                params = T_cam_obj = joints2d = None
            folder = seq_dir / serial
            folder.mkdir(exist_ok=True)
            np.savez_compressed(
                folder / f"labels_{t:06d}.npz",
                seg=seg,
                pose_y=pose_y,
                pose_m=pose_m,
                joint_3d=j3,
                joint_2d=j2,
            )
            cam.rgb.append(_jpeg(folder / f"color_{t:06d}.jpg", frame.rgb))
            depth_mm = np.round(frame.depth.astype(np.float64) * 0.1).astype(np.uint16)  # depth_scale 0.1
            cv2.imwrite(str(folder / f"aligned_depth_to_color_{t:06d}.png"), depth_mm)
            cam.hand.append(params)
            cam.T_cam_obj.append(T_cam_obj)
            cam.joints2d.append(joints2d)
            cam.mask.append(frame.mask.copy())
            if c == 0:
                pose_m_master[t] = pose_m
                for k, T in enumerate((T_cam_mesh, T_cam_master @ other_T)):
                    from scipy.spatial.transform import Rotation

                    pose_y_master[t, k, :4] = Rotation.from_matrix(T[:3, :3]).as_quat()
                    pose_y_master[t, k, 4:] = T[:3, 3]
        renderer.close()
        truth[serial] = cam
    np.savez_compressed(seq_dir / "pose.npz", pose_y=pose_y_master, pose_m=pose_m_master)
    return truth


def write_ho3d_root(root: Path, hand, frames: int = 3, missing: int | None = 2):
    """An HO-3D v3 root: ``train/ABF10`` with ``frames`` frames listed in ``train.txt``; frame ``missing`` has
    ``handPose`` None. Returns a :class:`CameraTruth` (OpenCV frame)."""
    rng = np.random.default_rng(7)
    models = root / "models"
    _box_obj(models / HO3D_OBJECT / "textured_simple.obj", (0.04, 0.09, 0.06), (-0.01, 0.02, 0.0))
    obj = load_model_object(root, models, HO3D_OBJECT)
    T_mesh_canon = np.linalg.inv(canonical_from_mesh(obj))
    betas = rng.normal(0.0, 0.5, 10)
    K = Intrinsics(60.0, 60.5, 31.0, 24.2, *SIZE)
    seq = root / "train" / HO3D_SEQ
    for sub in ("rgb", "depth", "meta"):
        (seq / sub).mkdir(parents=True, exist_ok=True)
    (root / "evaluation").mkdir(exist_ok=True)
    cam = CameraTruth(K)
    renderer = Renderer(K)
    for t in range(frames):
        params = _world_hand(rng, t, betas, hand)
        T_cam_mesh = _world_object(t) @ np.linalg.inv(T_mesh_canon)
        T_cam_obj = T_cam_mesh @ T_mesh_canon
        frame = _render(renderer, obj, hand, params, T_cam_obj, seed=t)
        out = hand.forward(params)
        joints2d = K.project(out.joints[0])
        # to HO-3D's OpenGL camera frame
        rest = hand.rest_joints(betas)[0]
        gl = transform_hand_params(params, OPENGL, rest)
        T_gl = OPENGL @ T_cam_mesh
        joints_mano_order = np.concatenate([out.joints_mano[0], out.vertices[0][[744, 320, 443, 554, 671]]])
        meta = {
            "handPose": np.concatenate([gl.global_orient[0], gl.hand_pose[0]]),
            "handTrans": gl.transl[0],
            "handBeta": betas,
            "objRot": matrix_to_axis_angle(T_gl[:3, :3]).reshape(3, 1),
            "objTrans": T_gl[:3, 3],
            "objName": HO3D_OBJECT,
            "objLabel": 0,
            "camMat": K.K,
            "handJoints3D": joints_mano_order @ OPENGL[:3, :3],
            "objCorners3D": np.zeros((8, 3)),
        }
        if missing == t:
            meta["handPose"] = meta["handTrans"] = meta["handJoints3D"] = None
            params = T_cam_obj = joints2d = None
        (seq / "meta" / f"{t:04d}.pkl").write_bytes(pickle.dumps(meta, protocol=2))
        cam.rgb.append(_jpeg(seq / "rgb" / f"{t:04d}.jpg", frame.rgb))
        units = np.round(frame.depth.astype(np.float64) * 0.1 / 1000.0 / 0.00012498664727900177).astype(
            np.int64
        )
        depth = np.zeros((*units.shape, 3), np.uint8)
        depth[..., 2] = units % 256  # R (OpenCV writes BGR)
        depth[..., 1] = units // 256  # G
        cv2.imwrite(str(seq / "depth" / f"{t:04d}.png"), depth)
        cam.hand.append(params)
        cam.T_cam_obj.append(T_cam_obj)
        cam.joints2d.append(joints2d)
        cam.mask.append(frame.mask.copy())
    renderer.close()
    (root / "train.txt").write_text("".join(f"{HO3D_SEQ}/{t:04d}\n" for t in range(frames)))
    (root / "evaluation.txt").write_text("")
    return cam


def corners_match(file_mesh_path: Path, T_cam_mesh: np.ndarray, obj, T_cam_obj: np.ndarray) -> bool:
    """Whether the file's vertices placed by the dataset's pose and hoigen's canonical mesh placed by the reader's
    ``T_cam_obj`` are the same point set (to 1e-6 m): the non-circular check of the canonical-frame conversion."""
    raw = trimesh.load(str(file_mesh_path), force="mesh", process=False)
    a = np.asarray(raw.vertices) @ T_cam_mesh[:3, :3].T + T_cam_mesh[:3, 3]
    b = np.asarray(obj.mesh.vertices) @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    a = np.unique(np.round(a, 6), axis=0)
    b = np.unique(np.round(b, 6), axis=0)
    return a.shape == b.shape and bool(np.abs(a - b).max() < 2e-6)
