"""``hoigen train hoidiffusion|hvg3d`` and ``hoigen eval`` on tiny real models (random weights, built offline).

Ground truth: one tiny render dataset (2 bottle sequences × 9 frames at 48×32, one per shard), the tiny HOIDiffusion
folder and a tiny CogVideoX-I2V (48×32×9) from the model issues' fixtures. Each trainer must lower its loss on a
fixed batch (fixed noise and timesteps) by a stated margin, change only its trainable parameters (frozen ones
bit-identical), resume to the uninterrupted run's losses exactly, and write weights that ``generate`` loads and
that change its output. Single-threaded torch: the tests are small and the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")
pytest.importorskip("webdataset")
pytest.importorskip("cv2")

from hoigen.config import RunConfig  # noqa: E402
from hoigen.diffusion.training.data import ShardExamples, collate_examples, resolve_training_shards  # noqa: E402
from hoigen.diffusion.training.loop import LoopConfig, read_losses, train  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

FRAMES, WIDTH, HEIGHT = 9, 48, 32
CROP = 64
OVERFIT = 0.85  # the fixed-batch loss after training must be below 85 % of the loss before


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-data") / "run"
    config = RunConfig().replace(
        camera={"preset": f"{WIDTH}x{HEIGHT}"},
        trajectory={"frames": FRAMES},
        grasp={"candidates": 2, "max_attempts": 40},
        objects={"categories": ("bottle",)},
    )
    run_synth(SynthJob(config, out, n=2, samples_per_shard=1), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    from hoigen.diffusion.hoidiffusion.fixtures import write_tiny_hoidiffusion

    return write_tiny_hoidiffusion(tmp_path_factory.mktemp("train-sd") / "sd", seed=0)


@pytest.fixture(scope="module")
def cogvideox(tmp_path_factory) -> Path:
    from hoigen.diffusion.hvg3d.fixtures import write_tiny_cogvideox

    return write_tiny_cogvideox(tmp_path_factory.mktemp("train-cog") / "cog", WIDTH, HEIGHT, FRAMES)


@pytest.fixture(scope="module")
def reg_dir(tmp_path_factory) -> Path:
    import cv2

    folder = tmp_path_factory.mktemp("reg")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(2):
        cv2.imwrite(str(folder / f"scene{i}.png"), rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8))
        lines.append(f"scene{i}.png\ta photo of scenery {i}")
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    return folder


def _loop(out: Path, **kw) -> LoopConfig:
    base = {"steps": 4, "batch_size": 2, "num_workers": 0, "checkpoint_every": 0, "sample_every": 0,
            "tracker": "none", "seed": 0, "shuffle": 0}
    return LoopConfig(out=str(out), **{**base, **kw})


def _hoi_config(dataset, sd, **kw):
    from hoigen.diffusion.training.hoidiffusion import HOIDiffusionTrainConfig

    base = {"resolution": CROP, "crop_margin": 4, "reg_prob": 0.0, "sample_steps": 1, "sample_count": 1}
    return HOIDiffusionTrainConfig(data=str(dataset), sd=str(sd), **{**base, **kw})


def _fixed_loss(task, seed: int = 123) -> float:
    """The task's loss on the first batch of epoch 0 with fixed noise / timesteps."""
    examples = [e for e in ShardExamples(task.shards, task.builder, 0, shuffle=0) if not e.get("_empty")]
    batch = collate_examples(examples[:2])
    with torch.no_grad():
        return float(task.loss(task.trainable_module(), batch, torch.Generator().manual_seed(seed))[0])


def _snapshot(*modules) -> dict:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


# ---------------------------------------------------------------------------------------------------------------
# data


def test_shard_examples_skip_and_count_bad_samples(dataset):
    shards = resolve_training_shards(dataset)
    assert len(shards) == 2

    def build(record):
        if record.key == "s00000000":
            raise ValueError("a broken sample")
        return [{"key": record.key, "target": record.targets[0], "kind": record.target_kind}]

    examples = list(ShardExamples(shards, build, seed=0, shuffle=0))
    batch = collate_examples(examples)
    assert batch["key"] == ["s00000001"] and batch["kind"] == ["rgb"]
    assert batch["_skipped"] == 1 and batch["size"] == 1
    assert tuple(batch["target"].shape) == (1, HEIGHT, WIDTH, 3)
    # shard order is a function of (seed, epoch) only
    assert ShardExamples(shards, build, 3, 1).shard_order() == ShardExamples(shards, build, 3, 1).shard_order()


# ---------------------------------------------------------------------------------------------------------------
# HOIDiffusion


