"""``hoigen.exports.coco`` on a tiny real dataset, checked through pycocotools.

One small synth run (3 samples of 2 frames at 128 px: a bottle, a bowl and a camera) and one export of it are
made once for the module; every annotation is compared with the shard it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("webdataset")
pytest.importorskip("cv2")
pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from hoigen.config import RunConfig  # noqa: E402
from hoigen.datasets.reader import open_frames  # noqa: E402
from hoigen.exports.coco import (  # noqa: E402
    FIRST_EXTRA_CATEGORY_ID,
    HAND_CATEGORY_ID,
    HAND_OKS_SIGMAS,
    KEYPOINT_DEPTH_TOLERANCE_M,
    encode_rle,
    export_coco,
    keypoint_visibility,
    mask_bbox,
    object_categories,
    png_size,
)
from hoigen.hands.model import OPENPOSE_NAMES  # noqa: E402
from hoigen.render.conditions import SKELETON_EDGES  # noqa: E402
from hoigen.render.png import decode_png, encode_png  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

N, FRAMES, SIZE = 3, 2, 128
OBJECT_ID, HAND_ID = 1, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "run"
    config = RunConfig().replace(
        camera={"preset": f"square-{SIZE}"}, trajectory={"frames": FRAMES}, grasp={"candidates": 2, "max_attempts": 40}
    )
    run_synth(SynthJob(config, out, n=N, samples_per_shard=2), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def frames(dataset) -> dict[str, dict]:
    return {f"{f['sample_key']}_f{f['frame']:03d}.png": f for f in open_frames(dataset)}


@pytest.fixture(scope="module")
def export(dataset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("coco_out")
    return out, export_coco(dataset, out)


@pytest.fixture(scope="module")
def coco(export) -> COCO:
    out, _ = export
    return COCO(str(out / "annotations" / "instances.json"))


def _instance(ann: dict) -> int:
    return HAND_ID if ann["category_id"] == HAND_CATEGORY_ID else OBJECT_ID


# ---------------------------------------------------------------------------------------------------------------
# the export of a real run


def test_summary_images_and_files(export, coco, frames):
    out, summary = export
    assert summary["images"] == N * FRAMES == len(coco.imgs) == len(frames)
    assert summary["annotations"] == len(coco.anns)
    assert summary["skipped_instances"] == sum(
        int(not (f["mask"] == k).any()) for f in frames.values() for k in (OBJECT_ID, HAND_ID)
    )
    assert sorted(coco.getImgIds()) == list(range(1, N * FRAMES + 1))
    assert sorted(coco.getAnnIds()) == list(range(1, len(coco.anns) + 1))
    for img in coco.imgs.values():
        frame = frames[img["file_name"]]
        assert (img["width"], img["height"]) == (SIZE, SIZE)
        assert img["hoigen_key"] == frame["key"]
        data = (out / "images" / img["file_name"]).read_bytes()
        np.testing.assert_array_equal(decode_png(data), frame["rgb"])


def test_segmentations_are_the_shard_masks(coco, frames):
    for ann in coco.anns.values():
        img = coco.imgs[ann["image_id"]]
        frame = frames[img["file_name"]]
        expected = frame["mask"] == _instance(ann)
        assert isinstance(ann["segmentation"]["counts"], str)
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        assert ann["area"] == int(expected.sum()) > 0
        assert ann["iscrowd"] == 0


def test_every_visible_instance_has_one_annotation(coco, frames):
    for img in coco.imgs.values():
        frame = frames[img["file_name"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        got = sorted(_instance(a) for a in anns)
        assert got == [k for k in (OBJECT_ID, HAND_ID) if (frame["mask"] == k).any()]


def test_boxes_match_labels_and_rle(coco, frames):
    for ann in coco.anns.values():
        labels = frames[coco.imgs[ann["image_id"]]["file_name"]]["labels"]
        suffix = "hand" if ann["category_id"] == HAND_CATEGORY_ID else "obj"
        assert all(isinstance(v, float) for v in ann["bbox"])
        np.testing.assert_array_equal(ann["bbox"], labels[f"bbox_visib_{suffix}"])
        np.testing.assert_array_equal(ann["bbox"], mask_utils.toBbox(ann["segmentation"]))
        np.testing.assert_array_equal(ann["bbox_amodal"], labels[f"bbox_{suffix}"])


def test_hand_keypoints_are_joints2d_with_visibility(coco, frames):
    hands = coco.loadAnns(coco.getAnnIds(catIds=[HAND_CATEGORY_ID]))
    assert hands
    for ann in hands:
        frame = frames[coco.imgs[ann["image_id"]]["file_name"]]
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)
        np.testing.assert_allclose(kp[:, :2], frame["labels"]["joints2d"], rtol=0, atol=1e-9)
        v = kp[:, 2].astype(int)
        assert set(v.tolist()) <= {0, 1, 2}
        assert ann["num_keypoints"] == int((v > 0).sum())
        cols, rows = np.floor(kp[:, 0] + 0.5).astype(int), np.floor(kp[:, 1] + 0.5).astype(int)
        inside = (cols >= 0) & (cols < SIZE) & (rows >= 0) & (rows < SIZE)
        np.testing.assert_array_equal(v > 0, inside)
        for j in np.flatnonzero(v == 2):
            assert frame["mask"][rows[j], cols[j]] == HAND_ID
            assert frame["labels"]["joints3d"][j, 2] - frame["depth_m"][rows[j], cols[j]] <= (
                KEYPOINT_DEPTH_TOLERANCE_M + 1e-6
            )
        for j in np.flatnonzero(v == 1):
            z = frame["labels"]["joints3d"][j, 2] - frame["depth_m"][rows[j], cols[j]]
            assert frame["mask"][rows[j], cols[j]] != HAND_ID or z > KEYPOINT_DEPTH_TOLERANCE_M
    assert any(np.asarray(a["keypoints"])[2::3].max() == 2 for a in hands)  # some joints are seen


def test_categories(coco, frames, export):
    _, summary = export
    hand = coco.cats[HAND_CATEGORY_ID]
    assert hand["name"] == "hand"
    assert hand["keypoints"] == list(OPENPOSE_NAMES) and len(hand["keypoints"]) == 21
    assert hand["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON_EDGES] and len(hand["skeleton"]) == 20
    assert min(min(pair) for pair in hand["skeleton"]) == 1 and max(max(p) for p in hand["skeleton"]) == 21
    present = {(f["meta"]["object"]["category"], f["meta"]["object"]["class_id"]) for f in frames.values()}
    assert present == {("bottle", 1), ("bowl", 2), ("camera", 3)}
    assert {c["id"]: c["name"] for c in coco.cats.values()} == {
        1: "bottle",
        2: "bowl",
        3: "camera",
        7: "hand",
    }
    assert summary["categories"] == {1: "bottle", 2: "bowl", 3: "camera", 7: "hand"}
    for ann in coco.anns.values():
        if ann["category_id"] == HAND_CATEGORY_ID:
            continue
        obj = frames[coco.imgs[ann["image_id"]]["file_name"]]["meta"]["object"]
        assert ann["category_id"] == obj["class_id"]
        assert coco.cats[ann["category_id"]]["name"] == obj["category"]
        assert ann["object_id"] == obj["id"]


def test_cocoeval_keypoints_ap_is_one_on_ground_truth_as_detections(coco, frames):
    """What a user runs to score a hand pose estimator (the recipe of HAND_OKS_SIGMAS)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    hands = [a for a in coco.dataset["annotations"] if a["category_id"] == HAND_CATEGORY_ID]
    assert hands and all("num_keypoints" in a for a in coco.dataset["annotations"])
    detections = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "keypoints": a["keypoints"],
            "score": 1.0,
        }
        for a in hands
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(detections), iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = HAND_OKS_SIGMAS
        evaluator.params.catIds = [HAND_CATEGORY_ID]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert len(HAND_OKS_SIGMAS) == 21
    assert evaluator.stats[0] == pytest.approx(1.0)  # AP over OKS 0.50:0.95
    # every category evaluated at once (no catIds filter) must not fail on the object annotations either
    with contextlib.redirect_stdout(io.StringIO()):
        everything = COCOeval(coco, coco.loadRes(detections), iouType="keypoints")
        everything.params.kpt_oks_sigmas = HAND_OKS_SIGMAS
        everything.evaluate()


