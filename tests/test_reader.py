"""The shard reader (``hoigen.datasets.reader``) and ``dataset_statistics`` on a small real dataset.

One tiny run (4 samples of 2 frames at 64 px, 2 shards) made once per module is the ground truth: every member the
writer put in the tars, decoded here directly with ``tarfile`` + ``decode_png``, must come back unchanged through
the reader — 16-bit depth / NOCS included — and a ``DataLoader`` with several workers must see each sample once.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("webdataset")
pytest.importorskip("cv2")

from hoigen.config import RunConfig  # noqa: E402
from hoigen.datasets.inspect import dataset_statistics, format_statistics  # noqa: E402
from hoigen.datasets.reader import (  # noqa: E402
    ShardFormatError,
    collate,
    open_frames,
    open_sequences,
    resolve_shards,
    to_torch,
)
from hoigen.render.png import decode_png  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

N, PER_SHARD, FRAMES = 4, 2, 2
IMAGES = ("rgb", "depth", "mask", "normal", "nocs", "skeleton", "hoimask", "tracking")
UINT16_IMAGES = ("depth", "nocs")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reader") / "run"
    config = RunConfig().replace(
        camera={"preset": "square-64"}, trajectory={"frames": FRAMES}, grasp={"candidates": 2, "max_attempts": 40}
    )
    run_synth(SynthJob(config, out, n=N, samples_per_shard=PER_SHARD), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def manifest(dataset) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


@pytest.fixture(scope="module")
def shard_paths(dataset, manifest) -> list[Path]:
    return [dataset / "shards" / entry["name"] for entry in manifest["shards"]]


@pytest.fixture(scope="module")
def raw(shard_paths) -> dict[str, dict[str, bytes]]:
    """{key: {suffix: bytes}} read straight from the tars, in tar order."""
    samples: dict[str, dict[str, bytes]] = {}
    for path in shard_paths:
        with tarfile.open(path) as tar:
            for info in tar:
                key, suffix = info.name.split(".", 1)
                samples.setdefault(key, {})[suffix] = tar.extractfile(info).read()
    return samples


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _copy_shard(src: Path, dst: Path, drop: set[str]) -> None:
    """Copy the tar ``src`` to ``dst`` without the members named in ``drop``."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            if info.name not in drop:
                tout.addfile(info, tin.extractfile(info))


# --------------------------------------------------------------------------------------------------------------
# sequences


def test_round_trip_every_member(dataset, manifest, raw):
    sequences = list(open_sequences(dataset))
    assert [s["key"] for s in sequences] == list(raw)  # manifest order, tar order
    assert len(sequences) == manifest["samples"] == N
    seen_16bit = dict.fromkeys(UINT16_IMAGES, False)
    for seq in sequences:
        members = raw[seq["key"]]
        meta = json.loads(members["meta.json"])
        assert seq["meta"] == meta
        T = len(meta["frames"])
        assert T == FRAMES == len(seq["frames"])
        height, width = meta["camera"]["height"], meta["camera"]["width"]
        rebuilt = {"meta.json", "points.npy", "points_label.npy"}
        for t, frame in enumerate(seq["frames"]):
            for name in IMAGES:
                member = f"f{t:03d}.{name}.png"
                rebuilt.add(member)
                expected = decode_png(members[member])
                got = frame[name]
                assert got.dtype == expected.dtype and got.shape == expected.shape, member
                np.testing.assert_array_equal(got, expected, err_msg=member)
                assert got.shape[:2] == (height, width)
            assert frame["rgb"].shape == (height, width, 3) and frame["rgb"].dtype == np.uint8
            assert frame["depth"].shape == (height, width) and frame["depth"].dtype == np.uint16
            assert frame["nocs"].shape == (height, width, 3) and frame["nocs"].dtype == np.uint16
            assert frame["mask"].shape == (height, width) and frame["mask"].dtype == np.uint8
            for name in UINT16_IMAGES:
                seen_16bit[name] |= bool((frame[name] > 255).any())
            assert frame["depth_m"].dtype == np.float32
            np.testing.assert_allclose(
                frame["depth_m"], frame["depth"] * (meta["depth_scale"] / 1000.0), rtol=1e-6
            )
            labels = meta["frames"][t]
            K = np.asarray(meta["camera"]["K"])
            joints3d = np.asarray(labels["joints3d"])
            projected = (K @ joints3d.T).T
            np.testing.assert_allclose(
                np.asarray(labels["joints2d"]), projected[:, :2] / projected[:, 2:], atol=1e-6
            )
        assert rebuilt == set(members)  # nothing written was left out
        np.testing.assert_array_equal(seq["points"], _npy(members["points.npy"]))
        np.testing.assert_array_equal(seq["points_label"], _npy(members["points_label.npy"]))
        assert seq["points"].dtype == np.float32 and seq["points"].shape[::2] == (T, 3)
        assert seq["points_label"].dtype == np.uint8 and seq["points_label"].shape == (
            seq["points"].shape[1],
        )
        assert set(np.unique(seq["points_label"])) <= {0, 1}
    assert all(seen_16bit.values()), f"16-bit values > 255 missing: {seen_16bit}"