def test_hoidiffusion_overfits_trains_only_its_parameters_and_loads_in_generate(dataset, sd, tmp_path):
    from hoigen.diffusion.hoidiffusion.pipeline import HOIDiffusionPhotoBackend, PhotoOptions, PhotoRequest
    from hoigen.diffusion.hoidiffusion.weights import resolve_weights
    from hoigen.diffusion.stage import read_samples
    from hoigen.diffusion.training.hoidiffusion import HOIDiffusionTask

    class Probe(HOIDiffusionTask):
        def setup(self, accelerator, loop, weight_dtype):
            super().setup(accelerator, loop, weight_dtype)
            self.before = _fixed_loss(self)
            self.initial = _snapshot(self.model, self.vae, self.text_encoder)

    task = Probe(_hoi_config(dataset, sd, lr=1e-3))
    result = train(task, _loop(tmp_path / "run", steps=8))
    after = _fixed_loss(task)
    assert after < OVERFIT * task.before, (task.before, after, result.losses)

    trainable = set(task.trainable_names)
    assert any(n.startswith("adapters.") for n in trainable) and any(n.startswith("unet.up_blocks") for n in trainable)
    assert not any(n.startswith(("unet.down_blocks", "unet.mid_block", "unet.conv_in")) for n in trainable)
    final = _snapshot(task.model, task.vae, task.text_encoder)
    changed = {k for k in final if not torch.equal(final[k], task.initial[k])}
    frozen = {k for k in final if not (k.startswith("0.") and k[2:] in trainable)}
    assert not (changed & frozen), sorted(changed & frozen)[:5]  # frozen: bit-identical
    assert len(changed) > 0.5 * len(trainable)

    # the run folder
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step-00000008").is_dir()
    assert len(read_losses(run)) == 8 and (run / "samples" / "step-00000008.png").is_file()

    # RUN/final loads in the photo stage and changes its output versus the untrained model
    shard = resolve_training_shards(dataset)[0]
    key, members = read_samples(Path(shard))[0]
    meta = json.loads(members["meta.json"])
    options = PhotoOptions(steps=2, crop=True, crop_size=CROP, crop_margin=4)

    def photo(weights):
        backend = HOIDiffusionPhotoBackend(weights, options, "cpu")
        request = backend.prepare(PhotoRequest(members, meta, seed=5))
        return backend.generate([request])[0][0]["f000.photo.png"]

    trained = photo(resolve_weights(run / "final"))
    untrained = photo(resolve_weights(run / "init", sd))
    assert trained != untrained
    record = json.loads((run / "final" / "hoigen_weights.json").read_text())
    assert record["source"] == "hoigen train hoidiffusion"


