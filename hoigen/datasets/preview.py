"""``hoigen preview``: a contact sheet PNG and one GIF per sample, with the labels drawn on the frames.

Reads shards (SPEC §3) directly with ``tarfile`` and draws, on every RGB frame:

- the hand skeleton from ``joints2d`` (``render.conditions.draw_skeleton``, HOIDiffusion colours),
- the object's amodal box (``bbox_obj``, amber), its visible box (``bbox_visib_obj``, cyan, one line width inside
  the box edge so both show when they coincide) and the hand box (``bbox_hand``, magenta),
- the object's canonical axes: lines from the canonical origin (the bounding-box centre) to +0.5 x scale x size
  along x (red), y (green) and z (blue), projected with ``K @ T_cam_obj``; the farthest axis is drawn first,
- a caption strip under the frame with the sample key, the object category and the frame index.

Frames are drawn at display resolution: small renders are enlarged by an integer factor (nearest neighbour) to at
least ``MIN_TILE_WIDTH`` px, large ones shrunk (area average) so the sheet stays within ``MAX_SHEET_WIDTH`` px.
Labels are rasterised at that resolution with sub-pixel precision, so a source pixel coordinate ``u`` (pixel
centres at integers, SPEC §2) lands at ``(u + 0.5) * tile_w / W - 0.5`` in the tile.

Contact sheet (``contact_sheet.png``): one row per sample (the first ``max_samples`` in shard and key order), one
column per frame (at most ``MAX_COLUMNS``, evenly spaced, when a sequence is longer), tiles separated by ``GAP``
px, and a colour legend at the bottom; ``sheet_layout`` gives the geometry. GIF (``<key>.gif``): every frame of the
sample, the annotated frame next to the colour-mapped depth (near = warm, no surface = black) and the 8-bit NOCS
map, when the shard has them. Side-by-side GIF (``<key>.side_by_side.gif``, for samples a generative stage ran on):
render | photo | video | tracking, unannotated, each panel captioned, frame k of ``video.mp4`` next to render k.

The output is a pure function of the shards: the same shards give byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_SHEET_WIDTH = 2048
MIN_TILE_WIDTH = 256
MAX_COLUMNS = 12
GAP = 4
CAPTION_HEIGHT = 16
LEGEND_LINE_HEIGHT = 18
GIF_MAX_PANEL_WIDTH = 480
GIF_FRAME_MS = 250
SHEET_NAME = "contact_sheet.png"

BACKGROUND = (28, 28, 28)
CAPTION_BACKGROUND = (0, 0, 0)
TEXT_COLOR = (255, 255, 255)
OBJECT_BOX_COLOR = (255, 190, 0)
OBJECT_VISIB_BOX_COLOR = (0, 230, 230)
HAND_BOX_COLOR = (255, 0, 255)
AXIS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # x, y, z

_FONT_SCALES = (0.45, 0.4, 0.35)
_SHIFT = 4  # fractional bits of the fixed-point coordinates handed to OpenCV
_NEAR_M = 1e-4  # axis segments are clipped to z >= this before projecting


# ---------------------------------------------------------------------------------------------------------------
# layout


@dataclass(frozen=True)
class SheetLayout:
    """Geometry of a contact sheet.

    Attributes:
        rows: samples shown; cols: frame columns; tile_w, tile_h: size of a frame tile (without its caption);
        legend_h: height of the legend strip at the bottom; width, height: size of the sheet.
    """

    rows: int
    cols: int
    tile_w: int
    tile_h: int
    legend_h: int
    width: int
    height: int

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of the frame tile in ``row``, ``col``."""
        return GAP + col * (self.tile_w + GAP), GAP + row * (self.tile_h + CAPTION_HEIGHT + GAP)


def _display_scale(width: int, cols: int) -> float:
    """Scale of the frames on the sheet: integer enlargement of small renders, shrinking to fit the width."""
    fit = (MAX_SHEET_WIDTH - (cols + 1) * GAP) / (cols * width)
    if width < MIN_TILE_WIDTH:
        up = math.ceil(MIN_TILE_WIDTH / width)
        if up <= fit:
            return float(up)
        if fit >= 1.0:
            return float(math.floor(fit))
    return min(1.0, fit)


