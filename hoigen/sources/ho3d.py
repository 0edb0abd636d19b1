"""HO-3D v3 (``ho3d:ROOT``): real RGB-D frames of a right hand manipulating a YCB object, MANO and object poses.

Layout (REFERENCE.md, "DexYCB and HO-3D")::

    ROOT/train.txt, ROOT/evaluation.txt       lines "<SEQ>/<NNNN>": the frames of each split
    ROOT/{train,evaluation}/<SEQ>/rgb/NNNN.jpg, depth/NNNN.png, meta/NNNN.pkl
    ROOT/models/<objName>/textured_simple.obj  (the YCB models, downloaded separately)

``meta/NNNN.pkl`` (a pickle of numpy arrays, read with a restricted unpickler): ``handPose`` (48,) axis-angle with
``flat_hand_mean=True`` (global 3 + fingers 45), ``handTrans`` (3,), ``handBeta`` (10,), ``objRot`` (3, 1)
axis-angle, ``objTrans`` (3,), ``objName``, ``camMat`` (3, 3), ``handJoints3D`` (21, 3) in MANO-16 + tips order —
all in the **OpenGL** camera frame (x right, y up, z backward). hoigen converts once with F = diag(1, -1, -1):
object ``T_cam_obj = F [R | t]``, hand ``R' = F R`` with the wrist moved by F (about the shaped rest wrist, so
``transl' = F (j0 + transl) - j0``). ``None`` hand or object entries (the evaluation split hides the hand) mean no
annotation: such frames are skipped and counted. Depth: ``depth_m = (R + 256 G) * 0.00012498664727900177``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from hoigen.geometry.camera import Intrinsics
from hoigen.geometry.rotations import axis_angle_to_matrix
from hoigen.hands.model import OPENPOSE_FROM_MANO, HandParams
from hoigen.sources.record import (
    MissingAnnotation,
    RealClip,
    RealSource,
    Window,
    canonical_from_mesh,
    load_model_object,
    read_array_pickle,
    read_jpeg,
    read_png,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "evaluation")
DEPTH_SCALE_M = 0.00012498664727900177  # metres per unit of R + 256 G
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
_LINE = re.compile(r"^([^/\s]+)/(\d+)$")


class HO3DSource(RealSource):
    """``ho3d:ROOT``: windows of ``clip`` consecutive frames of one sequence (frames from the split's list)."""

    dataset = "ho3d"

    def __init__(self, root, split: str = "", clip: int = 1):
        super().__init__(root, split, clip)
        split = split or "train"
        if split not in SPLITS:
            raise ValueError(f"unknown HO-3D split {split!r}; use 'train' or 'evaluation'")
        self.split = split
        self.folder = self.root / split
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"HO-3D split folder {self.folder} does not exist; pass the folder holding train/ and evaluation/"
            )
        frames = self._frame_list(split)
        for seq in sorted(frames):
            self._add_windows(seq, sorted(frames[seq]))
        if not len(self):
            raise ValueError(f"{self.describe()}: no frames (every sequence is shorter than --clip {clip}?)")
        self._names: dict[str, str] = {}

    def _frame_list(self, split: str) -> dict[str, set[int]]:
        listing = self.root / f"{split}.txt"
        frames: dict[str, set[int]] = {}
        if listing.is_file():
            for number, line in enumerate(listing.read_text().splitlines(), 1):
                line = line.strip()
                if not line:
                    continue
                match = _LINE.match(line)
                if match is None:
                    raise ValueError(
                        f"HO-3D frame list {listing} line {number}: {line!r} is not <SEQ>/<NNNN>"
                    )
                frames.setdefault(match.group(1), set()).add(int(match.group(2)))
            missing = sorted(s for s in frames if not (self.folder / s).is_dir())
            if missing:
                raise FileNotFoundError(
                    f"HO-3D frame list {listing} names sequence(s) missing from {self.folder}: {missing[:5]}"
                )
            return frames
        logger.info("%s not found: using every frame under %s", listing, self.folder)
        for seq_dir in sorted(p for p in self.folder.iterdir() if (p / "rgb").is_dir()):
            numbers = {int(p.stem) for p in (seq_dir / "rgb").glob("*.jpg") if p.stem.isdigit()}
            if numbers:
                frames[seq_dir.name] = numbers
        if not frames:
            raise FileNotFoundError(f"{self.folder} holds no HO-3D sequence (<SEQ>/rgb/NNNN.jpg)")
        return frames

    def input_files(self) -> list[tuple[str, Path]]:
        """Both splits' frame lists and the models of every sequence's object (whatever split a run picks, since
        ``hoigen synth`` pins the files of the source opened without its options)."""
        paths = {self.root / f"{split}.txt" for split in SPLITS if (self.root / f"{split}.txt").is_file()}
        for split in SPLITS:
            folder = self.root / split
            for seq_dir in (
                sorted(p for p in folder.iterdir() if (p / "meta").is_dir()) if folder.is_dir() else ()
            ):
                first = min((p for p in (seq_dir / "meta").glob("*.pkl") if p.stem.isdigit()), default=None)
                if first is None:
                    continue
                name = read_array_pickle(first, "HO-3D frame meta").get("objName")
                if name is not None:
                    paths.add(self.root / "models" / str(name) / "textured_simple.obj")
        return sorted((p.relative_to(self.root).as_posix(), p) for p in paths)

    def _meta_path(self, seq: str, f: int) -> Path:
        return self.folder / seq / "meta" / f"{f:04d}.pkl"

    def object_key(self, window: Window) -> str:
        if window.sequence not in self._names:
            path = self._meta_path(window.sequence, window.frames[0])
            name = read_array_pickle(path, "HO-3D frame meta").get("objName")
            if name is None:
                raise ValueError(f"HO-3D frame meta {path} has no objName")
            self._names[window.sequence] = str(name)
        return self._names[window.sequence]

    def load_object(self, key: str):
        return load_model_object(self.root, self.root / "models", key)

    def load(self, index: int, hand) -> RealClip:
        """The clip of sample ``index`` (camera frame OpenCV); :class:`MissingAnnotation` names unannotated frames."""
        window = self.window(index)
        seq = window.sequence
        obj = self.object_for(index)
        T_mesh_canon = np.linalg.inv(canonical_from_mesh(obj))
        metas, missing = [], []
        for f in window.frames:
            path = self._meta_path(seq, f)
            meta = read_array_pickle(path, "HO-3D frame meta")
            keys = ("handPose", "handTrans", "handBeta", "objRot", "objTrans", "camMat")
            if any(meta.get(k) is None for k in keys):
                missing.append(f)
                continue
            metas.append((path, meta))
        if missing:
            raise MissingAnnotation(
                f"{self.folder / seq}: frame(s) {missing} have no hand or object annotation"
            )
        pose = np.stack([_array(p, m, "handPose", (48,)) for p, m in metas])
        params_gl = HandParams(
            global_orient=pose[:, :3],
            hand_pose=pose[:, 3:],
            transl=np.stack([_array(p, m, "handTrans", (3,)) for p, m in metas]),
            betas=np.stack([_array(p, m, "handBeta", (10,)) for p, m in metas]),
        )
        params = opengl_to_opencv_hand(params_gl, hand)
        T_cam_obj = []
        for path, meta in metas:
            T = np.eye(4)
            T[:3, :3] = axis_angle_to_matrix(_array(path, meta, "objRot", (3,)))
            T[:3, 3] = _array(path, meta, "objTrans", (3,))
            T_cam_obj.append(OPENGL_TO_OPENCV @ T @ T_mesh_canon)
        K = _array(metas[0][0], metas[0][1], "camMat", (3, 3))
        rgb = np.stack(
            [
                read_jpeg(self.folder / seq / "rgb" / f"{f:04d}.jpg", "HO-3D colour frame")
                for f in window.frames
            ]
        )
        height, width = rgb.shape[1:3]
        depth = []
        for f in window.frames:
            path = self.folder / seq / "depth" / f"{f:04d}.png"
            if path.is_file():
                image = read_png(path, "HO-3D depth frame")
                if image.ndim != 3 or image.shape[:2] != (height, width):
                    raise ValueError(
                        f"HO-3D depth frame {path}: expected {(height, width, 3)}, got {image.shape}"
                    )
                # OpenCV reads BGR: R = channel 2, G = channel 1
                units = image[..., 2].astype(np.float64) + 256.0 * image[..., 1].astype(np.float64)
                depth.append((units * DEPTH_SCALE_M).astype(np.float32))
        joints3d = None
        if all(np.shape(m.get("handJoints3D")) == (21, 3) for _, m in metas):
            flip = OPENGL_TO_OPENCV[:3, :3]
            joints3d = np.stack(
                [np.asarray(m["handJoints3D"], np.float64)[OPENPOSE_FROM_MANO] @ flip for _, m in metas]
            )
        intrinsics = Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height)
        joints2d = intrinsics.project(joints3d) if joints3d is not None else None
        return RealClip(
            object=obj,
            T_cam_obj=np.stack(T_cam_obj),
            hand=params,
            intrinsics=intrinsics,
            rgb=rgb,
            depth_m=np.stack(depth) if len(depth) == len(window.frames) else None,
            seg=None,
            joints2d=joints2d,
            joints3d=joints3d,
            source={
                "dataset": "ho3d",
                "root": str(self.root),
                "split": self.split,
                "sequence": seq,
                "frames": list(window.frames),
                "files": [f"{self.split}/{seq}/rgb/{f:04d}.jpg" for f in window.frames],
                "object": obj.id,
            },
        )


def _array(path: Path, meta: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(meta[key], dtype=np.float64)
    if value.size != int(np.prod(shape)):
        raise ValueError(f"HO-3D frame meta {path}: {key} has shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"HO-3D frame meta {path}: {key} holds NaN or infinite values")
    return value.reshape(shape)


def opengl_to_opencv_hand(params: HandParams, hand) -> HandParams:
    """MANO parameters in HO-3D's OpenGL camera frame -> OpenCV (a rigid flip about the shaped rest wrist)."""
    from hoigen.grasping.trajectory import transform_hand_params

    out = []
    for t in range(params.batch_size):
        rest_wrist = hand.rest_joints(params.betas[t])[0]
        out.append(transform_hand_params(params[t], OPENGL_TO_OPENCV, rest_wrist))
    return HandParams.stack(out)


__all__ = ["DEPTH_SCALE_M", "OPENGL_TO_OPENCV", "HO3DSource", "opengl_to_opencv_hand"]
