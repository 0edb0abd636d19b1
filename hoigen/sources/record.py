"""The sequence record real-data sources produce, their options, and what every source shares.

A real source lists **windows**: ``clip`` consecutive frames of one camera of one sequence (DexYCB: subject /
sequence / camera serial; HO-3D: sequence). Window ``i`` is sample ``i`` of a run, so an index means the same
frames for the writer, the exporters and the reader. :meth:`RealSource.load` turns a window into a
:class:`RealClip` — the same things a synthetic sample has (object in its canonical frame and per-frame
``T_cam_obj``, MANO parameters in hoigen's convention, camera) plus the real frames.

Conventions (SPEC §2): OpenCV camera frame, metres; ``T_cam_obj`` maps the object's **canonical** frame (hoigen's
mesh frame translated to the bounding-box centre) to the camera; hand parameters are right-hand MANO with a flat
mean (``global_orient`` about the shaped rest wrist, ``transl`` added after); ``K`` has pixel centres at integer
coordinates. numpy / OpenCV / yaml only.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hoigen.geometry.camera import Intrinsics
from hoigen.hands.model import HandParams
from hoigen.objects.asset import ObjectAsset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealConfig:
    """Options of the real-data sources (``dexycb:ROOT``, ``ho3d:ROOT``).

    Attributes:
        split: DexYCB ``s0:train`` ... ``s3:test`` (setup s0-s3, split train/val/test); HO-3D ``train`` or
            ``evaluation``; empty = every sequence found (HO-3D: the ``train`` folder).
        width, height: output size in pixels: frames are scaled to cover it and centre-cropped, ``K`` follows;
            0 = the dataset's own size.
    """

    split: str = ""
    width: int = 0
    height: int = 0

    def __post_init__(self):
        if (self.width or self.height) and min(self.width, self.height) < 8:
            raise ValueError(
                f"real.width and real.height must both be >= 8 pixels (or both 0), got {self.width}x{self.height}"
            )

    @property
    def size(self) -> tuple[int, int] | None:
        """(W, H), or None for the dataset's own size."""
        return (self.width, self.height) if self.width else None


@dataclass(frozen=True)
class Window:
    """What one sample index means: ``frames`` (dataset frame numbers, consecutive) of one camera sequence.

    Attributes:
        sequence: the sequence's key within the source (``<subject>/<sequence>/<serial>`` or ``<SEQ>``).
        frames: dataset frame numbers, in order.
    """

    sequence: str
    frames: tuple[int, ...]


@dataclass
class RealClip:
    """The sequence record of one window (T frames of one camera), everything in that camera's frame.

    Attributes:
        object: the object in hoigen's canonical frame (the grasped object for DexYCB).
        T_cam_obj: (T, 4, 4) canonical -> camera, OpenCV, metres.
        hand: MANO parameters (batch T), camera frame, hoigen's convention.
        intrinsics: the camera (size of ``rgb``).
        rgb: (T, H, W, 3) uint8 real colour frames.
        depth_m: (T, H, W) float32 sensor depth in metres (0 = none), or None.
        seg: (T, H, W) uint8 the dataset's segmentation mapped to hoigen's instance ids (0 background,
            1 object, 2 hand, 255 other objects), or None.
        joints2d: (T, 21, 2) the dataset's own 2D keypoints (OpenPose order, px in ``rgb``), or None.
        joints3d: (T, 21, 3) the dataset's own 3D keypoints (camera frame, OpenCV), or None.
        source: JSON-ready provenance: dataset, root, sequence, frame numbers and files.
    """

    object: ObjectAsset
    T_cam_obj: np.ndarray
    hand: HandParams
    intrinsics: Intrinsics
    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    seg: np.ndarray | None = None
    joints2d: np.ndarray | None = None
    joints3d: np.ndarray | None = None
    source: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.T_cam_obj.shape[0])


class MissingAnnotation(ValueError):
    """A frame has no ground truth (all-zero ``pose_m``, -1 joints, ``objRot`` None): skipped and counted."""


# ---------------------------------------------------------------------------------------------------------------
# resizing


def cover_crop(
    intrinsics: Intrinsics, size: tuple[int, int]
) -> tuple[Intrinsics, tuple[int, int], tuple[int, int]]:
    """Scale a camera to cover ``size`` (W, H), then centre-crop.

    Returns ``(new intrinsics, (rw, rh) resized size, (x0, y0) crop offset)``. Pixel centres at integers: a
    resize by ``s`` maps ``u -> (u + 0.5) s - 0.5`` (as ``cv2.resize`` does), the crop subtracts the offset.
    """
    width, height = int(size[0]), int(size[1])
    w0, h0 = intrinsics.width, intrinsics.height
    s = max(width / w0, height / h0)
    rw, rh = max(width, int(round(w0 * s))), max(height, int(round(h0 * s)))
    sx, sy = rw / w0, rh / h0
    x0, y0 = (rw - width) // 2, (rh - height) // 2
    new = Intrinsics(
        intrinsics.fx * sx,
        intrinsics.fy * sy,
        (intrinsics.cx + 0.5) * sx - 0.5 - x0,
        (intrinsics.cy + 0.5) * sy - 0.5 - y0,
        width,
        height,
    )
    return new, (rw, rh), (x0, y0)