def sheet_layout(width: int, height: int, frames: int, rows: int) -> SheetLayout:
    """Layout of the contact sheet of ``rows`` samples of ``frames`` frames rendered at ``width`` x ``height``."""
    for name, value in (("width", width), ("height", height), ("frames", frames), ("rows", rows)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"sheet_layout needs a positive integer {name}, got {value!r}")
    cols = min(int(frames), MAX_COLUMNS)
    scale = _display_scale(int(width), cols)
    tile_w = max(1, round(width * scale))
    tile_h = max(1, round(height * scale))
    sheet_w = cols * tile_w + (cols + 1) * GAP
    legend_h = len(_legend_lines(sheet_w)) * LEGEND_LINE_HEIGHT + GAP
    sheet_h = rows * (tile_h + CAPTION_HEIGHT) + (rows + 1) * GAP + legend_h
    return SheetLayout(int(rows), cols, tile_w, tile_h, legend_h, sheet_w, sheet_h)


def _frame_columns(frames: int) -> list[int]:
    """The frames shown on the sheet: all of them, or MAX_COLUMNS evenly spaced ones (first and last included)."""
    if frames <= MAX_COLUMNS:
        return list(range(frames))
    return [int(round(i * (frames - 1) / (MAX_COLUMNS - 1))) for i in range(MAX_COLUMNS)]


def _gif_scale(width: int) -> float:
    if width < MIN_TILE_WIDTH:
        return float(math.ceil(MIN_TILE_WIDTH / width))
    return min(1.0, GIF_MAX_PANEL_WIDTH / width)


# ---------------------------------------------------------------------------------------------------------------
# reading shards


@dataclass
class _Sample:
    key: str
    shard: str
    meta: dict
    images: dict[str, np.ndarray]  # "fNNN.<kind>" -> decoded PNG

    @property
    def frames(self) -> int:
        return len(self.meta["frames"])

    def where(self) -> str:
        return f"sample {self.key} of {self.shard}"


def _find_shards(shards_dir: Path) -> tuple[list[Path], Path]:
    """Shard tars under ``shards_dir`` (the folder itself, its ``shards/`` subfolder, or one tar file)."""
    if not shards_dir.exists():
        raise FileNotFoundError(f"no such shards folder: {shards_dir}")
    if shards_dir.is_file():
        if not tarfile.is_tarfile(shards_dir):
            raise ValueError(f"{shards_dir} is not a tar file; give a folder of WebDataset shards (*.tar)")
        return [shards_dir], shards_dir.parent
    tars = sorted(p for p in shards_dir.glob("*.tar") if p.is_file())
    if not tars:
        tars = sorted(p for p in (shards_dir / "shards").glob("*.tar") if p.is_file())
    if not tars:
        raise FileNotFoundError(
            f"no shards (*.tar) in {shards_dir} nor in {shards_dir / 'shards'}; give the output folder of "
            "`hoigen synth` or its shards/ folder"
        )
    return tars, shards_dir


