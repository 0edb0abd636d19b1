"""``hoigen generate --video hvg3d`` end to end with a tiny CogVideoX-I2V + tiny HVG-3D ControlNet (CPU, offline).

Ground truth: a tiny render dataset (2 shards × 1 sample × 9 frames at 48×32, approach + manipulation) made by
synth, and tiny random-initialised model folders written by ``hvg3d.fixtures``. The stage must add ``video.mp4``
(decodable, T frames, frame k aligned with trajectory frame k) and ``fNNN.video.png`` and ``meta.generation.video``
while every input member stays byte-identical; a CLI run killed by SIGKILL and rerun gives the bytes of the
in-process run (so generation is deterministic for a seed across processes); the reader and the preview decode the
video; the backend builds the conditions each branch switch asks for and refuses bad samples and folders clearly.
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
pytest.importorskip("av")

from hoigen.config import RunConfig  # noqa: E402
from hoigen.diffusion.common import stage_seed  # noqa: E402
from hoigen.diffusion.hvg3d.fixtures import write_tiny_cogvideox, write_tiny_hvg3d  # noqa: E402
from hoigen.diffusion.hvg3d.pipeline import HVG3DVideoBackend  # noqa: E402
from hoigen.diffusion.stage import GenerateConfig, GenerateJob, run_generate  # noqa: E402
from hoigen.render.png import decode_png  # noqa: E402
from hoigen.render.video import decode_mp4  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

WIDTH, HEIGHT, APPROACH, MANIPULATION = 48, 32, 5, 4
FRAMES = APPROACH + MANIPULATION
STEPS = 2


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-cogvideox")
    cogvideox = write_tiny_cogvideox(root / "cogvideox", WIDTH, HEIGHT, FRAMES, num_layers=2, seed=0)
    return cogvideox, write_tiny_hvg3d(root / "hvg3d", cogvideox, num_blocks=1, seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video-src") / "run"
    config = RunConfig().replace(
        camera={"preset": f"{WIDTH}x{HEIGHT}"},
        trajectory={"frames": APPROACH, "manipulation_frames": MANIPULATION},
        objects={"categories": ("bottle", "can")},  # quick to grasp
    )
    run_synth(SynthJob(config, out, n=2, samples_per_shard=1), workers=1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["samples"] == 2
    return out


def _config(models, **options) -> GenerateConfig:
    cogvideox, hvg3d = models
    video_options = {
        "steps": STEPS,
        "guidance": 6.0,
        "first_frame": None,
        "video_frames": True,
        "no_points": False,
        "no_tracking": False,
        "offload": False,
        **options,
    }
    return GenerateConfig(
        video="hvg3d", cogvideox=str(cogvideox), hvg3d=str(hvg3d), video_options=video_options, device="cpu"
    )


def _members(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {suffix: bytes}} of a shard, read as the generate stage reads it."""
    from hoigen.diffusion.stage import read_samples

    return dict(read_samples(path))