def resize_clip(clip: RealClip, size: tuple[int, int]) -> RealClip:
    """``clip`` scaled to cover ``size`` (W, H) and centre-cropped; ``K`` and the dataset's 2D keypoints follow.

    Colour uses area (downscaling) or linear interpolation, depth and segmentation nearest neighbour.
    """
    import cv2

    intr = clip.intrinsics
    if (intr.width, intr.height) == tuple(int(v) for v in size):
        return clip
    new, (rw, rh), (x0, y0) = cover_crop(intr, size)
    width, height = new.width, new.height
    colour_interp = cv2.INTER_AREA if rw < intr.width else cv2.INTER_LINEAR

    def fit(images, interp):
        if images is None:
            return None
        out = [
            cv2.resize(im, (rw, rh), interpolation=interp)[y0 : y0 + height, x0 : x0 + width] for im in images
        ]
        return np.ascontiguousarray(np.stack(out))

    joints2d = None
    if clip.joints2d is not None:
        sx, sy = rw / intr.width, rh / intr.height
        joints2d = np.stack(
            [(clip.joints2d[..., 0] + 0.5) * sx - 0.5 - x0, (clip.joints2d[..., 1] + 0.5) * sy - 0.5 - y0], -1
        )
    source = {
        **clip.source,
        "resize": {"from": [intr.width, intr.height], "scaled": [rw, rh], "crop": [x0, y0]},
    }
    return RealClip(
        object=clip.object,
        T_cam_obj=clip.T_cam_obj,
        hand=clip.hand,
        intrinsics=new,
        rgb=fit(clip.rgb, colour_interp),
        depth_m=fit(clip.depth_m, cv2.INTER_NEAREST),
        seg=fit(clip.seg, cv2.INTER_NEAREST),
        joints2d=joints2d,
        joints3d=clip.joints3d,
        source=source,
    )


# ---------------------------------------------------------------------------------------------------------------
# file helpers shared by the sources


def require_file(path: Path, what: str, fix: str = "") -> Path:
    """``path`` if it is a file, else FileNotFoundError naming it and ``what`` it is."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist{'; ' + fix if fix else ''}")
    return path


def read_yaml(path: Path, what: str) -> dict:
    import yaml

    require_file(path, what)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{what} {path} is not readable YAML ({exc}); download it again") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping, got {type(data).__name__}")
    return data


def read_npz(path: Path, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (never unpickling); ValueError naming the file if truncated or short."""
    require_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise ValueError(f"{what} {path} has no {missing} (it has {sorted(data.files)})")
            return {k: np.asarray(data[k]) for k in keys}
    except ValueError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(
            f"{what} {path} is truncated or corrupt ({type(exc).__name__}: {exc}); download or extract it again"
        ) from exc


def read_jpeg(path: Path, what: str = "colour frame") -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    import cv2

    require_file(path, what)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{what} {path} is not a readable image; download or extract it again")
    return np.ascontiguousarray(image[..., ::-1])