def _read_samples(tars: list[Path], max_samples: int, with_maps: bool) -> list[_Sample]:
    """The first ``max_samples`` samples (shard order, then key order), decoding only the members drawn."""
    from hoigen.render.png import decode_png

    kinds = ("rgb", "depth", "nocs", *_SIDE_BY_SIDE[1:]) if with_maps else ("rgb",)
    samples: list[_Sample] = []
    for path in tars:
        try:
            with tarfile.open(path, "r:*") as tar:
                members: dict[str, dict[str, tarfile.TarInfo]] = {}
                for info in tar.getmembers():
                    if not info.isfile() or "." not in info.name or "/" in info.name:
                        continue
                    key, suffix = info.name.split(".", 1)
                    members.setdefault(key, {})[suffix] = info
                for key in sorted(members):
                    if len(samples) >= max_samples:
                        return samples
                    entry = members[key]
                    if "meta.json" not in entry:
                        raise ValueError(f"sample {key} of {path.name} has no meta.json")
                    try:
                        meta = json.loads(tar.extractfile(entry["meta.json"]).read())
                    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                        raise ValueError(
                            f"sample {key} of {path.name}: unreadable meta.json ({exc})"
                        ) from exc
                    sample = _Sample(key, path.name, meta, {})
                    _check_meta(sample)
                    for t in range(sample.frames):
                        for kind in kinds:
                            name = f"f{t:03d}.{kind}.png"
                            if name not in entry:
                                if kind == "rgb":
                                    raise ValueError(
                                        f"{sample.where()} has no {name} (meta lists {sample.frames} frames)"
                                    )
                                continue
                            try:
                                sample.images[f"f{t:03d}.{kind}"] = decode_png(
                                    tar.extractfile(entry[name]).read()
                                )
                            except ValueError as exc:
                                raise ValueError(f"{sample.where()}: {name}: {exc}") from exc
                    if with_maps:
                        _read_videos(sample, tar, entry)
                    samples.append(sample)
        except tarfile.TarError as exc:
            raise ValueError(f"cannot read shard {path}: {exc} (truncated or not a tar?)") from exc
    return samples


_SIDE_BY_SIDE = ("rgb", "photo", "video", "tracking")
_SIDE_BY_SIDE_CAPTIONS = {"rgb": "render", "photo": "photo", "video": "video", "tracking": "tracking"}


def _read_videos(sample: _Sample, tar: tarfile.TarFile, entry: dict) -> None:
    """Frames of ``video.mp4`` / ``tracking.mp4`` as ``fNNN.video`` / ``fNNN.tracking`` where no PNG has them."""
    for member, kind in (("video.mp4", "video"), ("tracking.mp4", "tracking")):
        if member not in entry or f"f000.{kind}" in sample.images:
            continue
        from hoigen.render.video import decode_mp4

        try:
            frames = decode_mp4(tar.extractfile(entry[member]).read())
        except ValueError as exc:
            raise ValueError(f"{sample.where()}: {member}: {exc}") from exc
        if frames.shape[0] != sample.frames:
            raise ValueError(
                f"{sample.where()}: {member} has {frames.shape[0]} frames, meta lists {sample.frames}"
            )
        for t, frame in enumerate(frames):
            sample.images[f"f{t:03d}.{kind}"] = frame


def _side_by_side_frames(sample: _Sample) -> list[np.ndarray] | None:
    """render | photo | video | tracking per frame (the panels the sample has), or None without photo/video."""
    if not any(f"f000.{kind}" in sample.images for kind in ("photo", "video")):
        return None
    camera = sample.meta["camera"]
    scale = _gif_scale(int(camera["width"]))
    tile_w = max(1, round(int(camera["width"]) * scale))
    tile_h = max(1, round(int(camera["height"]) * scale))
    kinds = [k for k in _SIDE_BY_SIDE if all(f"f{t:03d}.{k}" in sample.images for t in range(sample.frames))]
    frames = []
    for t in range(sample.frames):
        canvas = np.zeros((tile_h + CAPTION_HEIGHT + 2 * GAP, len(kinds) * (tile_w + GAP) + GAP, 3), np.uint8)
        canvas[:] = BACKGROUND
        for c, kind in enumerate(kinds):
            image = sample.images[f"f{t:03d}.{kind}"]
            panel = _captioned(
                _resize(image[..., :3].astype(np.uint8), tile_w, tile_h), _SIDE_BY_SIDE_CAPTIONS[kind]
            )
            x = GAP + c * (tile_w + GAP)
            canvas[GAP : GAP + tile_h + CAPTION_HEIGHT, x : x + tile_w] = panel
        frames.append(canvas)
    return frames


def _check_meta(sample: _Sample) -> None:
    meta = sample.meta
    if not isinstance(meta, dict):
        raise ValueError(f"{sample.where()}: meta.json is not a JSON object")
    camera = meta.get("camera")
    if not isinstance(camera, dict) or not {"K", "width", "height"} <= camera.keys():
        raise ValueError(f"{sample.where()}: meta.json needs camera.K, camera.width and camera.height")
    K = np.asarray(camera["K"], dtype=np.float64)  # noqa: N806
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"{sample.where()}: camera.K must be a finite 3x3 matrix, got shape {K.shape}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{sample.where()}: meta.json lists no frames")


