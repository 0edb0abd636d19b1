"""``hoigen.datasets.preview``: contact sheet and GIFs of real (tiny) shards, labels where the meta says.

One small synth run (64 px, 3 frames, 3 samples in two shards) is made once for the module; each preview of it
takes well under a second.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")  # the render extra

from PIL import Image  # noqa: E402

from hoigen.config import RunConfig  # noqa: E402
from hoigen.datasets.preview import (  # noqa: E402
    AXIS_COLORS,
    CAPTION_HEIGHT,
    GAP,
    HAND_BOX_COLOR,
    MAX_COLUMNS,
    MAX_SHEET_WIDTH,
    OBJECT_BOX_COLOR,
    OBJECT_VISIB_BOX_COLOR,
    SHEET_NAME,
    preview,
    sheet_layout,
)
from hoigen.render.conditions import WRIST_COLOR  # noqa: E402
from hoigen.render.png import decode_png  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

N, FRAMES, SIZE = 3, 3, 64
KEYS = [f"s{i:08d}" for i in range(N)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("preview") / "run"
    config = RunConfig().replace(
        camera={"preset": f"square-{SIZE}"}, trajectory={"frames": FRAMES}, grasp={"candidates": 2, "max_attempts": 40}
    )
    run_synth(SynthJob(config, out, n=N, samples_per_shard=2), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def written(dataset) -> list[Path]:
    return preview(dataset)


def _metas(dataset: Path) -> dict[str, dict]:
    metas = {}
    for shard in sorted((dataset / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".meta.json"):
                    metas[member.name.split(".")[0]] = json.loads(tar.extractfile(member).read())
    return metas


def _project(K, T, point):  # noqa: N803
    p = np.asarray(T)[:3, :3] @ point + np.asarray(T)[:3, 3]
    q = np.asarray(K) @ p
    return np.array([q[0] / q[2], q[1] / q[2]])


def _near(image: np.ndarray, xy, radius: int, color, tolerance: int = 0) -> bool:
    """Whether a pixel within ``radius`` (square window) of ``xy`` has ``color`` (each channel within tolerance)."""
    x, y = int(round(xy[0])), int(round(xy[1]))
    window = image[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].astype(int)
    return bool((np.abs(window - np.asarray(color)).max(axis=-1) <= tolerance).any())


def _pure(image: np.ndarray, xy, radius: int, color) -> bool:
    """Pure-ish axis colour nearby: the channel that is 255 in ``color`` >= 230, the others <= 25."""
    x, y = int(round(xy[0])), int(round(xy[1]))
    window = image[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].astype(int)
    on = np.asarray(color) == 255
    return bool(((window[..., on] >= 230).all(axis=-1) & (window[..., ~on] <= 25).all(axis=-1)).any())


# --------------------------------------------------------------------------------------------------------------
# files and sizes


def test_writes_sheet_and_one_gif_per_sample(dataset, written):
    out = dataset / "preview"
    assert written == [out / SHEET_NAME, *[out / f"{k}.gif" for k in KEYS]]
    assert all(p.is_file() for p in written)

    sheet = decode_png(written[0].read_bytes())
    layout = sheet_layout(SIZE, SIZE, FRAMES, N)
    assert (layout.rows, layout.cols) == (N, FRAMES)
    assert layout.tile_w >= 256 and layout.tile_w % SIZE == 0  # small renders enlarged by a whole factor
    assert sheet.shape == (layout.height, layout.width, 3) and sheet.dtype == np.uint8
    assert layout.width <= MAX_SHEET_WIDTH

    for path in written[1:]:
        with Image.open(path) as gif:
            assert gif.format == "GIF" and gif.n_frames == FRAMES and gif.info.get("loop") == 0
            # annotated frame | depth | NOCS, each tile + caption, GAP between and around
            assert gif.size == (3 * layout.tile_w + 4 * GAP, layout.tile_h + CAPTION_HEIGHT + 2 * GAP)
            frames = []
            for t in range(gif.n_frames):
                gif.seek(t)
                frames.append(np.asarray(gif.convert("RGB")))
            assert not np.array_equal(frames[0], frames[-1])


def test_max_samples_and_no_gif(dataset, tmp_path):
    paths = preview(dataset / "shards", out=tmp_path / "two", max_samples=2)
    assert [p.name for p in paths] == [SHEET_NAME, f"{KEYS[0]}.gif", f"{KEYS[1]}.gif"]
    sheet = decode_png(paths[0].read_bytes())
    assert sheet.shape[:2] == (
        sheet_layout(SIZE, SIZE, FRAMES, 2).height,
        sheet_layout(SIZE, SIZE, FRAMES, 2).width,
    )

    single_shard = sorted((dataset / "shards").glob("*.tar"))[-1]  # holds sample 2 only
    paths = preview(single_shard, out=tmp_path / "one", gif=False)
    assert paths == [tmp_path / "one" / SHEET_NAME]
    assert decode_png(paths[0].read_bytes()).shape[0] == sheet_layout(SIZE, SIZE, FRAMES, 1).height


def test_layout_limits():
    wide = sheet_layout(640, 480, 30, 8)
    assert wide.cols == MAX_COLUMNS and wide.width <= MAX_SHEET_WIDTH and wide.tile_w < 640
    assert abs(wide.tile_h / wide.tile_w - 480 / 640) < 0.01
    big = sheet_layout(640, 480, 3, 1)
    assert (big.tile_w, big.tile_h) == (640, 480)  # fits: shown at native size
    with pytest.raises(ValueError, match="frames"):
        sheet_layout(64, 64, 0, 1)


# --------------------------------------------------------------------------------------------------------------
# labels where the metadata says


def test_overlays_follow_the_metadata(dataset, written):
    sheet = decode_png(written[0].read_bytes())
    layout = sheet_layout(SIZE, SIZE, FRAMES, N)
    s = layout.tile_w / SIZE
    metas = _metas(dataset)
    centres = axes_checked = corners = corners_ok = wrists = 0
    for row, key in enumerate(KEYS):
        meta = metas[key]
        K, obj = meta["camera"]["K"], meta["object"]
        half = 0.5 * obj["scale"] * np.asarray(obj["size"])
        for t in range(FRAMES):
            frame = meta["frames"][t]
            x0, y0 = layout.tile_origin(row, t)
            tile = sheet[y0 : y0 + layout.tile_h, x0 : x0 + layout.tile_w]

            def to_tile(uv):
                return (np.asarray(uv) + 0.5) * s - 0.5

            # object centre (canonical origin): at least two axis colours meet there
            centre = to_tile(_project(K, frame["T_cam_obj"], np.zeros(3)))
            if (centre >= 6).all() and (centre < layout.tile_w - 6).all():
                centres += 1
                found = [_pure(tile, centre, 4, c) for c in AXIS_COLORS]
                assert sum(found) >= 2, (key, t, found)
                # each axis that projects to a long enough segment shows its colour along it
                for axis, color in enumerate(AXIS_COLORS):
                    end = to_tile(_project(K, frame["T_cam_obj"], half * np.eye(3)[axis]))
                    mid = centre + 0.5 * (end - centre)
                    if (
                        np.linalg.norm(end - centre) >= 16
                        and (mid >= 0).all()
                        and (mid < layout.tile_w).all()
                    ):
                        axes_checked += 1
                        assert _pure(tile, mid, 3, color), (key, t, axis)

            # box corners (x, y, w, h in source pixels) carry the box colours
            for box, color in (
                (frame["bbox_obj"], OBJECT_BOX_COLOR),
                (frame["bbox_visib_obj"], OBJECT_VISIB_BOX_COLOR),
                (frame["bbox_hand"], HAND_BOX_COLOR),
            ):
                x, y, w, h = box
                if w <= 0 or h <= 0:
                    continue
                for cx, cy in ((x, y), (x + w, y), (x, y + h), (x + w, y + h)):
                    corners += 1
                    corners_ok += _near(tile, (cx * s, cy * s), 4, color)

            # skeleton: the wrist joint (white) at joints2d[0]
            wrist = to_tile(frame["joints2d"][0])
            if (wrist >= 6).all() and (wrist < layout.tile_w - 6).all():
                wrists += 1
                assert _near(tile, wrist, 2, WRIST_COLOR), (key, t)

    assert centres >= N * FRAMES // 2 and axes_checked >= centres and wrists >= N
    # a corner can be overdrawn by an overlay drawn later (the skeleton, the hand's box): at most 3 % of them
    assert corners >= 2 * N * FRAMES and corners_ok >= 0.97 * corners, (corners_ok, corners)


# --------------------------------------------------------------------------------------------------------------
# determinism and bad input


def test_same_shards_same_bytes(dataset, written, tmp_path):
    again = preview(dataset, out=tmp_path / "again")
    assert [p.name for p in again] == [p.name for p in written]
    for a, b in zip(written, again):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_no_shards_and_bad_input(dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no shards"):
        preview(empty)
    with pytest.raises(FileNotFoundError):
        preview(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_samples"):
        preview(dataset, out=tmp_path / "x", max_samples=0)
    with pytest.raises(ValueError, match="max_samples"):
        preview(dataset, out=tmp_path / "x", max_samples="3")

    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello")
    with pytest.raises(ValueError, match="not a tar"):
        preview(not_tar)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "hoigen-000000.tar").write_bytes(b"\x00\x01not a tar" * 100)
    with pytest.raises(ValueError, match="cannot read shard"):
        preview(garbage)

    # a sample whose meta lists frames that the shard lacks
    broken = tmp_path / "broken"
    broken.mkdir()
    source = sorted((dataset / "shards").glob("*.tar"))[0]
    with tarfile.open(source) as src, tarfile.open(broken / "hoigen-000000.tar", "w") as dst:
        for member in src.getmembers():
            if member.name != f"{KEYS[0]}.f001.rgb.png":
                dst.addfile(member, io.BytesIO(src.extractfile(member).read()))
    with pytest.raises(ValueError, match=r"s00000000.*f001\.rgb\.png"):
        preview(broken)