def test_sources_are_equivalent(dataset, shard_paths, raw):
    keys = list(raw)
    pattern = str(dataset / "shards" / "hoigen-{000000..000001}.tar")
    for source in (
        dataset,
        str(dataset),
        dataset / "manifest.json",
        dataset / "shards",  # no manifest there: the folder's *.tar
        [str(p) for p in shard_paths],
        shard_paths,
        pattern,
        [f"pipe:cat {p}" for p in shard_paths],
    ):
        assert [s["key"] for s in open_sequences(source)] == keys, source
    assert [s["key"] for s in open_sequences(shard_paths[1])] == keys[PER_SHARD:]
    assert resolve_shards(pattern) == [str(p) for p in shard_paths]


def test_decode_false_keeps_png_bytes(dataset, raw):
    for seq in open_sequences(dataset, decode=False):
        members = raw[seq["key"]]
        for t, frame in enumerate(seq["frames"]):
            assert "depth_m" not in frame
            for name in IMAGES:
                assert frame[name] == members[f"f{t:03d}.{name}.png"]
        assert isinstance(seq["meta"], dict)
        np.testing.assert_array_equal(seq["points"], _npy(members["points.npy"]))


def test_shuffle_yields_each_sample_once(dataset, raw):
    keys = [s["key"] for s in open_sequences(dataset, shuffle=10, seed=3)]
    assert sorted(keys) == sorted(raw)
    frames = [f["key"] for f in open_frames(dataset, shuffle=10, seed=3)]
    assert len(frames) == len(set(frames)) == N * FRAMES


def test_resampled_is_endless(dataset, raw):
    stream = iter(open_sequences(dataset, resampled=True, seed=0))
    keys = [next(stream)["key"] for _ in range(3 * N)]
    assert set(keys) <= set(raw)


# --------------------------------------------------------------------------------------------------------------
# frames