# ---------------------------------------------------------------------------------------------------------------
# drawing


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - the render extra is a dependency of every shard writer
        raise ImportError("hoigen preview needs OpenCV: pip install 'hoigen[render]'") from exc
    return cv2


def _fixed(value: float) -> int:
    return int(round(value * (1 << _SHIFT)))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    cv2 = _cv2()
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    enlarge = width >= image.shape[1] and height >= image.shape[0]
    interpolation = cv2.INTER_NEAREST_EXACT if enlarge else cv2.INTER_AREA
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _clip_segment(p0: np.ndarray, p1: np.ndarray, lo: tuple[float, float], hi: tuple[float, float]):
    """Liang-Barsky: the part of segment p0-p1 inside the box [lo, hi], or None."""
    t0, t1 = 0.0, 1.0
    d = p1 - p0
    for axis in range(2):
        for p, q in ((-d[axis], p0[axis] - lo[axis]), (d[axis], hi[axis] - p0[axis])):
            if p == 0.0:
                if q < 0.0:
                    return None
                continue
            r = q / p
            if p < 0.0:
                t0 = max(t0, r)
            else:
                t1 = min(t1, r)
    if t0 > t1:
        return None
    return p0 + t0 * d, p0 + t1 * d


def _line_width(tile_w: int, tile_h: int) -> int:
    return 2 if min(tile_w, tile_h) >= 160 else 1


def _draw_box(tile: np.ndarray, bbox, sx: float, sy: float, color, inset: int, lw: int) -> None:
    """Outline the pixels of box ``bbox`` (x, y, w, h, source pixels) with ``lw`` px lines, ``inset`` px inside."""
    cv2 = _cv2()
    if bbox is None or len(bbox) != 4:
        return
    x, y, w, h = (float(v) for v in bbox)
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        return
    left, top = round(x * sx) + inset, round(y * sy) + inset
    right, bottom = round((x + w) * sx) - 1 - inset, round((y + h) * sy) - 1 - inset
    for k in range(lw):
        if right - k < left + k or bottom - k < top + k:
            break
        cv2.rectangle(tile, (left + k, top + k), (right - k, bottom - k), color, 1, cv2.LINE_8)


def _draw_axes(
    tile: np.ndarray, frame: dict, obj: dict, K: np.ndarray, sx: float, sy: float, lw: int
) -> None:  # noqa: N803
    cv2 = _cv2()
    if "T_cam_obj" not in frame or "scale" not in obj:
        return
    T = np.asarray(frame["T_cam_obj"], dtype=np.float64)  # noqa: N806
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return
    size = np.asarray(obj.get("size", [1.0, 1.0, 1.0]), dtype=np.float64)
    half = 0.5 * float(obj["scale"]) * (size if size.shape == (3,) else np.ones(3))
    origin = T[:3, 3]
    ends = origin[None, :] + (T[:3, :3] * half[None, :]).T  # (3 axes, xyz) camera-frame end points
    height, width = tile.shape[:2]
    lo, hi = (-2.0 * lw, -2.0 * lw), (width - 1 + 2.0 * lw, height - 1 + 2.0 * lw)
    # Farthest axis first, so nearer ones are drawn over it (ties: x before y before z).
    for axis in sorted(range(3), key=lambda i: (-ends[i, 2], i)):
        a, b = origin.copy(), ends[axis].copy()
        if a[2] < _NEAR_M and b[2] < _NEAR_M:
            continue
        if a[2] < _NEAR_M or b[2] < _NEAR_M:
            near, far = (a, b) if a[2] < _NEAR_M else (b, a)
            near[:] = far + (near - far) * (far[2] - _NEAR_M) / (far[2] - near[2])
        uv = []
        for p in (a, b):
            q = K @ p
            u, v = q[0] / q[2], q[1] / q[2]
            uv.append(np.array([(u + 0.5) * sx - 0.5, (v + 0.5) * sy - 0.5]))
        clipped = _clip_segment(uv[0], uv[1], lo, hi)
        if clipped is None:
            continue
        p0, p1 = clipped
        cv2.line(
            tile,
            (_fixed(p0[0]), _fixed(p0[1])),
            (_fixed(p1[0]), _fixed(p1[1])),
            AXIS_COLORS[axis],
            lw,
            cv2.LINE_AA,
            shift=_SHIFT,
        )