def test_keypoints_outside_the_image_are_not_visible(coco):
    for ann in coco.dataset["annotations"]:
        if ann["category_id"] != HAND_CATEGORY_ID:
            assert ann["num_keypoints"] == 0
            continue
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)
        outside = (np.floor(kp[:, :2] + 0.5) < 0).any(axis=1) | (np.floor(kp[:, :2] + 0.5) >= SIZE).any(
            axis=1
        )
        assert (kp[outside, 2] == 0).all()
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())


def test_json_is_plain_coco(export):
    out, _ = export
    data = json.loads((out / "annotations" / "instances.json").read_text())
    assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
    ann = data["annotations"][0]
    assert set(ann) >= {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
    assert set(ann["segmentation"]) == {"size", "counts"}


def test_existing_export_is_refused_unless_overwrite(dataset, export, tmp_path):
    out, summary = export
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_coco(dataset, out)
    again = tmp_path / "again"
    export_coco(dataset, again)
    (again / "images" / "stale.png").write_bytes(b"x")
    assert export_coco(dataset, again, overwrite=True)["images"] == summary["images"]
    assert not (again / "images" / "stale.png").exists()


def test_missing_image_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"no f000\.photo\.png member"):
        export_coco(dataset, tmp_path / "out", image="photo")


# ---------------------------------------------------------------------------------------------------------------
# helpers on made-up inputs