def test_open_frames(dataset, raw):
    sequences = {s["key"]: s for s in open_sequences(dataset)}
    frames = list(open_frames(dataset))
    assert len(frames) == N * FRAMES
    assert [f["key"] for f in frames] == [f"{k}/f{t:03d}" for k in raw for t in range(FRAMES)]
    for frame in frames:
        seq = sequences[frame["sample_key"]]
        t = frame["frame"]
        assert frame["key"] == f"{seq['key']}/f{t:03d}" and frame["num_frames"] == FRAMES
        labels = seq["meta"]["frames"][t]
        assert set(frame["labels"]) == set(labels)
        for name in ("T_cam_obj", "joints3d", "joints2d", "bbox_obj", "bbox_hand"):
            np.testing.assert_array_equal(frame["labels"][name], np.asarray(labels[name]))
        assert frame["labels"]["T_cam_obj"].shape == (4, 4)
        assert frame["labels"]["joints3d"].shape == (21, 3) and frame["labels"]["joints2d"].shape == (21, 2)
        assert frame["labels"]["visib_fract_obj"] == labels["visib_fract_obj"]
        np.testing.assert_array_equal(frame["labels"]["mano"]["hand_pose"], labels["mano"]["hand_pose"])
        assert "frames" not in frame["meta"]
        assert frame["meta"]["object"] == seq["meta"]["object"]
        assert frame["depth_scale"] == seq["meta"]["depth_scale"]
        np.testing.assert_array_equal(frame["K"], np.asarray(seq["meta"]["camera"]["K"]))
        np.testing.assert_array_equal(frame["points"], seq["points"][t])
        np.testing.assert_array_equal(frame["points_label"], seq["points_label"])
        for name in (*IMAGES, "depth_m"):
            np.testing.assert_array_equal(frame[name], seq["frames"][t][name])


# --------------------------------------------------------------------------------------------------------------
# PyTorch


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_reads_each_sample_once_per_epoch(dataset, manifest, num_workers):
    torch = pytest.importorskip("torch")
    loader = torch.utils.data.DataLoader(open_sequences(dataset), num_workers=num_workers, batch_size=None)
    for _epoch in range(2):
        keys = [sample["key"] for sample in loader]
        assert len(keys) == len(set(keys)) == manifest["samples"]
    frames = torch.utils.data.DataLoader(
        open_frames(dataset), num_workers=num_workers, batch_size=None, collate_fn=to_torch
    )
    keys = []
    for frame in frames:
        keys.append(frame["key"])
        assert frame["depth"].dtype == torch.int32 and frame["rgb"].dtype == torch.uint8
    assert len(keys) == len(set(keys)) == manifest["samples"] * FRAMES


def test_dataset_pickles(dataset, raw):
    """Spawn / forkserver DataLoader workers receive the dataset pickled."""
    clone = pickle.loads(pickle.dumps(open_frames(dataset)))
    assert len(list(clone)) == len(raw) * FRAMES


def test_to_torch_and_collate(dataset):
    torch = pytest.importorskip("torch")
    frames = list(open_frames(dataset))
    one = to_torch(frames[0])
    assert one["key"] == frames[0]["key"]
    assert one["depth"].dtype == torch.int32
    assert torch.equal(one["depth"], torch.from_numpy(frames[0]["depth"].astype(np.int32)))
    assert one["nocs"].dtype == torch.int32 and int(one["nocs"].max()) > 255
    assert one["points"].dtype == torch.float32 and one["labels"]["joints3d"].shape == (21, 3)
    loader = torch.utils.data.DataLoader(open_frames(dataset), batch_size=3, collate_fn=collate)
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [3, 3, 2]
    first = batches[0]
    assert first["rgb"].shape == (3, 64, 64, 3) and first["depth"].dtype == torch.int32
    assert first["labels"]["joints2d"].shape == (3, 21, 2)
    assert first["frame"].tolist() == [0, 1, 0]
    assert isinstance(first["meta"], list) and first["meta"][0]["object"]["category"]


# --------------------------------------------------------------------------------------------------------------
# errors