def _put_caption(strip: np.ndarray, texts: list[str]) -> None:
    """Write the first of ``texts`` that fits the strip (largest font scale that fits), else the last one, small."""
    cv2 = _cv2()
    font = cv2.FONT_HERSHEY_SIMPLEX
    room = strip.shape[1] - 6
    choice = None
    for text in texts:
        for scale in _FONT_SCALES:
            if cv2.getTextSize(text, font, scale, 1)[0][0] <= room:
                choice = (text, scale)
                break
        if choice:
            break
    text, scale = choice or (texts[-1], _FONT_SCALES[-1])
    (_, h), _ = cv2.getTextSize(text, font, scale, 1)
    cv2.putText(strip, text, (3, (strip.shape[0] + h) // 2), font, scale, TEXT_COLOR, 1, cv2.LINE_AA)


def _annotated_frame(sample: _Sample, t: int, tile_w: int, tile_h: int) -> np.ndarray:
    """(tile_h + CAPTION_HEIGHT, tile_w, 3) uint8: frame ``t`` with its labels, and the caption strip below."""
    from hoigen.render.conditions import draw_skeleton

    meta = sample.meta
    rgb = sample.images[f"f{t:03d}.rgb"]
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"{sample.where()}: f{t:03d}.rgb.png must be 8-bit RGB, got {rgb.dtype} {rgb.shape}")
    rgb = rgb[..., :3]
    height, width = rgb.shape[:2]
    camera = meta["camera"]
    if (int(camera["width"]), int(camera["height"])) != (width, height):
        raise ValueError(
            f"{sample.where()}: f{t:03d}.rgb.png is {width}x{height} but meta.json's camera is "
            f"{camera['width']}x{camera['height']}; the labels would not match the image"
        )
    K = np.asarray(camera["K"], dtype=np.float64)  # noqa: N806
    frame = meta["frames"][t] if isinstance(meta["frames"][t], dict) else {}
    obj = meta.get("object") if isinstance(meta.get("object"), dict) else {}
    sx, sy = tile_w / width, tile_h / height
    lw = _line_width(tile_w, tile_h)

    tile = np.ascontiguousarray(_resize(rgb, tile_w, tile_h))
    joints2d = np.asarray(frame.get("joints2d", []), dtype=np.float64)
    if joints2d.shape == (21, 2):
        scaled = np.stack([(joints2d[:, 0] + 0.5) * sx - 0.5, (joints2d[:, 1] + 0.5) * sy - 0.5], axis=1)
        skeleton = draw_skeleton(scaled, tile_w, tile_h)
        drawn = skeleton.any(axis=2)
        tile[drawn] = skeleton[drawn]
    _draw_box(tile, frame.get("bbox_obj"), sx, sy, OBJECT_BOX_COLOR, 0, lw)
    _draw_box(tile, frame.get("bbox_visib_obj"), sx, sy, OBJECT_VISIB_BOX_COLOR, lw, lw)
    _draw_box(tile, frame.get("bbox_hand"), sx, sy, HAND_BOX_COLOR, 0, lw)
    _draw_axes(tile, frame, obj, K, sx, sy, lw)

    strip = np.zeros((CAPTION_HEIGHT, tile_w, 3), dtype=np.uint8)
    strip[:] = CAPTION_BACKGROUND
    category = str(obj.get("category", "?"))
    _put_caption(strip, [f"{sample.key}  {category}  f{t:03d}", f"{sample.key}  f{t:03d}", f"f{t:03d}"])
    return np.concatenate([tile, strip], axis=0)


def _legend_items() -> list[tuple[tuple[int, int, int], str]]:
    return [
        (OBJECT_BOX_COLOR, "object box"),
        (OBJECT_VISIB_BOX_COLOR, "object visible box"),
        (HAND_BOX_COLOR, "hand box"),
        (AXIS_COLORS[0], "x"),
        (AXIS_COLORS[1], "y"),
        (AXIS_COLORS[2], "z (object axes)"),
    ]


_LEGEND_SCALE = 0.4
_SWATCH = 10


def _legend_lines(width: int) -> list[list[tuple[int, tuple[int, int, int], str]]]:
    """Legend entries (x, colour, text) wrapped into lines of at most ``width`` px."""
    cv2 = _cv2()
    lines: list[list] = [[]]
    x = GAP
    for color, text in _legend_items():
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _LEGEND_SCALE, 1)
        item = _SWATCH + 4 + w + 12
        if lines[-1] and x + item > width:
            lines.append([])
            x = GAP
        lines[-1].append((x, color, text))
        x += item
    return lines