def test_hoidiffusion_resume_repeats_the_uninterrupted_losses(dataset, sd, reg_dir, tmp_path):
    from click.testing import CliRunner

    from hoigen.cli import main

    args = ["train", "hoidiffusion", "--data", str(dataset), "--sd", str(sd), "--resolution", str(CROP),
            "--crop-margin", "4", "--reg-prob", "0.5", "--reg-images", str(reg_dir), "--batch-size", "2",
            "--grad-accum", "2", "--workers", "0", "--checkpoint-every", "2", "--sample-every", "0",
            "--sample-count", "1", "--sample-steps", "1", "--log-every", "1", "--tracker", "none", "--lr", "1e-4"]
    runner = CliRunner()
    full = runner.invoke(main, [*args, "--out", str(tmp_path / "a"), "--steps", "4"], catch_exceptions=False)
    assert full.exit_code == 0, full.output
    part = runner.invoke(main, [*args, "--out", str(tmp_path / "b"), "--steps", "2"], catch_exceptions=False)
    assert part.exit_code == 0, part.output
    again = runner.invoke(main, [*args, "--out", str(tmp_path / "b"), "--steps", "2"])
    assert again.exit_code != 0 and "--resume" in again.output  # an existing run is never overwritten
    resumed = runner.invoke(main, [*args, "--out", str(tmp_path / "b"), "--steps", "4", "--resume"],
                            catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    a, b = read_losses(tmp_path / "a"), read_losses(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["reg"] for r in a] == [r["reg"] for r in b]
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    changed = runner.invoke(main, [*args, "--out", str(tmp_path / "b"), "--steps", "5", "--resume", "--sd-lock"])
    assert changed.exit_code != 0 and "sd_lock" in changed.output


def test_regularisation_batch_has_zero_conditions(dataset, sd, reg_dir, tmp_path):
    from accelerate import Accelerator

    from hoigen.diffusion.training.hoidiffusion import HOIDiffusionTask

    task = HOIDiffusionTask(_hoi_config(dataset, sd, reg_prob=1.0, reg_images=str(reg_dir), sample_count=0))
    task.setup(Accelerator(cpu=True), _loop(tmp_path / "r"), torch.float32)
    examples = [e for e in task.dataset(0) if not e.get("_empty")]
    batch = collate_examples(examples[:2])
    assert batch["conditions"].abs().sum() > 0
    seen = []
    handles = [a.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone())) for a in task.model.adapters]
    try:
        reg = task.maybe_regularise(batch, torch.Generator().manual_seed(0))
        task.loss(task.model, batch, torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()
    assert reg["reg"] and torch.count_nonzero(reg["conditions"]) == 0
    assert set(reg["prompt"]) <= {"a photo of scenery 0", "a photo of scenery 1"}
    assert len(seen) == 3 and all(torch.count_nonzero(x) == 0 for x in seen)  # skeleton, normal, mask all zero
    stored = {tuple(im.reshape(-1)[:16].tolist()) for im in task.reg_images}
    assert all(tuple(t.reshape(-1)[:16].tolist()) in stored for t in reg["target"].numpy())


# ---------------------------------------------------------------------------------------------------------------
# HVG-3D


def _hvg_config(dataset, cogvideox, **kw):
    from hoigen.diffusion.training.hvg3d import HVG3DTrainConfig

    base = {"num_blocks": 1, "num_points": 64, "num_centres": 16, "group_size": 8, "point_encoder_dim": 32,
            "point_token_dim": 24, "warmup": 1, "sample_steps": 1}
    return HVG3DTrainConfig(data=str(dataset), cogvideox=str(cogvideox), **{**base, **kw})


def test_latent_mask_and_weighted_loss_equal_explicit_computations():
    from diffusers import CogVideoXDPMScheduler

    from hoigen.diffusion.hvg3d.fixtures import COGVIDEOX_5B_SCHEDULER
    from hoigen.diffusion.training.hvg3d import latent_mask, masked_v_loss

    rng = np.random.default_rng(1)
    seg = rng.random((9, 16, 24)) < 0.3
    m = latent_mask(seg)
    assert m.shape == (3, 2, 3)
    for j in range(3):
        frames = [0] if j == 0 else list(range(4 * (j - 1) + 1, 4 * j + 1))
        for y in range(2):
            for x in range(3):
                cell = seg[frames, 8 * y : 8 * y + 8, 8 * x : 8 * x + 8]
                assert m[j, y, x] == pytest.approx(cell.mean(), abs=1e-6)
    assert latent_mask(np.zeros((49, 480, 720), bool)).shape == (13, 60, 90)

    scheduler = CogVideoXDPMScheduler(**COGVIDEOX_5B_SCHEDULER)
    g = torch.Generator().manual_seed(0)
    z, eps, pred = (torch.randn(2, 3, 4, 2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([10, 700])
    mask = torch.from_numpy(np.stack([m, m[::-1]]).copy()).double()
    loss = masked_v_loss(pred, z, eps, t, scheduler, mask)
    # DaS: x0 from v, weight 1 / (1 - alpha_bar); HVG-3D: times (1 + M), element-wise
    abar = scheduler.alphas_cumprod[t].double()[:, None, None, None, None]
    x_t = abar.sqrt() * z + (1 - abar).sqrt() * eps
    x0_pred = abar.sqrt() * x_t - (1 - abar).sqrt() * pred
    explicit = ((x0_pred - z) ** 2 / (1 - abar) * (1 + mask[:, :, None])).mean()
    assert float(loss) == pytest.approx(float(explicit), rel=1e-5)


def test_hvg3d_overfits_trains_only_the_controlnet_and_loads_in_generate(dataset, cogvideox, tmp_path):
    from hoigen.diffusion.hvg3d.pipeline import HVG3DVideoBackend
    from hoigen.diffusion.stage import read_samples
    from hoigen.diffusion.training.hvg3d import HVG3DTask

    class Probe(HVG3DTask):
        def setup(self, accelerator, loop, weight_dtype):
            super().setup(accelerator, loop, weight_dtype)
            self.before = _fixed_loss(self)
            self.frozen0 = _snapshot(self.transformer, self.vae, self.text_encoder)
            self.control0 = _snapshot(self.controlnet)

    task = Probe(_hvg_config(dataset, cogvideox, lr=1e-2, drop_prob=0.0, warmup=0))
    result = train(task, _loop(tmp_path / "run", steps=10, batch_size=1, sample_every=10))
    after = _fixed_loss(task)
    assert after < OVERFIT * task.before, (task.before, after, result.losses)
    frozen = _snapshot(task.transformer, task.vae, task.text_encoder)
    assert all(torch.equal(frozen[k], task.frozen0[k]) for k in frozen)  # base bit-identical
    control = _snapshot(task.controlnet)
    changed = [k for k in control if not torch.equal(control[k], task.control0[k])]
    assert any("out_linears" in k for k in changed) and any("point_" in k for k in changed)
    assert (tmp_path / "run" / "samples" / "step-00000010.npz").is_file()

    shard = resolve_training_shards(dataset)[0]
    _, members = read_samples(Path(shard))[0]
    meta = json.loads(members["meta.json"])

    def video(hvg3d):
        backend = HVG3DVideoBackend(cogvideox, hvg3d, device="cpu", dtype=torch.float32, steps=2)
        return backend.generate(members, meta, seed=3)[0]["video.mp4"]

    assert video(tmp_path / "run" / "final") != video(None)


def test_hvg3d_cached_latents_match_the_encoders(dataset, cogvideox, tmp_path):
    from safetensors.torch import load_file

    from hoigen.diffusion.training.hvg3d import HVG3DTask

    task = HVG3DTask(_hvg_config(dataset, cogvideox, cache_latents=True))
    result = train(task, _loop(tmp_path / "run", steps=2, batch_size=1))
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    files = sorted((tmp_path / "run" / "cache").glob("*.safetensors"))
    assert [f.stem for f in files] == ["s00000000", "s00000001"]
    example = next(e for e in ShardExamples(task.shards, task.builder, 0, shuffle=0) if not e.get("_empty"))
    batch = collate_examples([example])
    cached = load_file(str(tmp_path / "run" / "cache" / f"{example['key']}.safetensors"))
    mean, std = task._vae_dist(batch["video"])
    assert torch.allclose(cached["video_mean"], mean[0], atol=1e-6)
    assert torch.allclose(cached["condition"], task.condition_latents(batch["tracking"])[0], atol=1e-6)
    assert torch.allclose(cached["text"], task.encode_prompts([example["prompt"]])[0], atol=1e-6)
    assert torch.equal(cached["mask"], batch["mask"][0])


# ---------------------------------------------------------------------------------------------------------------
# distributed, eval


def test_accelerate_launch_two_cpu_processes(dataset, sd, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # on a machine without GPUs, --multi_gpu starts torchrun and the loop's Accelerator(cpu=True) uses gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "hoigen.cli", "train", "hoidiffusion", "--data", str(dataset), "--sd", str(sd), "--out", str(out),
           "--steps", "2", "--batch-size", "2", "--workers", "0", "--resolution", str(CROP), "--crop-margin", "4",
           "--reg-prob", "0", "--sample-every", "0", "--sample-count", "0", "--checkpoint-every", "0",
           "--log-every", "1", "--tracker", "none"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_losses(out)
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["samples"] == 4 for r in records)  # two examples per process and step
    assert (out / "final" / "adapters" / "mask").is_dir()


def test_eval_metrics_and_eval_command(tmp_path):
    from click.testing import CliRunner

    from hoigen.cli import main
    from hoigen.diffusion.training.eval import colour_mask_iou, psnr, ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-10, 11, a.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    mse = ((a.astype(float) - b) ** 2).mean()
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    assert psnr(a, b, mask) == pytest.approx(10 * np.log10(255**2 / ((a.astype(float) - b)[mask] ** 2).mean()))
    assert 0 < ssim(a, b) < 1
    painted = np.zeros((32, 32, 3), np.uint8)
    painted[mask] = (200, 40, 40)
    painted[~mask] = (30, 90, 200)
    painted = np.clip(painted + rng.integers(0, 20, painted.shape), 0, 255).astype(np.uint8)
    assert colour_mask_iou(painted, mask) > 0.95
    assert colour_mask_iou(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), mask) < 0.6

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text("model: hoidiffusion\n")
    hoimask = np.where(mask[None, ..., None], 128, 0).astype(np.uint8).repeat(3, axis=3)
    np.savez(run / "samples" / "step-00000002.npz", generated=painted[None], target=painted[None], hoimask=hoimask,
             keys=np.array(["s0/f000"]))
    result = CliRunner().invoke(main, ["eval", "photo", str(run), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["frames"] == 1 and metrics["psnr"] == float("inf") and metrics["mask_iou"] > 0.95
    bad = CliRunner().invoke(main, ["eval", "video", str(run)])
    assert bad.exit_code != 0 and "photo" in bad.output


def test_eval_on_shards_without_generated_frames_says_what_to_run(dataset):
    from hoigen.diffusion.training.eval import evaluate

    with pytest.raises(ValueError, match="no photo frames"):
        evaluate(dataset, "photo")
    with pytest.raises(FileNotFoundError):
        evaluate(dataset.parent / "missing", "video")
