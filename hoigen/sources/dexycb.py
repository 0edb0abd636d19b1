"""DexYCB (``dexycb:ROOT``): real RGB-D frames of hands grasping YCB objects, with MANO and object ground truth.

Layout (REFERENCE.md, "DexYCB and HO-3D")::

    ROOT/<date>-subject-NN/<YYYYMMDD_HHMMSS>/meta.yml, pose.npz
    ROOT/<date>-subject-NN/<YYYYMMDD_HHMMSS>/<serial>/color_%06d.jpg, aligned_depth_to_color_%06d.png,
                                                     labels_%06d.npz
    ROOT/calibration/intrinsics/<serial>_640x480.yml          color: {fx, fy, ppx, ppy}
    ROOT/calibration/extrinsics_<meta.extrinsics>/extrinsics.yml   extrinsics: {<serial>: 3x4 camera -> master}
    ROOT/calibration/mano_<meta.mano_calib[0]>/mano.yml        betas: 10
    ROOT/models/<ycb name>/textured_simple.obj

``labels_%06d.npz``: ``seg`` (H, W) uint8 (0 background, YCB class id, 255 hand); ``pose_y`` (num_obj, 3, 4)
object -> camera (OpenCV, metres, rows in ``ycb_ids`` order); ``pose_m`` (1, 51) = global axis-angle (3), **PCA**
coefficients (45) of MANO with ``flat_hand_mean=False``, translation (3), all zero = no annotation; ``joint_3d``
(1, 21, 3) metres and ``joint_2d`` (1, 21, 2) px in OpenPose order, -1 = missing. hoigen reads the per-camera
labels (``pose.npz`` holds the same poses in the master frame) and converts the PCA pose to full axis-angle with
the user's MANO basis: ``hand_pose = hands_mean + coeffs @ hands_components`` (manopth's ``use_pca=True, ncomps=45,
flat_hand_mean=False``, which DexYCB used) — which is hoigen's flat-mean convention. smplx cannot do this step:
with ``num_pca_comps=45`` it switches PCA off and would read the coefficients as axis-angle. Sample index = window of ``clip`` consecutive frames of one camera (subjects, sequences, serials in
sorted order).

Splits follow the dex-ycb-toolkit index rules over (subject, camera, sequence): subject index = NN - 1, camera
index = position in :data:`SERIALS`, sequence index = position among the subject's sorted sequence folders.
Left-hand sequences are left out (hoigen has only a right hand) with a warning; a root with only left hands is
an error naming their ``meta.yml``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from hoigen.geometry.camera import Intrinsics
from hoigen.hands.model import HandParams
from hoigen.sources.record import (
    MissingAnnotation,
    RealClip,
    RealSource,
    Window,
    canonical_from_mesh,
    load_model_object,
    read_jpeg,
    read_npz,
    read_png,
    read_yaml,
    require_file,
)

logger = logging.getLogger(__name__)

SERIALS = (
    "836212060125",
    "839512060362",
    "840412060917",
    "841412060263",
    "932122060857",
    "932122060861",
    "932122061900",
    "932122062010",
)
YCB_CLASSES = {
    1: "002_master_chef_can",
    2: "003_cracker_box",
    3: "004_sugar_box",
    4: "005_tomato_soup_can",
    5: "006_mustard_bottle",
    6: "007_tuna_fish_can",
    7: "008_pudding_box",
    8: "009_gelatin_box",
    9: "010_potted_meat_can",
    10: "011_banana",
    11: "019_pitcher_base",
    12: "021_bleach_cleanser",
    13: "024_bowl",
    14: "025_mug",
    15: "035_power_drill",
    16: "036_wood_block",
    17: "037_scissors",
    18: "040_large_marker",
    19: "051_large_clamp",
    20: "052_extra_large_clamp",
    21: "061_foam_brick",
}
HAND_SEG = 255
SETUPS = ("s0", "s1", "s2", "s3")
SPLITS = ("train", "val", "test")
_SUBJECT_DIR = re.compile(r"^\d{8}-subject-(\d{2})$")
_PCA_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # MANO path -> (components, mean)


def split_rule(split: str):
    """(subjects, cameras, sequences) predicates of a DexYCB split ``sK:train|val|test`` (indices from 0)."""
    setup, _, part = split.partition(":")
    if setup not in SETUPS or part not in SPLITS:
        raise ValueError(
            f"unknown DexYCB split {split!r}; use <setup>:<split> with setup s0 (seen), s1 (unseen subjects), "
            "s2 (unseen views), s3 (unseen objects) and split train, val or test, e.g. s0:train"
        )
    every = lambda i: True  # noqa: E731
    if setup == "s0":
        subjects = {"train": every, "val": lambda i: i in (0, 1), "test": lambda i: 2 <= i <= 9}[part]
        sequences = (lambda i: i % 5 != 4) if part == "train" else (lambda i: i % 5 == 4)
        return subjects, every, sequences
    if setup == "s1":
        subjects = {
            "train": lambda i: i in (0, 1, 2, 3, 4, 5, 9),
            "val": lambda i: i == 6,
            "test": lambda i: i in (7, 8),
        }[part]
        return subjects, every, every
    if setup == "s2":
        cameras = {"train": lambda i: 0 <= i <= 5, "val": lambda i: i == 6, "test": lambda i: i == 7}[part]
        return every, cameras, every
    held_out = {"train": (3, 7, 11, 15, 19), "val": (3, 19), "test": (7, 11, 15)}[part]
    if part == "train":
        return every, every, lambda i: i // 5 not in held_out
    return every, every, lambda i: i // 5 in held_out


class DexYCBSource(RealSource):
    """``dexycb:ROOT``: windows of ``clip`` frames of one camera; the grasped object (``ycb_grasp_ind``).

    Opening checks every selected sequence's ``meta.yml``, its calibration files (intrinsics of each camera,
    extrinsics, MANO betas) and the grasped object's model, so a bad root fails before any work.
    """

    dataset = "dexycb"

    def __init__(self, root, split: str = "", clip: int = 1):
        super().__init__(root, split, clip)
        rule = split_rule(split) if split else None
        subjects = sorted(p for p in self.root.iterdir() if p.is_dir() and _SUBJECT_DIR.match(p.name))
        if not subjects:
            raise FileNotFoundError(
                f"{self.root} holds no DexYCB subject folders (<date>-subject-NN); pass the folder that holds "
                "them and calibration/ and models/"
            )
        self.sequences: dict[str, dict] = {}  # "<subject>/<sequence>" -> meta.yml + calibration
        self._intrinsics: dict[str, dict] = {}
        self._calibration_files: dict[Path, dict] = {}
        left: list[Path] = []
        for subject_dir in subjects:
            s_index = int(_SUBJECT_DIR.match(subject_dir.name).group(1)) - 1
            if rule and not rule[0](s_index):
                continue
            seq_dirs = sorted(p for p in subject_dir.iterdir() if p.is_dir() and (p / "meta.yml").exists())
            if not seq_dirs:
                raise FileNotFoundError(f"subject folder {subject_dir} holds no sequence with a meta.yml")
            for q_index, seq_dir in enumerate(seq_dirs):
                if rule and not rule[2](q_index):
                    continue
                meta = self._read_meta(seq_dir)
                if meta["side"] != "right":
                    left.append(seq_dir / "meta.yml")
                    continue
                key = f"{subject_dir.name}/{seq_dir.name}"
                self.sequences[key] = meta
                for serial in meta["serials"]:
                    c_index = SERIALS.index(serial) if serial in SERIALS else -1
                    if rule and not (
                        rule[1](c_index) if c_index >= 0 else split.startswith(("s0", "s1", "s3"))
                    ):
                        continue
                    self._camera(serial)
                    self._add_windows(f"{key}/{serial}", list(range(meta["num_frames"])))
        if left:
            logger.warning(
                "%s: left out %d left-hand sequence(s) (hoigen has only a right hand yet), e.g. %s",
                self.root,
                len(left),
                left[0],
            )
        self.left_hand_sequences = len(left)
        if not self.sequences and left:
            raise ValueError(
                f"every selected DexYCB sequence is a left hand (mano_sides: [left] in {left[0]}"
                + (f" and {len(left) - 1} more" if len(left) > 1 else "")
                + "); hoigen has only a right hand yet, so these cannot be used — pick right-hand sequences"
            )
        if not len(self):
            raise ValueError(
                f"{self.describe()}: no frames selected (split {split or 'all'} matches no sequence/camera, or "
                f"every sequence is shorter than --clip {clip})"
            )

    def input_files(self) -> list[tuple[str, Path]]:
        """Models of the grasped objects, the sequences' meta.yml and every calibration file they use."""
        paths = set()
        for key, meta in self.sequences.items():
            paths.add(self.root / key / "meta.yml")
            paths.add(
                self.root / "models" / YCB_CLASSES[meta["ycb_ids"][meta["grasp_ind"]]] / "textured_simple.obj"
            )
            paths.update(meta["calibration"])
        paths.update(self.root / "calibration" / "intrinsics" / f"{s}_640x480.yml" for s in self._intrinsics)
        return sorted((p.relative_to(self.root).as_posix(), p) for p in paths)

    def _calibration(self, path: Path, what: str) -> dict:
        """A calibration YAML, read once (many sequences share one)."""
        if path not in self._calibration_files:
            self._calibration_files[path] = read_yaml(path, what)
        return self._calibration_files[path]

    def _read_meta(self, seq_dir: Path) -> dict:
        path = seq_dir / "meta.yml"
        meta = read_yaml(path, "DexYCB sequence meta")
        need = ("serials", "num_frames", "extrinsics", "ycb_ids", "ycb_grasp_ind", "mano_sides", "mano_calib")
        missing = [k for k in need if k not in meta]
        if missing:
            raise ValueError(f"DexYCB sequence meta {path} lacks {missing}; it is not a DexYCB meta.yml")
        sides = list(meta["mano_sides"])
        if len(sides) != 1 or sides[0] not in ("right", "left"):
            raise ValueError(f"{path}: mano_sides must be ['right'] or ['left'], got {sides}")
        ycb_ids = [int(v) for v in meta["ycb_ids"]]
        grasp = int(meta["ycb_grasp_ind"])
        if not 0 <= grasp < len(ycb_ids) or ycb_ids[grasp] not in YCB_CLASSES:
            raise ValueError(f"{path}: ycb_grasp_ind {grasp} does not pick a YCB class of ycb_ids {ycb_ids}")
        calib = self.root / "calibration"
        mano_file = calib / f"mano_{meta['mano_calib'][0]}" / "mano.yml"
        betas = self._calibration(mano_file, "DexYCB MANO calibration").get("betas")
        if betas is None or np.shape(betas) != (10,):
            raise ValueError(
                f"DexYCB MANO calibration {mano_file}: 'betas' must be 10 numbers, got {betas!r}"
            )
        extr_file = calib / f"extrinsics_{meta['extrinsics']}" / "extrinsics.yml"
        extrinsics = self._calibration(extr_file, "DexYCB extrinsics").get("extrinsics")
        if not isinstance(extrinsics, dict):
            raise ValueError(f"DexYCB extrinsics {extr_file} has no 'extrinsics' mapping of serials")
        T_master_cam = {}
        for serial in meta["serials"]:
            serial = str(serial)
            if serial not in extrinsics or np.size(extrinsics[serial]) != 12:
                raise ValueError(f"DexYCB extrinsics {extr_file}: no 3x4 entry for camera {serial}")
            T = np.eye(4)
            T[:3] = np.asarray(extrinsics[serial], dtype=np.float64).reshape(3, 4)
            T_master_cam[serial] = T
        ycb_name = YCB_CLASSES[ycb_ids[grasp]]
        require_file(
            self.root / "models" / ycb_name / "textured_simple.obj",
            f"object model {ycb_name!r} (grasped in {path}):",
            f"extract the DexYCB models into {self.root / 'models'}",
        )
        return {
            "path": path,
            "serials": [str(s) for s in meta["serials"]],
            "num_frames": int(meta["num_frames"]),
            "ycb_ids": ycb_ids,
            "grasp_ind": grasp,
            "side": sides[0],
            "betas": np.asarray(betas, dtype=np.float64),
            "T_master_cam": T_master_cam,
            "mano_calib": str(meta["mano_calib"][0]),
            "calibration": (mano_file, extr_file),
        }

    def _camera(self, serial: str) -> dict:
        if serial not in self._intrinsics:
            path = self.root / "calibration" / "intrinsics" / f"{serial}_640x480.yml"
            color = read_yaml(path, "DexYCB camera intrinsics").get("color")
            if not isinstance(color, dict) or not all(k in color for k in ("fx", "fy", "ppx", "ppy")):
                raise ValueError(f"DexYCB camera intrinsics {path} lacks color: {{fx, fy, ppx, ppy}}")
            self._intrinsics[serial] = {k: float(color[k]) for k in ("fx", "fy", "ppx", "ppy")}
        return self._intrinsics[serial]

    def object_key(self, window: Window) -> str:
        meta = self.sequences[window.sequence.rsplit("/", 1)[0]]
        return YCB_CLASSES[meta["ycb_ids"][meta["grasp_ind"]]]

    def load_object(self, key: str):
        return load_model_object(self.root, self.root / "models", key)

    def load(self, index: int, hand) -> RealClip:
        """The clip of sample ``index``; raises :class:`MissingAnnotation` naming the frames without ground truth.

        ``hand`` is the MANO hand (its ``hands_components`` / ``hands_mean`` turn the PCA pose into axis-angle).
        """
        window = self.window(index)
        seq_key, serial = window.sequence.rsplit("/", 1)
        meta = self.sequences[seq_key]
        components, mean = mano_pca_basis(hand)
        obj = self.object_for(index)
        T_mesh_canon = np.linalg.inv(canonical_from_mesh(obj))
        grasp_id = meta["ycb_ids"][meta["grasp_ind"]]
        folder = self.root / seq_key / serial
        rows = []
        missing = []
        for f in window.frames:
            path = folder / f"labels_{f:06d}.npz"
            labels = read_npz(path, "DexYCB labels", ("seg", "pose_y", "pose_m", "joint_3d", "joint_2d"))
            _check_labels(path, labels, len(meta["ycb_ids"]))
            pose_m = labels["pose_m"].astype(np.float64).reshape(51)
            pose_y = labels["pose_y"][meta["grasp_ind"]].astype(np.float64)
            joints2d = labels["joint_2d"].astype(np.float64).reshape(21, 2)
            if not pose_m.any() or (joints2d == -1).all() or not pose_y.any():
                missing.append(f)
                continue
            rows.append((f, labels, pose_m, pose_y, joints2d))
        if missing:
            raise MissingAnnotation(
                f"{folder}: frame(s) {missing} have no annotation (all-zero pose_m / pose_y or -1 joints)"
            )
        T = len(rows)
        pose_m = np.stack([r[2] for r in rows])
        hand_pose = mean[None] + pose_m[:, 3:48] @ components
        params = HandParams(
            global_orient=pose_m[:, 0:3],
            hand_pose=hand_pose,
            transl=pose_m[:, 48:51],
            betas=np.repeat(meta["betas"][None], T, axis=0),
        )
        T_cam_obj = np.repeat(np.eye(4)[None], T, axis=0)
        T_cam_obj[:, :3, :] = np.stack([r[3] for r in rows])
        T_cam_obj = T_cam_obj @ T_mesh_canon
        rgb = np.stack(
            [read_jpeg(folder / f"color_{f:06d}.jpg", "DexYCB colour frame") for f in window.frames]
        )
        height, width = rgb.shape[1:3]
        depth = []
        for f in window.frames:
            path = folder / f"aligned_depth_to_color_{f:06d}.png"
            if path.is_file():
                image = read_png(path, "DexYCB depth frame")
                if image.dtype != np.uint16 or image.shape != (height, width):
                    raise ValueError(
                        f"DexYCB depth frame {path}: expected uint16 {(height, width)}, got "
                        f"{image.dtype} {image.shape}"
                    )
                depth.append(image.astype(np.float32) / 1000.0)
        seg = np.stack([_hoigen_ids(r[1]["seg"], grasp_id) for r in rows])
        if seg.shape[1:] != (height, width):
            raise ValueError(f"{folder}: seg is {seg.shape[1:]} but the colour frames are {(height, width)}")
        c = self._camera(serial)
        intrinsics = Intrinsics(c["fx"], c["fy"], c["ppx"], c["ppy"], width, height)
        return RealClip(
            object=obj,
            T_cam_obj=T_cam_obj,
            hand=params,
            intrinsics=intrinsics,
            rgb=rgb,
            depth_m=np.stack(depth) if len(depth) == T else None,
            seg=seg,
            joints2d=np.stack([r[4] for r in rows]),
            joints3d=np.stack([r[1]["joint_3d"].astype(np.float64).reshape(21, 3) for r in rows]),
            source={
                "dataset": "dexycb",
                "root": str(self.root),
                "split": self.split,
                "subject": seq_key.split("/")[0],
                "sequence": seq_key,
                "serial": serial,
                "frames": list(window.frames),
                "files": [f"{seq_key}/{serial}/color_{f:06d}.jpg" for f in window.frames],
                "ycb_ids": meta["ycb_ids"],
                "ycb_grasp_ind": meta["grasp_ind"],
                "mano_calib": meta["mano_calib"],
                "T_master_cam": meta["T_master_cam"][serial].tolist(),
            },
        )