def test_object_categories_ids():
    records, ids = object_categories({("spoon", 0), ("mug", 6), ("apple", 0), ("bottle", 0), ("can", 4)})
    assert ids[("can", 4)] == 4 and ids[("mug", 6)] == 6
    assert ids[("apple", 0)] == FIRST_EXTRA_CATEGORY_ID
    assert ids[("bottle", 0)] == FIRST_EXTRA_CATEGORY_ID + 1
    assert ids[("spoon", 0)] == FIRST_EXTRA_CATEGORY_ID + 2
    names = {r["id"]: r["name"] for r in records}
    assert names[FIRST_EXTRA_CATEGORY_ID + 1] == "bottle_other"  # not the NOCS bottle
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    assert HAND_CATEGORY_ID not in names


def test_rle_bbox_and_png_size_helpers():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:3, 2:6] = True
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [5, 7]
    back = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(back.astype(bool), mask)
    assert mask_bbox(mask) == [2.0, 1.0, 4.0, 2.0]
    assert png_size(encode_png(np.zeros((5, 7, 3), np.uint8))) == (7, 5)
    with pytest.raises(ValueError):
        png_size(b"not a png at all, not at all")


def test_keypoint_visibility_rules():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:, :5] = HAND_ID
    mask[:, 5:] = OBJECT_ID
    depth = np.full((10, 10), 0.5)
    joints2d = np.array([[1.0, 1.0], [1.0, 2.0], [7.0, 7.0], [-0.6, 3.0], [9.4, 9.4], [3.0, 3.0]])
    z = np.array([0.51, 0.6, 0.51, 0.5, 0.5, -0.1])
    joints3d = np.column_stack([np.zeros(6), np.zeros(6), z])
    flags = keypoint_visibility(joints2d, joints3d, mask, depth, HAND_ID)
    # on the hand and close; on the hand but far behind; on the object; outside; inside the last pixel (on the
    # object); behind the camera
    assert flags.tolist() == [2, 1, 1, 0, 1, 0]