def _draw_legend(sheet: np.ndarray, top: int) -> None:
    cv2 = _cv2()
    for i, line in enumerate(_legend_lines(sheet.shape[1])):
        y = top + i * LEGEND_LINE_HEIGHT
        for x, color, text in line:
            y0 = y + (LEGEND_LINE_HEIGHT - _SWATCH) // 2
            cv2.rectangle(sheet, (x, y0), (x + _SWATCH - 1, y0 + _SWATCH - 1), color, -1, cv2.LINE_8)
            cv2.putText(
                sheet,
                text,
                (x + _SWATCH + 4, y0 + _SWATCH - 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                _LEGEND_SCALE,
                TEXT_COLOR,
                1,
                cv2.LINE_AA,
            )


def _depth_panels(sample: _Sample, tile_w: int, tile_h: int) -> list[np.ndarray] | None:
    """Colour-mapped depth of every frame (one range per sample, near = warm, no surface = black)."""
    cv2 = _cv2()
    depths = [sample.images.get(f"f{t:03d}.depth") for t in range(sample.frames)]
    if any(d is None or d.ndim != 2 for d in depths):
        return None
    valid = np.concatenate([d[d > 0] for d in depths])
    lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
    panels = []
    for d in depths:
        norm = np.clip((hi - d.astype(np.float64)) / max(hi - lo, 1.0), 0.0, 1.0)
        colored = cv2.applyColorMap(np.round(norm * 255.0).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
        colored = np.where((d > 0)[..., None], colored, 0).astype(np.uint8)
        panels.append(_resize(colored, tile_w, tile_h))
    return panels


def _nocs_panels(sample: _Sample, tile_w: int, tile_h: int) -> list[np.ndarray] | None:
    maps = [sample.images.get(f"f{t:03d}.nocs") for t in range(sample.frames)]
    if any(m is None or m.ndim != 3 or m.shape[2] != 3 for m in maps):
        return None
    return [_resize((m // 257 if m.dtype == np.uint16 else m).astype(np.uint8), tile_w, tile_h) for m in maps]


def _captioned(panel: np.ndarray, text: str) -> np.ndarray:
    strip = np.zeros((CAPTION_HEIGHT, panel.shape[1], 3), dtype=np.uint8)
    strip[:] = CAPTION_BACKGROUND
    _put_caption(strip, [text])
    return np.concatenate([panel, strip], axis=0)


def _gif_frames(sample: _Sample) -> list[np.ndarray]:
    camera = sample.meta["camera"]
    scale = _gif_scale(int(camera["width"]))
    tile_w = max(1, round(int(camera["width"]) * scale))
    tile_h = max(1, round(int(camera["height"]) * scale))
    columns = [[_annotated_frame(sample, t, tile_w, tile_h) for t in range(sample.frames)]]
    for panels, name in (
        (_depth_panels(sample, tile_w, tile_h), "depth"),
        (_nocs_panels(sample, tile_w, tile_h), "NOCS"),
    ):
        if panels is not None:
            columns.append([_captioned(p, name) for p in panels])
    frames = []
    for t in range(sample.frames):
        canvas = np.zeros(
            (tile_h + CAPTION_HEIGHT + 2 * GAP, len(columns) * (tile_w + GAP) + GAP, 3), np.uint8
        )
        canvas[:] = BACKGROUND
        for c, column in enumerate(columns):
            x = GAP + c * (tile_w + GAP)
            canvas[GAP : GAP + tile_h + CAPTION_HEIGHT, x : x + tile_w] = column[t]
        frames.append(canvas)
    return frames


# ---------------------------------------------------------------------------------------------------------------
# output


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _gif_bytes(frames: list[np.ndarray]) -> bytes:
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0
    )
    return buffer.getvalue()


def _contact_sheet(samples: list[_Sample]) -> np.ndarray:
    """(H, W, 3) uint8 contact sheet of decoded samples (see the module docstring)."""
    first = samples[0].meta["camera"]
    frames = max(s.frames for s in samples)
    layout = sheet_layout(int(first["width"]), int(first["height"]), frames, len(samples))
    sheet = np.zeros((layout.height, layout.width, 3), dtype=np.uint8)
    sheet[:] = BACKGROUND
    for row, sample in enumerate(samples):
        for col, t in enumerate(_frame_columns(sample.frames)):
            x, y = layout.tile_origin(row, col)
            sheet[y : y + layout.tile_h + CAPTION_HEIGHT, x : x + layout.tile_w] = _annotated_frame(
                sample, t, layout.tile_w, layout.tile_h
            )
    _draw_legend(sheet, layout.height - layout.legend_h)
    return sheet


def preview(
    shards_dir: str | os.PathLike, out: Path | None = None, max_samples: int = 8, gif: bool = True
) -> list[Path]:
    """Write a labelled contact sheet (and one GIF per sample) of the first samples of a shard folder.

    Args:
        shards_dir: output folder of ``hoigen synth``, its ``shards/`` folder, or one shard tar.
        out: folder for the files; default ``<shards_dir>/preview`` (next to the tar for a single tar).
        max_samples: number of samples shown (the first ones, in shard then key order), >= 1.
        gif: also write ``<key>.gif`` per sample (annotated frames | depth | NOCS, all frames, looping) and, for
            generated samples, ``<key>.side_by_side.gif`` (render | photo | video | tracking).

    Returns:
        The written paths: ``contact_sheet.png`` first, then the GIFs in sample order.

    Raises:
        FileNotFoundError: ``shards_dir`` does not exist or holds no ``*.tar`` shards.
        ValueError: bad arguments, unreadable shards, samples without meta.json or RGB frames, or shards that hold
            no samples.
    """
    from hoigen.render.png import encode_png

    if isinstance(max_samples, bool) or not isinstance(max_samples, int | np.integer) or max_samples < 1:
        raise ValueError(f"max_samples must be an integer >= 1, got {max_samples!r}")
    if not isinstance(shards_dir, str | os.PathLike):
        raise ValueError(f"shards_dir must be a path, got {type(shards_dir).__name__}")
    tars, base = _find_shards(Path(shards_dir))
    samples = _read_samples(tars, int(max_samples), with_maps=bool(gif))
    if not samples:
        raise ValueError(f"the shards in {shards_dir} hold no samples")
    out_dir = Path(out) if out is not None else base / "preview"
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the preview output {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    written = []
    sheet_path = out_dir / SHEET_NAME
    _write_atomic(sheet_path, encode_png(_contact_sheet(samples)))
    written.append(sheet_path)
    if gif:
        for sample in samples:
            path = out_dir / f"{sample.key}.gif"
            _write_atomic(path, _gif_bytes(_gif_frames(sample)))
            written.append(path)
            side_by_side = _side_by_side_frames(sample)
            if side_by_side is not None:
                path = out_dir / f"{sample.key}.side_by_side.gif"
                _write_atomic(path, _gif_bytes(side_by_side))
                written.append(path)
    return written