def _check_labels(path: Path, labels: dict, num_obj: int) -> None:
    shapes = {"pose_y": (num_obj, 3, 4), "pose_m": (1, 51), "joint_3d": (1, 21, 3), "joint_2d": (1, 21, 2)}
    for key, shape in shapes.items():
        if labels[key].shape != shape:
            raise ValueError(f"DexYCB labels {path}: {key} has shape {labels[key].shape}, expected {shape}")
    if labels["seg"].ndim != 2 or labels["seg"].dtype != np.uint8:
        raise ValueError(
            f"DexYCB labels {path}: seg must be (H, W) uint8, got {labels['seg'].dtype} {labels['seg'].shape}"
        )


def _hoigen_ids(seg: np.ndarray, grasp_id: int) -> np.ndarray:
    """DexYCB ``seg`` -> hoigen ids: 1 grasped object, 2 hand, 255 other objects, 0 background."""
    out = np.where(seg == 0, 0, 255).astype(np.uint8)
    out[seg == grasp_id] = 1
    out[seg == HAND_SEG] = 2
    return out


def mano_pca_basis(hand) -> tuple[np.ndarray, np.ndarray]:
    """(45, 45) ``hands_components`` and (45,) ``hands_mean`` of the MANO file ``hand`` was loaded from."""
    path = getattr(hand, "path", None)
    if path is None:
        raise ValueError(
            "DexYCB stores the hand pose as MANO PCA coefficients: it needs the MANO hand (--hand mano --mano DIR), "
            f"not {type(hand).__name__}"
        )
    cached = _PCA_CACHE.get(str(path))
    if cached is None:
        from hoigen.hands.mano import load_mano_pickle

        raw = load_mano_pickle(path)
        components, mean = raw.get("hands_components"), raw.get("hands_mean")
        if components is None or np.shape(components) != (45, 45) or np.shape(mean) != (45,):
            raise ValueError(
                f"{path} has no 45-component hand-pose PCA (hands_components (45, 45), hands_mean (45,)), which "
                "DexYCB's PCA poses need; use the MANO_RIGHT.pkl of the MANO download"
            )
        cached = (np.asarray(components, dtype=np.float64), np.asarray(mean, dtype=np.float64))
        _PCA_CACHE[str(path)] = cached
    return cached


def dexycb_pose_m(params: HandParams, hand) -> np.ndarray:
    """The inverse of the reader: hoigen hand parameters (batch B) -> DexYCB ``pose_m`` (B, 51) float64."""
    components, mean = mano_pca_basis(hand)
    coeffs = np.linalg.solve(components.T, (params.hand_pose - mean[None]).T).T
    return np.concatenate([params.global_orient, coeffs, params.transl], axis=1)


__all__ = ["SERIALS", "YCB_CLASSES", "DexYCBSource", "dexycb_pose_m", "mano_pca_basis", "split_rule"]
