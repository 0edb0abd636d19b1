"""``hoigen generate --photo hoidiffusion`` end to end on a tiny real pipeline (random weights, built offline).

Ground truth: a tiny render dataset (2 shards × 2 samples × 3 frames at 64²) and a tiny HOIDiffusion folder in the
converted layout. The stage must add only ``fNNN.photo.png`` and ``meta.generation`` (every input member byte-
identical, every label unchanged), be byte-deterministic for a seed, resume after SIGKILL to the bytes of an
uninterrupted run, refuse bad inputs clearly, and its frames must flow into ``export --image photo``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("webdataset")

from hoigen.config import RunConfig  # noqa: E402
from hoigen.diffusion.stage import GenerateConfig, GenerateError, GenerateJob, run_generate  # noqa: E402
from hoigen.render.png import decode_png  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

FRAMES = 3
STEPS = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen-src") / "run"
    config = RunConfig().replace(
        camera={"preset": "square-64"}, trajectory={"frames": FRAMES}, grasp={"candidates": 2, "max_attempts": 40}
    )
    run_synth(SynthJob(config, out, n=4, samples_per_shard=2), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from hoigen.diffusion.hoidiffusion.fixtures import write_tiny_hoidiffusion

    return write_tiny_hoidiffusion(tmp_path_factory.mktemp("tiny-hoid") / "hoidiffusion", seed=0)


def _config(weights: Path, **photo) -> GenerateConfig:
    # one CPU thread: the pixels are the same in this process, in CLI subprocesses and in Ray actors
    return GenerateConfig(
        photo="hoidiffusion",
        hoidiffusion=str(weights),
        photo_options={"steps": STEPS, **photo},
        device="cpu",
        cpu_threads=1,
    )


def _members(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {suffix: bytes}} of a shard, read as the generate stage reads it."""
    from hoigen.diffusion.stage import read_samples

    return dict(read_samples(path))