@pytest.fixture(scope="module")
def generated(dataset, models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video-out") / "video"
    summary = run_generate(GenerateJob(dataset, out, _config(models)), progress=False)
    assert summary.shards_made == 2
    return out


def test_generate_adds_a_video_and_keeps_every_member(dataset, generated, models):
    manifest = json.loads((dataset / "manifest.json").read_text())
    run_seed = manifest["seed"]
    for path in sorted((dataset / "shards").glob("*.tar")):
        before = _members(path)
        after = _members(generated / "shards" / path.name)
        for key, members in before.items():
            added = set(after[key]) - set(members)
            assert added == {"video.mp4"} | {f"f{t:03d}.video.png" for t in range(FRAMES)}
            for name, data in members.items():
                if name != "meta.json":
                    assert after[key][name] == data, name
            meta_in, meta_out = json.loads(members["meta.json"]), json.loads(after[key]["meta.json"])
            generation = meta_out.pop("generation")["video"]
            assert meta_out == meta_in  # labels untouched
            video = decode_mp4(after[key]["video.mp4"])
            assert video.shape == (FRAMES, HEIGHT, WIDTH, 3) and video.dtype == np.uint8
            pngs = np.stack([decode_png(after[key][f"f{t:03d}.video.png"]) for t in range(FRAMES)])
            # frame k of the mp4 is frame k of the generated sequence (lossy codec: close, and closer to its own
            # frame than to any other frame)
            error = np.abs(video.astype(float) - pngs.astype(float)).mean(axis=(1, 2, 3))
            assert error.max() < 25.0  # random-weight videos are noise, hard for H.264
            for t in range(FRAMES):
                others = [np.abs(video[t].astype(float) - pngs[s]).mean() for s in range(FRAMES) if s != t]
                assert error[t] < min(others), t
            assert generation["seed"] == stage_seed(run_seed, meta_in["index"], "video")
            assert generation["steps"] == STEPS and generation["guidance"] == 6.0
            assert generation["prompt"] == f"A hand is grasping a {meta_in['object']['category']}"
            assert generation["scheduler"] == {
                "class": "CogVideoXDPMScheduler",
                "timestep_spacing": "trailing",
            }
            assert generation["controlnet"] == {
                "num_blocks": 1,
                "branches": {"tracking": True, "points": True},
            }
            assert generation["first_frame"] == "f000.rgb.png" and generation["dtype"] == "float32"
            cogvideox, hvg3d = models
            assert generation["files"] == HVG3DVideoBackend.model_files(cogvideox, hvg3d)
            assert "hvg3d/hvg3d.safetensors" in generation["files"]


def test_the_two_samples_get_different_seeds_and_videos(generated):
    videos, seeds = [], []
    for path in sorted((generated / "shards").glob("*.tar")):
        for members in _members(path).values():
            videos.append(decode_mp4(members["video.mp4"]))
            seeds.append(json.loads(members["meta.json"])["generation"]["video"]["seed"])
    assert len(set(seeds)) == 2 and not np.array_equal(videos[0], videos[1])


def test_reader_and_preview_decode_the_video(generated, tmp_path):
    from hoigen.datasets.preview import preview
    from hoigen.datasets.reader import open_sequences

    for seq in open_sequences(generated):
        video = decode_mp4(seq["video"])
        for t, frame in enumerate(seq["frames"]):
            # the lossless fNNN.video.png wins over the mp4; both belong to frame t
            assert frame["video"].shape == (HEIGHT, WIDTH, 3)
            assert np.abs(frame["video"].astype(float) - video[t]).mean() < 25.0
    written = preview(generated, tmp_path / "preview", max_samples=1)
    side = [p for p in written if p.name.endswith(".side_by_side.gif")]
    assert len(side) == 1
    from PIL import Image

    with Image.open(side[0]) as gif:
        assert gif.n_frames == FRAMES
        assert gif.size[0] > 3 * WIDTH  # render | video | tracking


def test_backend_conditions_follow_the_branch_switches(dataset, models):
    cogvideox, hvg3d = models
    shard = sorted((dataset / "shards").glob("*.tar"))[0]
    key, members = next(iter(_members(shard).items()))
    meta = json.loads(members["meta.json"])
    seen = {}
    for switches in ({}, {"no_points": True}, {"no_tracking": True}):
        backend = HVG3DVideoBackend(cogvideox, hvg3d, device="cpu", dtype=torch.float32, steps=1, **switches)
        condition = backend.condition(members, meta)
        seen[tuple(switches)] = condition
        assert (condition.tracking_latents is None) == ("no_tracking" in switches)
        assert (condition.points is None) == ("no_points" in switches)
    full = seen[()]
    assert full.tracking_latents.shape == (1, 3, 8, HEIGHT // 8, WIDTH // 8)
    assert full.points.shape == (1, FRAMES, 64, 3)
    torch.testing.assert_close(full.K, torch.tensor(meta["camera"]["K"], dtype=torch.float32))
    # the tracking latents are the sample's own tracking video: a black one gives other latents, same points
    from hoigen.render.png import encode_png

    black_png = encode_png(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    black = {**members, **{f"f{t:03d}.tracking.png": black_png for t in range(FRAMES)}}
    backend = HVG3DVideoBackend(cogvideox, hvg3d, device="cpu", dtype=torch.float32, steps=1)
    condition = backend.condition(black, meta)
    assert (condition.tracking_latents - full.tracking_latents).abs().max() > 1e-3
    assert torch.equal(condition.points, full.points)


def test_bad_samples_and_folders_are_clear_errors(models, tmp_path, monkeypatch):
    cogvideox, hvg3d = models
    backend = HVG3DVideoBackend(cogvideox, hvg3d, device="cpu", dtype=torch.float32, steps=1)
    meta = {"index": 3, "frames": [{}] * 8, "camera": {"width": 64, "height": 64}}
    with pytest.raises(ValueError) as error:
        backend.check_sample(meta)
    message = str(error.value)
    assert "takes 9 frames of 48x32" in message and "8 frames of 64x64" in message
    assert "--frames A --manipulation B (A + B = 9) --size 48 32" in message
    monkeypatch.delenv("HOIGEN_COGVIDEOX_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="--cogvideox"):
        HVG3DVideoBackend(None, hvg3d, device="cpu", dtype=torch.float32)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"lacks \['transformer'"):
        HVG3DVideoBackend(tmp_path / "half", hvg3d, device="cpu", dtype=torch.float32)
    with pytest.raises(FileNotFoundError, match="--hvg3d"):
        HVG3DVideoBackend(cogvideox, tmp_path / "absent", device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="--no-points together with --no-tracking"):
        HVG3DVideoBackend(
            cogvideox, hvg3d, device="cpu", dtype=torch.float32, no_points=True, no_tracking=True
        )
    shallow = write_tiny_cogvideox(tmp_path / "shallow", WIDTH, HEIGHT, FRAMES, num_layers=1)
    deep = write_tiny_hvg3d(tmp_path / "k2", cogvideox, num_blocks=2)
    with pytest.raises(
        ValueError, match="width 32 with >= 2 blocks; the transformer has width 32 and 1 blocks"
    ):
        HVG3DVideoBackend(shallow, deep, device="cpu", dtype=torch.float32)


def _cli(*args):
    return [sys.executable, "-m", "hoigen.cli", *map(str, args)]


@pytest.mark.slow
def test_cli_generate_resumes_after_sigkill_with_the_same_bytes(dataset, models, generated, tmp_path):
    cogvideox, hvg3d = models
    out = tmp_path / "killed"
    cmd = _cli("generate", dataset, out, "--video", "hvg3d", "--cogvideox", cogvideox, "--hvg3d", hvg3d,
               "--video-steps", STEPS, "--video-frames", "--device", "cpu")  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    first = out / "shards" / "hoigen-000000.json"
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for path in sorted((generated / "shards").glob("*.tar")):
        assert (out / "shards" / path.name).read_bytes() == path.read_bytes(), path.name