def test_missing_sources(tmp_path, dataset):
    with pytest.raises(FileNotFoundError, match="no manifest.json and no shards"):
        open_sequences(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_sequences(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"hoigen-000002\.tar.*and 3 more"):
        open_sequences(str(dataset / "shards" / "hoigen-{000000..000009}.tar"))
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        open_frames([tmp_path / "missing.tar"])
    broken = tmp_path / "broken"
    (broken / "shards").mkdir(parents=True)
    (broken / "manifest.json").write_text(
        json.dumps({"shards": [{"name": "hoigen-000000.tar", "samples": 1}], "complete": True})
    )
    with pytest.raises(FileNotFoundError, match="hoigen-000000.tar"):
        open_sequences(broken)


def test_sample_without_meta(tmp_path, shard_paths, raw):
    keys = list(raw)[:PER_SHARD]
    bad = tmp_path / "bad.tar"
    _copy_shard(shard_paths[0], bad, {f"{keys[0]}.meta.json"})
    with pytest.raises(ShardFormatError, match=rf"{keys[0]}.*no meta\.json member"):
        list(open_sequences(bad))
    with pytest.warns(UserWarning, match=keys[0]):
        kept = [s["key"] for s in open_sequences(bad, handler=_warn_and_continue())]
    assert kept == keys[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [f["sample_key"] for f in open_frames(bad, handler=_warn_and_continue())] == [keys[1]] * FRAMES


def test_sample_without_frame_image(tmp_path, shard_paths, raw):
    keys = list(raw)[:PER_SHARD]
    bad = tmp_path / "bad.tar"
    _copy_shard(shard_paths[0], bad, {f"{keys[1]}.f001.nocs.png"})
    with pytest.raises(ShardFormatError, match=rf"{keys[1]}.*f001\.nocs\.png"):
        list(open_sequences(bad))


def _warn_and_continue():
    import webdataset

    return webdataset.warn_and_continue


# --------------------------------------------------------------------------------------------------------------
# statistics


def test_dataset_statistics(dataset, manifest, raw, shard_paths):
    stats = dataset_statistics(dataset)
    assert stats["shards"] == len(manifest["shards"]) == 2
    assert stats["samples"] == manifest["samples"] == N
    assert stats["frames"] == N * FRAMES
    assert stats["image_size"] == {"64x64": N}
    assert stats["bytes"] == sum(p.stat().st_size for p in shard_paths)
    assert stats["skipped"] == manifest["skipped"]
    assert stats["warnings"] == []
    metas = [json.loads(m["meta.json"]) for m in raw.values()]
    categories = {}
    for meta in metas:
        categories.setdefault(meta["object"]["category"], set()).add(meta["object"]["class_id"])
    assert set(stats["categories"]) == set(categories)
    for name, info in stats["categories"].items():
        assert info["class_ids"] == sorted(categories[name])
    assert sum(info["samples"] for info in stats["categories"].values()) == N
    assert sum(stats["hand_models"].values()) == sum(stats["grasp_methods"].values()) == N
    fingers = [m["grasp"]["metrics"]["num_fingers_in_contact"] for m in metas]
    assert stats["grasp_metrics"]["num_fingers_in_contact"]["mean"] == pytest.approx(np.mean(fingers))
    assert stats["grasp_metrics"]["num_fingers_in_contact"]["std"] == pytest.approx(np.std(fingers))
    visib = [f["visib_fract_obj"] for m in metas for f in m["frames"]]
    assert stats["visib_fract_obj"]["mean"] == pytest.approx(np.mean(visib))
    assert 0 < stats["coverage_obj"]["mean"] < 1 and 0 < stats["coverage_hand"]["mean"] < 1
    assert 0 < stats["depth_range_m"]["min"] < stats["depth_range_m"]["max"]
    json.dumps(stats)  # serialisable
    text = format_statistics(stats)
    for needle in ("samples", "64x64", "thumb_opposition", "max_penetration_mm", *categories):
        assert needle in text
    listed = dataset_statistics([str(p) for p in shard_paths])
    assert listed["samples"] == N and listed["manifest"] is None


def test_statistics_flags_missing_meta(tmp_path, shard_paths, raw):
    key = next(iter(raw))
    bad = tmp_path / "bad.tar"
    _copy_shard(shard_paths[0], bad, {f"{key}.meta.json"})
    stats = dataset_statistics(bad)
    assert stats["samples"] == PER_SHARD - 1
    assert any(key in w for w in stats["warnings"])


def test_import_is_light():
    code = (
        "import sys, hoigen.datasets, hoigen.datasets.reader, hoigen.datasets.inspect\n"
        "print(sorted(m for m in ('torch', 'webdataset', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