@pytest.fixture(scope="module")
def generated(dataset, weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen-out") / "photo"
    summary = run_generate(GenerateJob(dataset, out, _config(weights)), progress=False)
    samples = json.loads((dataset / "manifest.json").read_text())["samples"]
    assert samples >= 2  # the grasp gate may skip a sample; the stage makes what the input has
    assert summary.shards_made == 2 and summary.frames == samples * FRAMES
    return out


def test_generate_adds_photos_and_keeps_every_label(dataset, generated):
    src_manifest = json.loads((dataset / "manifest.json").read_text())
    out_manifest = json.loads((generated / "manifest.json").read_text())
    assert [s["name"] for s in out_manifest["shards"]] == [s["name"] for s in src_manifest["shards"]]
    assert out_manifest["generation"]["config"]["photo"] == "hoidiffusion"
    for entry in src_manifest["shards"]:
        before = _members(dataset / "shards" / entry["name"])
        after = _members(generated / "shards" / entry["name"])
        assert list(before) == list(after)
        for key, members in before.items():
            new = after[key]
            added = set(new) - set(members)
            assert added == {f"f{t:03d}.photo.png" for t in range(FRAMES)}
            for name, data in members.items():
                if name != "meta.json":
                    assert new[name] == data, f"{key}.{name} changed"
            meta_in, meta_out = json.loads(members["meta.json"]), json.loads(new["meta.json"])
            gen = meta_out.pop("generation")
            assert meta_out == meta_in  # labels and every other field untouched
            photo = gen["photo"]
            assert (
                photo["steps"] == STEPS and photo["guidance"] == 7.5 and photo["scheduler"] == "DDIMScheduler"
            )
            assert photo["prompt"].startswith("A hand is grasping a ")
            assert photo["negative_prompt"].startswith("longbody, lowres")
            assert photo["anchor"] is True and photo["anchor_frame"] == FRAMES // 2
            assert photo["dtype"] == "float32" and photo["files"] and photo["crop"] is None
            assert photo["adapter_weights"] == [1.0, 1.0, 1.0]
            for t in range(FRAMES):
                image = decode_png(new[f"f{t:03d}.photo.png"])
                assert image.shape == (64, 64, 3) and image.dtype == np.uint8
                assert image.std() > 0  # a real decoded image, not a constant
    # the input folder was not modified
    for entry in src_manifest["shards"]:
        from hoigen.datasets.shards import file_sha256

        assert file_sha256(dataset / "shards" / entry["name"]) == entry["sha256"]


def test_generate_is_deterministic_and_seeds_differ(dataset, weights, generated, tmp_path):
    again = tmp_path / "again"
    run_generate(GenerateJob(dataset, again, _config(weights)), progress=False)
    names = sorted(p.name for p in (generated / "shards").glob("*.tar"))
    for name in names:
        assert (again / "shards" / name).read_bytes() == (generated / "shards" / name).read_bytes()
    samples = _members(generated / "shards" / names[0])
    seeds = {json.loads(m["meta.json"])["generation"]["photo"]["seed"] for m in samples.values()}
    assert len(seeds) == len(samples)  # one photo seed per sample


def test_rerun_keeps_shards_and_other_options_are_refused(dataset, weights, generated):
    summary = run_generate(GenerateJob(dataset, generated, _config(weights)), progress=False)
    assert summary.shards_made == 0 and summary.shards_kept == 2
    with pytest.raises(GenerateError, match="photo_options.steps"):
        run_generate(GenerateJob(dataset, generated, _config(weights, steps=3)), progress=False)


def test_anchor_frame_is_unchanged_without_anchor_attention(dataset, weights, generated, tmp_path):
    plain = tmp_path / "plain"
    run_generate(GenerateJob(dataset, plain, _config(weights, anchor=False)), progress=False)
    name = sorted(p.name for p in (generated / "shards").glob("*.tar"))[0]
    with_anchor, without = _members(generated / "shards" / name), _members(plain / "shards" / name)
    for key in with_anchor:
        a = FRAMES // 2
        anchor_a = decode_png(with_anchor[key][f"f{a:03d}.photo.png"]).astype(int)
        anchor_b = decode_png(without[key][f"f{a:03d}.photo.png"]).astype(int)
        assert np.abs(anchor_a - anchor_b).max() <= 1  # the anchor attends to itself only
        other_a = decode_png(with_anchor[key]["f000.photo.png"]).astype(int)
        other_b = decode_png(without[key]["f000.photo.png"]).astype(int)
        assert np.abs(other_a - other_b).max() > 1  # the others attend to the anchor


def test_crop_mode_records_the_crop_camera(dataset, weights, tmp_path):
    out = tmp_path / "crop"
    run_generate(GenerateJob(dataset, out, _config(weights, crop=True, crop_size=32)), progress=False)
    name = sorted(p.name for p in (out / "shards").glob("*.tar"))[0]
    for members in _members(out / "shards" / name).values():
        meta = json.loads(members["meta.json"])
        crop = meta["generation"]["photo"]["crop"]
        assert decode_png(members["f000.photo.png"]).shape == (32, 32, 3)
        x0, y0, side, _ = crop["box"]
        K = np.array(meta["camera"]["K"])  # noqa: N806
        K2 = np.array(crop["K"])  # noqa: N806
        s = 32 / side
        # the crop camera sees each 3D joint where the crop transform puts its 2D label
        for frame in meta["frames"]:
            j3 = np.array(frame["joints3d"])
            uv = (K2 @ j3.T).T
            uv = uv[:, :2] / uv[:, 2:]
            expect = (np.array(frame["joints2d"]) - [x0, y0] + 0.5) * s - 0.5
            np.testing.assert_allclose(uv, expect, atol=1e-6)
        assert np.isclose(K2[0, 0], K[0, 0] * s)


def test_export_coco_with_photo_frames(generated, tmp_path):
    from hoigen.exports.coco import export_coco

    export_coco(generated, tmp_path / "rgb", image="rgb", overwrite=True, progress=False)
    export_coco(generated, tmp_path / "photo", image="photo", overwrite=True, progress=False)
    a = json.loads(next((tmp_path / "rgb").rglob("*.json")).read_text())
    b = json.loads(next((tmp_path / "photo").rglob("*.json")).read_text())
    assert a["annotations"] == b["annotations"]  # labels do not depend on the image
    samples = {}
    for path in sorted((generated / "shards").glob("*.tar")):
        samples.update(_members(path))
    written = sorted(p for p in (tmp_path / "photo").rglob("*.png"))
    assert len(written) == len(samples) * FRAMES
    import cv2

    for image in b["images"]:
        key, frame = Path(image["file_name"]).stem.split("_")[:2]  # "s00000000_f000.png"
        pixels = cv2.imread(str(next((tmp_path / "photo").rglob(Path(image["file_name"]).name))))[..., ::-1]
        photo = decode_png(samples[key][f"{frame}.photo.png"])
        np.testing.assert_array_equal(pixels, photo)


def test_bad_inputs_are_clear_errors(dataset, weights, tmp_path, monkeypatch):
    with pytest.raises(GenerateError, match="never modifies its input"):
        GenerateJob(dataset, dataset, _config(weights))
    with pytest.raises(GenerateError, match="manifest.json"):
        run_generate(GenerateJob(tmp_path, tmp_path / "o", _config(weights)), progress=False)
    monkeypatch.delenv("HOIGEN_HOIDIFFUSION_DIR", raising=False)
    with pytest.raises((FileNotFoundError, ValueError), match="--hoidiffusion"):
        run_generate(GenerateJob(dataset, tmp_path / "o2", _config(tmp_path / "nothing")), progress=False)
    with pytest.raises(ValueError, match="--steps"):
        _config(weights, steps=0)
    with pytest.raises(ValueError, match="nothing to generate"):
        GenerateConfig()
    # a damaged input shard is refused, naming it (the manifest's sha256 no longer matches)
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(dataset, copy)
    tar = sorted((copy / "shards").glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    # (the reader's integrity check: the shard, the manifest and the damaged member are named)
    with pytest.raises(GenerateError, match=f"input shard .*{tar.name} does not match .*manifest.json: member "):
        run_generate(GenerateJob(copy, tmp_path / "o3", _config(weights)), progress=False)
    assert not (tmp_path / "o3" / "shards" / tar.name).exists()
    # a model that does not fit is refused before anything loads, with the numbers and the fix
    import hoigen.diffusion.common as common
    from hoigen.diffusion.stage import SampleGenerator

    monkeypatch.setattr(common, "available_memory", lambda device: 1024)
    with pytest.raises(ValueError, match="GiB on cpu but only .* --batch-frames"):
        SampleGenerator(_config(weights))


def _cli(*args):
    return [sys.executable, "-m", "hoigen.cli", *map(str, args)]


def _photo_flags(weights: Path) -> tuple:
    """The CLI flags of ``_config(weights)``."""
    return (
        "--photo",
        "hoidiffusion",
        "--hoidiffusion",
        weights,
        "--steps",
        STEPS,
        "--device",
        "cpu",
        "--cpu-threads",
        1,
    )


def test_cli_generate_resumes_after_sigkill(dataset, weights, generated, tmp_path):
    out = tmp_path / "killed"
    cmd = _cli("generate", dataset, out, *_photo_flags(weights))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    first = out / "shards" / "hoigen-000000.json"
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a stray partial file of the killed run must not survive the rerun
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "shards" / "hoigen-000001.tar.partial").write_bytes(b"junk")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for path in sorted((generated / "shards").glob("*.tar")):
        assert (out / "shards" / path.name).read_bytes() == path.read_bytes()
    assert not list((out / "shards").glob("*.partial"))


def test_cli_synth_with_photo(weights, tmp_path):
    out = tmp_path / "synth-photo"
    size = ("--size", 64, 64, "--frames", 2, "--samples-per-shard", 1)
    cmd = _cli("synth", "--n", 2, *size, "--out", out, *_photo_flags(weights))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    from hoigen.datasets.reader import open_sequences

    seqs = list(open_sequences(out))
    assert len(seqs) == 2
    for seq in seqs:
        assert all("photo" in f and f["photo"].shape == (64, 64, 3) for f in seq["frames"])
        assert seq["meta"]["generation"]["photo"]["model"] == "hoidiffusion"
    assert (out / "render" / "manifest.json").is_file()


def test_nocs_augment_photo_pass_changes_only_hand_and_object_pixels(weights, tmp_path):
    import cv2

    from hoigen.diffusion.stage import SampleGenerator
    from hoigen.exports.nocs_augment import nocs_augment
    from hoigen.exports.nocs_photo import photo_pass

    report = nocs_augment(None, tmp_path / "nocs", num_frames=2, seed=0, grasp_tries=2)
    assert report["hoi_frames"] >= 1
    camera = tmp_path / "nocs" / "CAMERA"
    before = {}
    for frame in report["frames"]:
        for part in ("color", "coord", "depth", "mask", "hand_mask"):
            before[(frame["name"], part)] = (camera / f"{frame['name']}_{part}.png").read_bytes()
    backend = SampleGenerator(_config(weights, crop=True, crop_size=64)).photo
    counts = photo_pass(report, backend, seed=0)
    assert counts["photo_frames"] == report["hoi_frames"]
    for frame in report["frames"]:
        base = camera / frame["name"]
        for part in ("coord", "depth", "mask", "hand_mask"):  # every label file untouched
            assert Path(f"{base}_{part}.png").read_bytes() == before[(frame["name"], part)]
        record = json.loads(Path(f"{base}_hoi.json").read_text())
        assert record["photo"]["model"] == "hoidiffusion" and record["photo"]["crop"]["size"] == 64
        old = cv2.imdecode(np.frombuffer(before[(frame["name"], "color")], np.uint8), cv2.IMREAD_COLOR)
        new = cv2.imread(f"{base}_color.png", cv2.IMREAD_COLOR)
        mask = cv2.imread(f"{base}_mask.png", cv2.IMREAD_UNCHANGED)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        hand = cv2.imread(f"{base}_hand_mask.png", cv2.IMREAD_UNCHANGED)
        hand = (hand[..., 0] if hand.ndim == 3 else hand) > 0
        seg = hand | (mask == record["grasped"]["inst_id"])
        changed = (old != new).any(axis=2)
        assert changed.any() and not (changed & ~seg).any()  # photo pixels only on the hand and the object
    # a second pass keeps frames that already have a photo
    assert photo_pass(report, backend, seed=0)["photo_frames"] == report["hoi_frames"]


def test_unet_receives_the_sum_of_the_three_adapters(dataset, weights):
    """The residuals the UNet gets are skeleton + normal + mask adapter features (weights 1, not 1/3)."""
    from hoigen.diffusion.hoidiffusion.pipeline import PhotoRequest
    from hoigen.diffusion.stage import SampleGenerator, read_samples

    backend = SampleGenerator(_config(weights, steps=1)).photo
    key, members = read_samples(next(iter(sorted((dataset / "shards").glob("*.tar")))))[0]
    meta = json.loads(members["meta.json"])
    request = backend.prepare(PhotoRequest(members, meta, seed=5))
    seen = []

    def grab(module, args, kwargs):
        seen.append([r.clone() for r in kwargs["down_intrablock_additional_residuals"]])

    handle = backend.pipe.unet.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        backend.generate([request])
    finally:
        handle.remove()
    adapters = backend.pipe.adapter.adapters
    with torch.no_grad():
        feats = [a(torch.from_numpy(request.conditions[:, i].copy())) for i, a in enumerate(adapters)]
    for level, got in enumerate(seen[0]):
        expect = feats[0][level] + feats[1][level] + feats[2][level]
        torch.testing.assert_close(got, torch.cat([expect, expect]), atol=1e-5, rtol=1e-5)  # [uncond ; cond]
        mean = expect / 3
        assert (got[: len(expect)] - mean).abs().max() > 1e-4
    assert key.startswith("s")


def test_ray_executor_gives_the_same_bytes(dataset, weights, generated, tmp_path):
    ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    try:
        summary = run_generate(
            GenerateJob(dataset, out, _config(weights)), executor="ray", workers=2, progress=False
        )
    finally:
        ray.shutdown()
    assert summary.shards_made == 2
    for path in sorted((generated / "shards").glob("*.tar")):
        assert (out / "shards" / path.name).read_bytes() == path.read_bytes()


@pytest.mark.gpu
def test_real_size_photo_batch_on_gpu(tmp_path):
    """Real SD-1.4 UNet + three real-size adapters (random weights) at 512², fp16, anchor attention, one batch."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from diffusers import MultiAdapter, T2IAdapter, UNet2DConditionModel

    from hoigen.diffusion.hoidiffusion.attention import set_anchor_attention, set_frame_groups
    from hoigen.diffusion.hoidiffusion.sd_configs import SD14_ADAPTER, SD14_UNET

    unet = UNet2DConditionModel.from_config(SD14_UNET).to("cuda", torch.float16).eval()
    adapter = MultiAdapter([T2IAdapter.from_config(SD14_ADAPTER) for _ in range(3)]).to("cuda", torch.float16)
    procs = set_anchor_attention(unet, True)
    set_frame_groups(procs, [4])
    x = torch.randn(8, 4, 64, 64, device="cuda", dtype=torch.float16)
    ctx = torch.randn(8, 77, 768, device="cuda", dtype=torch.float16)
    cond = [torch.rand(4, 3, 512, 512, device="cuda", dtype=torch.float16) for _ in range(3)]
    with torch.no_grad():
        feats = adapter(cond, [1.0, 1.0, 1.0])
        res = [torch.cat([f, f]) for f in feats]
        out = unet(x, 981, encoder_hidden_states=ctx, down_intrablock_additional_residuals=res).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