def read_png(path: Path, what: str) -> np.ndarray:
    import cv2

    require_file(path, what)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{what} {path} is not a readable PNG; download or extract it again")
    return image


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only numpy arrays / scalars and plain Python containers (HO-3D's ``meta/*.pkl``)."""

    def find_class(self, module: str, name: str):
        import importlib

        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            try:
                return getattr(importlib.import_module("numpy._core.multiarray"), name)
            except ImportError:  # numpy < 2
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name == "object":
            return object
        if module == "_codecs" and name == "encode":
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(
            f"refused the global {module}.{name}: an annotation pickle holds only arrays"
        )


def read_array_pickle(path: Path, what: str) -> dict:
    """A pickle of a dict of numpy arrays, read with a restricted unpickler (nothing else is ever built)."""
    require_file(path, what)
    try:
        with open(path, "rb") as handle:
            data = _ArrayUnpickler(handle, encoding="latin1").load()
    except Exception as exc:  # whatever a truncated or foreign pickle raises means the same here
        raise ValueError(
            f"{what} {path} is not a readable annotation pickle ({type(exc).__name__}: {exc}); the file may be "
            "truncated or corrupt, extract it again"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} holds a {type(data).__name__}, expected a dict of arrays")
    return data


def canonical_from_mesh(obj: ObjectAsset) -> np.ndarray:
    """(4, 4) mesh-file frame -> hoigen canonical frame of ``obj`` (``canonical = file * unit_scale + offset``).

    Only metre meshes are rigid here; a rescaled mesh is refused since the dataset's poses are in metres.
    """
    if not np.isclose(obj.unit_scale, 1.0):
        raise ValueError(
            f"object {obj.id}: its mesh was rescaled by {obj.unit_scale} to metres, but the dataset's poses are for "
            "the file in metres; use the dataset's own models"
        )
    T = np.eye(4)
    T[:3, 3] = np.asarray(obj.offset, dtype=np.float64)
    rotation = getattr(obj, "R_canonical_mesh", None)  # canonical rotation, where object sources add one
    if rotation is not None:
        T[:3, :3] = np.asarray(rotation, dtype=np.float64)
    return T


class RealSource:
    """Base of the dataset sources: a list of :class:`Window` and cached objects.

    Subclasses fill ``windows`` and implement :meth:`object_key` (window -> object key), :meth:`load_object`
    (key -> :class:`ObjectAsset`) and :meth:`load` (index, hand -> :class:`RealClip`).
    """

    is_real = True
    dataset = "real"

    def __init__(self, root: str | Path, split: str = "", clip: int = 1):
        if clip < 1:
            raise ValueError(f"--clip must be >= 1 frame, got {clip}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.dataset} root {self.root} does not exist or is not a folder; pass the folder you "
                f"extracted {self.dataset} into ({self.spec_name()}:ROOT)"
            )
        self.split = split
        self.clip = int(clip)
        # windows as runs: (sequence, first frame, number of windows); window k of a run starts at first + k*clip
        self._runs: list[tuple[str, int, int]] = []
        self._starts: list[int] = []  # index of each run's first window
        self._count = 0
        self.dropped_tail_frames = 0  # frames at the end of a run that fill no whole clip
        self._objects: dict[str, ObjectAsset] = {}

    @classmethod
    def spec_name(cls) -> str:
        return cls.dataset

    def __len__(self) -> int:
        return self._count

    def describe(self) -> str:
        return (
            f"{self.spec_name()}:{self.root} (split {self.split or 'all'}, {len(self)} clips of {self.clip})"
        )

    def _add_windows(self, sequence: str, frames: list[int]) -> None:
        """Cut sorted ``frames`` into windows of ``clip`` consecutive frames; a gap starts a new run."""
        start = 0
        for k in range(1, len(frames) + 1):
            if k == len(frames) or frames[k] != frames[k - 1] + 1:
                length = k - start
                n = length // self.clip
                self.dropped_tail_frames += length - n * self.clip
                if n:
                    self._runs.append((sequence, int(frames[start]), n))
                    self._starts.append(self._count)
                    self._count += n
                start = k

    def window(self, index: int) -> Window:
        """The frames of sample ``index``."""
        import bisect

        if not 0 <= index < self._count:
            raise IndexError(f"{self.describe()} has no sample {index} (it has {self._count})")
        run = bisect.bisect_right(self._starts, index) - 1
        sequence, first, _ = self._runs[run]
        offset = first + (index - self._starts[run]) * self.clip
        return Window(sequence, tuple(range(offset, offset + self.clip)))

    def input_files(self) -> list[tuple[str, Path]]:
        """(relative path, path) of the files that define the run besides the frames: models and calibration."""
        return []

    def object_key(self, window: Window) -> str:
        raise NotImplementedError

    def load_object(self, key: str) -> ObjectAsset:
        raise NotImplementedError

    def object_for(self, index: int, rng: np.random.Generator | None = None) -> ObjectAsset:
        """The object of sample ``index`` (canonical frame); the same interface as the object sources."""
        del rng  # dataset objects are fixed meshes
        key = self.object_key(self.window(index))
        if key not in self._objects:
            self._objects[key] = self.load_object(key)
        return self._objects[key]

    def load(self, index: int, hand) -> RealClip:
        raise NotImplementedError


def load_model_object(root: Path, models: Path, name: str) -> ObjectAsset:
    """Load ``models/<name>/textured_simple.obj`` (metres) as a hoigen object; FileNotFoundError naming it."""
    from hoigen.objects.folder import ObjectEntry, load_object

    path = require_file(
        models / name / "textured_simple.obj",
        f"object model {name!r}:",
        f"put the YCB models under {models} (models/<name>/textured_simple.obj)",
    )
    try:
        relpath = path.relative_to(root).as_posix()
    except ValueError:
        relpath = path.as_posix()
    return load_object(ObjectEntry(name, path.absolute(), relpath), units="m")
