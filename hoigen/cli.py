"""The ``hoigen`` command line (click). Every option can also come from ``--config FILE.yaml``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
import numpy as np

from hoigen.config import RunConfig

logger = logging.getLogger("hoigen")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _grasp_options(command):
    """``--grasp`` and ``--grabnet``, shared by the commands that sample grasps."""
    command = click.option(
        "--grabnet",
        type=click.Path(path_type=Path),
        default=None,
        help="GrabNet folder (coarsenet.pt, refinenet.pt, bps.npz) [$HOIGEN_GRABNET_DIR]",
    )(command)
    return click.option(
        "--grasp",
        "grasp_method",
        type=click.Choice(["contact", "contact-v1", "grabnet"]),
        default=None,
        help="grasp method (contact-v1: the earlier sampler, kept as a baseline) [contact]",
    )(command)


PHOTO_CHOICES = ("none", "hoidiffusion")
VIDEO_CHOICES = ("none", "hvg3d")


def _generation_options(command):
    """The options of the generative stage, shared by ``generate`` and ``synth``."""
    options = [
        click.option(
            "--hoidiffusion",
            type=click.Path(path_type=Path),
            default=None,
            help="HOIDiffusion weights: a folder made by `hoigen convert hoidiffusion`, or the released "
            "model_condition.pth + model_sd_finetuned.ckpt [$HOIGEN_HOIDIFFUSION_DIR]",
        ),
        click.option(
            "--sd", type=click.Path(path_type=Path), default=None, help="a local diffusers SD-1.x folder [$HOIGEN_SD_DIR]"
        ),
        click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="photo: DDIM steps"),
        click.option("--guidance", type=float, default=7.5, show_default=True, help="photo: guidance scale"),
        click.option("--no-anchor", is_flag=True, help="photo: no anchor-frame attention (frames independent)"),
        click.option("--normals", type=click.Choice(["exact", "midas"]), default="exact", show_default=True),
        click.option("--midas", type=click.Path(path_type=Path), default=None, help="local DPT depth model folder"),
        click.option("--crop", is_flag=True, help="photo: generate the hand-object box ± 50 px, square"),
        click.option("--crop-size", type=click.IntRange(min=8), default=512, show_default=True),
        click.option("--prompt-style", multiple=True, help="photo: appearance phrase (repeat; one drawn per sample)"),
        click.option("--background", multiple=True, help="photo: background phrase (repeat; one drawn per sample)"),
        click.option("--batch-frames", type=click.IntRange(min=1), default=16, show_default=True),
        click.option("--cogvideox", type=click.Path(path_type=Path), default=None, help="[$HOIGEN_COGVIDEOX_DIR]"),
        click.option("--hvg3d", type=click.Path(path_type=Path), default=None, help="[$HOIGEN_HVG3D_DIR]"),
        click.option("--video-steps", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--video-guidance", type=float, default=6.0, show_default=True),
        click.option("--first-frame", type=click.Path(dir_okay=False, path_type=Path), default=None),
        click.option("--video-frames", is_flag=True, help="video: also write fNNN.video.png"),
        click.option("--no-points", is_flag=True, help="video: switch the point branch off"),
        click.option("--no-tracking", is_flag=True, help="video: switch the tracking branch off"),
        click.option("--offload", is_flag=True, help="video: CPU offload of the model parts"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N]"),
        click.option(
            "--cpu-threads",
            type=click.IntRange(min=1),
            default=None,
            help="CPU: torch threads per worker (CPU pixels depend on it; fix it for identical images)",
        ),
        click.option("--dtype", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _generate_config(photo, video, kw):
    from hoigen.diffusion.stage import GenerateConfig

    photo_options = {
        "steps": kw["steps"],
        "guidance": kw["guidance"],
        "anchor": not kw["no_anchor"],
        "normals": kw["normals"],
        "midas": str(kw["midas"]) if kw["midas"] else None,
        "crop": kw["crop"],
        "crop_size": kw["crop_size"],
        "prompt_styles": list(kw["prompt_style"]),
        "backgrounds": list(kw["background"]),
        "batch_frames": kw["batch_frames"],
    }
    video_options = {
        "steps": kw["video_steps"],
        "guidance": kw["video_guidance"],
        "first_frame": str(kw["first_frame"]) if kw["first_frame"] else None,
        "video_frames": kw["video_frames"],
        "no_points": kw["no_points"],
        "no_tracking": kw["no_tracking"],
        "offload": kw["offload"],
    }
    return GenerateConfig(
        photo=photo,
        video=video,
        hoidiffusion=str(kw["hoidiffusion"]) if kw["hoidiffusion"] else None,
        sd=str(kw["sd"]) if kw["sd"] else None,
        photo_options=photo_options,
        cogvideox=str(kw["cogvideox"]) if kw["cogvideox"] else None,
        hvg3d=str(kw["hvg3d"]) if kw["hvg3d"] else None,
        video_options=video_options,
        device=kw["device"],
        dtype=kw["dtype"],
        cpu_threads=kw["cpu_threads"],
    )


@click.group()
@click.version_option(package_name="hoigen")
def main():
    """hoigen: synthetic hand-object interaction data with exact 3D labels."""


@main.command()
@click.option("--objects", "objects_", default=None, help="builtin:nocs or a folder of meshes [builtin:nocs]")
@click.option("--n", "n", default=1, show_default=True, type=click.IntRange(min=1), help="grasps per object")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder")
@click.option(
    "--hand",
    type=click.Choice(["builtin", "builtin-v1", "builtin-v2", "mano"]),
    default=None,
    help="hand model; builtin = builtin-v2 [builtin]",
)
@click.option("--mano", type=click.Path(path_type=Path), default=None, help="MANO_RIGHT.pkl or its folder")
@click.option(
    "--units", type=click.Choice(["auto", "m", "cm", "mm"]), default=None, help="units of folder meshes"
)
@click.option("--categories", default=None, help="comma-separated built-in categories (builtin:nocs only)")
@_grasp_options
@click.option("--seed", type=click.IntRange(min=0), default=None, help="run seed [0]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--physics", is_flag=True, help="MuJoCo hold test of every grasp, with its two controls (hoigen[physics])")
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug")
def grasp(
    objects_, n, out, hand, mano, units, categories, grasp_method, grabnet, seed, config_file, physics, verbose
):
    """Sample N grasps per object; write OUT/grasps.json, grasps.npz, the object meshes (OUT/objects/) and the posed
    hands (OUT/hands/)."""
    _setup_logging(verbose)
    from tqdm import tqdm

    from hoigen.grasping import GraspError
    from hoigen.grasping.grabnet_data import grasp_sampler_factory
    from hoigen.hands import load_hand
    from hoigen.objects import ObjectError, open_source

    try:
        cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
        config = _run_config(
            config_file,
            objects={"source": objects_, "units": units, "categories": cats},
            hand={"model": hand, "mano": str(mano) if mano else None},
            grasp={"method": grasp_method, "grabnet": str(grabnet) if grabnet else None},
            seed=seed,
        )
        source = open_source(config.objects.source, config.objects.units, config.objects.categories)
        hand_model = load_hand(config.hand.model, config.hand.mano or None)
        make_sampler = grasp_sampler_factory(config.grasp, hand_model)
        if physics:
            from hoigen.grasping.physics import HoldTest, _import_mujoco

            _import_mujoco()
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError, ObjectError) as exc:
        raise click.ClickException(str(exc)) from exc

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".hoigen-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise click.ClickException(f"cannot write to the output folder {out}: {exc}") from exc

    import trimesh

    records, arrays, skipped, objects_meta = [], [], [], []
    physics_controls: dict = {}
    candidates = passed = 0
    start = time.perf_counter()
    with tqdm(total=len(source) * n, unit="grasp", desc="grasping", dynamic_ncols=True) as bar:
        for k in range(len(source)):
            try:
                asset = source.object_for(k, np.random.default_rng([config.seed, k, 0]))
            except ObjectError as exc:
                logger.warning("skipping object #%d: %s", k, exc)
                skipped.append({"object": k, "reason": str(exc)})
                bar.update(n)
                continue
            meta = asset.metadata()
            (out / "objects").mkdir(exist_ok=True)
            mesh_path = out / "objects" / f"{asset.id}.ply"
            asset.mesh.export(mesh_path)
            meta["mesh"] = str(mesh_path.relative_to(out))
            objects_meta.append(meta)
            sampler = make_sampler(asset)
            hold = HoldTest(asset.mesh, friction=config.grasp.friction) if physics else None
            if hold is not None and not physics_controls:
                physics_controls = {"object": asset.id, "no_hand": hold.control_free_fall()}
                physics_controls["boxed_in"] = hold.control_boxed()
            for j in range(n):
                try:
                    g = sampler.sample(np.random.default_rng([config.seed, k, 1 + j]))
                except GraspError as exc:
                    logger.warning("skipping grasp %d of %s (seed %d): %s", j, asset.id, config.seed, exc)
                    skipped.append({"object": asset.id, "grasp": j, "reason": str(exc)})
                    candidates += exc.candidates
                    bar.update(1)
                    continue
                candidates += g.attempts
                passed += g.passed
                record = g.to_dict()
                record["object_index"] = len(objects_meta) - 1
                record["seed"] = [config.seed, k, 1 + j]
                (out / "hands").mkdir(exist_ok=True)
                hand_path = out / "hands" / f"{len(records):05d}.ply"
                trimesh.Trimesh(hand_model.forward(g.params).vertices[0], hand_model.faces, process=False).export(
                    hand_path
                )
                record["hand_mesh"] = str(hand_path.relative_to(out))
                if hold is not None:
                    record["physics"] = hold.run(hand_model, g.params)
                records.append(record)
                arrays.append(g.params)
                bar.update(1)
                bar.set_postfix(accepted=len(records))
    elapsed = time.perf_counter() - start

    result = {
        "hoigen_version": _version(),
        "config": config.to_dict(),
        "hand": hand_model.metadata(),
        "objects": objects_meta,
        "grasps": records,
        "skipped": skipped,
    }
    if physics:
        result["physics_controls"] = physics_controls
    (out / "grasps.json").write_text(json.dumps(result, indent=1))
    if arrays:
        from hoigen.hands.model import HandParams

        stacked = HandParams.stack(arrays)
        np.savez(
            out / "grasps.npz",
            global_orient=stacked.global_orient,
            hand_pose=stacked.hand_pose,
            transl=stacked.transl,
            betas=stacked.betas,
            object_index=np.array([r["object_index"] for r in records]),
        )
    click.echo(
        f"{len(records)} grasps of {len(objects_meta)} objects in {elapsed:.1f} s "
        f"({len(records) / max(elapsed, 1e-9):.2f} grasps/s; {passed} of {candidates} candidates passed the gate); "
        f"{len(skipped)} skipped; wrote {out / 'grasps.json'}"
    )
    if physics and records:
        held = sum(r["physics"]["held"] for r in records)
        click.echo(f"physics: {held} of {len(records)} grasps held in >= 4 of 6 gravity directions")
    if not records:
        raise click.ClickException("no grasp was accepted; see the warnings above")


def _parse_size(size):
    if size is None:
        return None
    width, height = size
    if width <= 0 or height <= 0:
        raise click.BadParameter(f"--size W H must be positive pixels, got {width} {height}")
    from hoigen.geometry.camera import size_preset

    return size_preset(width, height)


def _run_config(config_file, **sections) -> RunConfig:
    """The config file (or defaults) with the command-line values that were given laid over it."""
    from hoigen.config import RunConfig

    config = RunConfig.from_yaml(config_file) if config_file else RunConfig()
    overrides = {}
    for section, values in sections.items():
        if isinstance(values, dict):
            values = {k: v for k, v in values.items() if v is not None}
            if values:
                overrides[section] = values
        elif values is not None:
            overrides[section] = values
    return config.replace(**overrides)


@main.command()
@click.option("--objects", "objects_", default=None, help="builtin:nocs or a folder of meshes [builtin:nocs]")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=None,
    help="number of samples (grasp sequences); required except for dexycb:/ho3d: (default: every clip)",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="approach frames T per sample [8]")
@click.option(
    "--manipulation", type=click.IntRange(min=0), default=None, help="frames moving hand+object [0]"
)
@click.option("--size", type=(int, int), default=None, help="image size W H, e.g. 720 480 (any for dexycb:/ho3d:)")
@click.option("--split", default=None, help="dexycb: s0:train ... s3:test; ho3d: train|evaluation [all]")
@click.option(
    "--clip", type=click.IntRange(min=1), default=None, help="dexycb:/ho3d: consecutive frames per sample [1]"
)
@click.option("--camera", "camera_preset", default=None, help="nocs-camera, square-N or WxH [square-512]")
@_grasp_options
@click.option(
    "--hand",
    type=click.Choice(["builtin", "builtin-v1", "builtin-v2", "mano"]),
    default=None,
    help="hand model; builtin = builtin-v2 [builtin]",
)
@click.option("--mano", type=click.Path(path_type=Path), default=None, help="MANO_RIGHT.pkl or its folder")
@click.option(
    "--forearm/--no-forearm",
    default=None,
    help="draw the built-in v2 hand's forearm stub in rgb/depth/mask (not in hand labels or conditions) [off]",
)
@click.option(
    "--photo", type=click.Choice(PHOTO_CHOICES), default="none", show_default=True, help="photoreal frames"
)
@click.option("--video", type=click.Choice(VIDEO_CHOICES), default="none", show_default=True, help="videos")
@click.option(
    "--units", type=click.Choice(["auto", "m", "cm", "mm"]), default=None, help="units of folder meshes"
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option(
    "--ray-address", default=None, help="address of a running Ray cluster (default: start a local one)"
)
@click.option(
    "--shards", "shard_range", default=None, help="only shards I:J of the run (e.g. for a SLURM array)"
)
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="run seed [0]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--resume", is_flag=True, help="continue a run in OUT (rerunning the same command does the same)"
)
@_generation_options
@click.option("-v", "--verbose", count=True)
def synth(
    objects_,
    n,
    out,
    frames,
    manipulation,
    size,
    split,
    clip,
    camera_preset,
    grasp_method,
    grabnet,
    hand,
    mano,
    forearm,
    photo,
    video,
    units,
    workers,
    executor,
    ray_address,
    shard_range,
    samples_per_shard,
    seed,
    config_file,
    resume,
    verbose,
    **generation,
):
    """Generate N grasp sequences as WebDataset shards in OUT/shards, with OUT/manifest.json."""
    _setup_logging(verbose)
    from hoigen.datasets.shards import ShardWriteError
    from hoigen.objects import ObjectError
    from hoigen.render.gl import RenderError
    from hoigen.synth.run import SynthInterrupted, SynthJob, run_synth

    del resume  # finished shards are always kept
    try:
        from hoigen.sources import is_real_source, source_for_config

        real_run = is_real_source(_run_config(config_file, objects={"source": objects_}).objects.source)
        if not real_run and (split or clip):
            raise ValueError("--split and --clip apply to dexycb:ROOT / ho3d:ROOT object sources only")
        config = _run_config(
            config_file,
            objects={"source": objects_, "units": units},
            hand={"model": hand, "mano": str(mano) if mano else None, "forearm": forearm},
            trajectory={
                "frames": clip or frames or (1 if real_run else None),
                "manipulation_frames": manipulation,
            },
            camera={"preset": camera_preset or (None if real_run else _parse_size(size))},
            grasp={"method": grasp_method, "grabnet": str(grabnet) if grabnet else None},
            real={
                "split": split,
                "width": size[0] if real_run and size else None,
                "height": size[1] if real_run and size else None,
            },
            seed=seed,
        )
        if n is None:
            if not real_run:
                raise ValueError("--n (number of samples) is required")
            n = len(source_for_config(config))
        job = SynthJob(config, out, n, samples_per_shard)
        span = None
        if shard_range:
            try:
                a, b = (int(v) for v in shard_range.split(":"))
            except ValueError as exc:
                raise ValueError(
                    f"--shards takes I:J (shard numbers, J exclusive), got {shard_range!r}"
                ) from exc
            span = (a, b)
        if photo == "none" and video == "none":
            summary = run_synth(
                job, workers=workers, executor=executor, shard_range=span, ray_address=ray_address
            )
        else:
            from hoigen.diffusion.stage import synth_and_generate

            gen_config = _generate_config(photo, video, generation)
            render_job = SynthJob(config, out / "render", n, samples_per_shard)
            summary, generated = synth_and_generate(
                render_job, gen_config, out, workers=workers, executor=executor, shard_range=span,
                ray_address=ray_address,
            )
            click.echo(
                f"generated {generated.frames} frames on {generated.device} into {out / 'shards'} "
                f"(renders in {out / 'render'})"
            )
    except SynthInterrupted as exc:
        click.echo(
            f"interrupted by {exc.signal_name}: finished shards in {out / 'shards'} are kept; rerun the same "
            "command to resume",
            err=True,
        )
        raise click.exceptions.Exit(143 if exc.signal_name == "SIGTERM" else 130) from None
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: finished shards in {out / 'shards'} are kept; rerun the same command to resume",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    except (ValueError, ImportError, ObjectError, RenderError, ShardWriteError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    frames_made = summary.samples * config.trajectory.total_frames
    seconds = max(summary.seconds, 1e-9)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(summary.stage_seconds.items()))
    click.echo(
        f"{summary.samples} samples ({frames_made} frames) in {summary.shards_made} new shards, "
        f"{summary.shards_kept} kept, {summary.skipped} skipped; grasp gate passed "
        f"{summary.grasp_passed}/{summary.grasp_candidates} candidates; {summary.seconds:.1f} s "
        f"({summary.samples / seconds:.2f} samples/s, {frames_made / seconds:.1f} frames/s); "
        f"{summary.bytes / 1e6:.1f} MB written to {out / 'shards'}"
        + (f"; worker time: {stages}" if stages else "")
    )


@main.command()
@click.option("--objects", "objects_", default=None, help="builtin:nocs or a folder of meshes [builtin:nocs]")
@click.option(
    "--index", default=0, show_default=True, type=click.IntRange(min=0), help="sample index to render"
)
@click.option("--frames", type=click.IntRange(min=1), default=None, help="approach frames T [8]")
@click.option(
    "--manipulation", type=click.IntRange(min=0), default=None, help="frames moving hand+object [0]"
)
@click.option("--camera", "camera_preset", default=None, help="nocs-camera, square-N or WxH [square-512]")
@click.option(
    "--hand",
    type=click.Choice(["builtin", "builtin-v1", "builtin-v2", "mano"]),
    default=None,
    help="hand model; builtin = builtin-v2 [builtin]",
)
@click.option("--mano", type=click.Path(path_type=Path), default=None, help="MANO_RIGHT.pkl or its folder")
@click.option(
    "--forearm/--no-forearm",
    default=None,
    help="draw the built-in v2 hand's forearm stub in rgb/depth/mask (not in hand labels or conditions) [off]",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="run seed [0]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder")
@click.option("-v", "--verbose", count=True)
def render(
    objects_, index, frames, manipulation, camera_preset, hand, mano, forearm, seed, config_file, out, verbose
):
    """Render one sequence to PNGs (every SPEC §3 image per frame, meta.json, points) and overview.png."""
    _setup_logging(verbose)
    from hoigen.grasping import GraspError
    from hoigen.hands import load_hand
    from hoigen.objects import ObjectError, open_source
    from hoigen.synth.recipe import SequencePlanner

    try:
        config = _run_config(
            config_file,
            objects={"source": objects_},
            hand={"model": hand, "mano": str(mano) if mano else None, "forearm": forearm},
            trajectory={"frames": frames, "manipulation_frames": manipulation},
            camera={"preset": camera_preset},
            seed=seed,
        )
        source = open_source(config.objects.source, config.objects.units, config.objects.categories)
        hand_model = load_hand(config.hand.model, config.hand.mano or None, config.hand.forearm)
        plan = SequencePlanner(config, source, hand_model).plan(index)
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError, ObjectError, GraspError) as exc:
        raise click.ClickException(str(exc)) from exc
    from hoigen.render.gl import RenderError
    from hoigen.render.renderer import Renderer

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot write to the output folder {out}: {exc}") from exc
    try:
        renderer = Renderer(plan.camera.intrinsics, config.render)
        seq = renderer.render_sequence(
            plan.object, hand_model, plan.trajectory, plan.camera.T_cam_world, plan.render_rng
        )
    except RenderError as exc:
        raise click.ClickException(str(exc)) from exc
    _write_sequence_pngs(out, seq, plan, hand_model, config)
    click.echo(f"rendered {len(seq.frames)} frames of {plan.object.id} to {out} (see {out / 'overview.png'})")


def _write_sequence_pngs(out: Path, seq, plan, hand_model, config) -> None:
    from hoigen.render.png import encode_png

    names = ("rgb", "depth", "mask", "normal", "nocs", "skeleton", "hoimask", "tracking")
    for t, frame in enumerate(seq.frames):
        for name in names:
            (out / f"f{t:03d}.{name}.png").write_bytes(encode_png(getattr(frame, name)))
    np.save(out / "points.npy", seq.points)
    np.save(out / "points_label.npy", seq.points_label)
    meta = {
        "hoigen_version": _version(),
        "seed": config.seed,
        "index": plan.index,
        "object": plan.object.metadata(),
        "hand": {**hand_model.metadata(), "betas": plan.grasp.params.betas[0].tolist()},
        "camera": plan.camera.intrinsics.to_dict(),
        "grasp": {"method": plan.grasp.method, "metrics": plan.grasp.metrics},
        "frames": [f.labels for f in seq.frames],
        **seq.meta,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    (out / "overview.png").write_bytes(encode_png(_overview(seq)))


def _overview(seq) -> np.ndarray:
    """A contact sheet: one row per frame (rgb, normal, nocs, depth, skeleton, hoimask, tracking)."""
    rows = []
    for frame in seq.frames:
        depth = frame.depth.astype(np.float64)
        valid = depth > 0
        vis = np.zeros(depth.shape, np.uint8)
        if valid.any():
            lo, hi = depth[valid].min(), depth[valid].max()
            vis[valid] = (255 - 200 * (depth[valid] - lo) / max(hi - lo, 1.0)).astype(np.uint8)
        tiles = [
            frame.rgb,
            frame.normal,
            (frame.nocs >> 8).astype(np.uint8),
            np.repeat(vis[..., None], 3, axis=2),
            frame.skeleton,
            frame.hoimask,
            frame.tracking,
        ]
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    step = max(1, int(np.ceil(sheet.shape[1] / 2048)))
    return np.ascontiguousarray(sheet[::step, ::step])


@main.command()
@click.argument("shards_dir", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="[SHARDS_DIR/preview]"
)
@click.option("--max-samples", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--no-gif", is_flag=True, help="only the contact sheet")
def preview(shards_dir, out, max_samples, no_gif):
    """Contact sheet (PNG) and one GIF per sequence with skeleton, boxes and NOCS axes drawn."""
    from hoigen.datasets.preview import preview as make_preview

    try:
        paths = make_preview(shards_dir, out=out, max_samples=max_samples, gif=not no_gif)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {paths[0]}" + (f" and {len(paths) - 1} GIFs" if len(paths) > 1 else ""))


@main.command()
@click.argument("shards_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
def inspect(shards_dir, as_json):
    """Dataset statistics: samples, categories, grasp metrics, visibility, depth range, size."""
    from hoigen.datasets.inspect import dataset_statistics, format_statistics
    from hoigen.datasets.reader import ShardFormatError

    try:
        stats = dataset_statistics(shards_dir)
    except (FileNotFoundError, ShardFormatError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(stats, indent=1, default=str) if as_json else format_statistics(stats))


@main.command()
@click.argument("fmt", metavar="nocs|coco|bop", type=click.Choice(["nocs", "coco", "bop"]))
@click.argument("shards_dir", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", default=None, help="NOCS: train/val [train]; BOP: train_pbr")
@click.option("--image", type=click.Choice(["rgb", "photo"]), default="rgb", show_default=True)
@click.option(
    "--size", type=(int, int), default=(640, 480), show_default=True, help="NOCS: output image size"
)
@click.option("--camera-depth", is_flag=True, help="NOCS: also write CAMERA's 3-channel depth")
@click.option(
    "--class0",
    type=click.Choice(["skip", "keep"]),
    default="skip",
    show_default=True,
    help="NOCS: frames of non-NOCS objects",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0.0, max=1.0, max_open=True),
    default=0.1,
    show_default=True,
    help="NOCS: fraction of the samples written to the val split",
)
@click.option(
    "--allow-intrinsics",
    is_flag=True,
    help="NOCS: export although the intrinsics are not CAMERA's (SPD hard-codes them); warns",
)
@click.option("--images-per-scene", type=click.IntRange(min=1), default=1000, show_default=True, help="BOP")
@click.option("--overwrite", is_flag=True, help="COCO/BOP: replace an existing export in OUT_DIR")
@click.option("--no-verify", is_flag=True, help="do not check the shards against the manifest (sha256, counts)")
def export(
    fmt,
    shards_dir,
    out_dir,
    split,
    image,
    size,
    camera_depth,
    class0,
    val_fraction,
    allow_intrinsics,
    images_per_scene,
    overwrite,
    no_verify,
):
    """Export shards to the NOCS (CAMERA) layout, COCO or BOP."""
    checks = {"verify": False} if no_verify else {}  # the exporters verify by default
    try:
        if fmt == "nocs":
            from hoigen.exports.nocs import export_nocs

            summary = export_nocs(
                shards_dir,
                out_dir,
                split=split or "train",
                image=image,
                width=size[0],
                height=size[1],
                camera_depth=camera_depth,
                class0=class0,
                val_fraction=val_fraction if (split or "train") != "val" else 0.0,
                allow_intrinsics=allow_intrinsics,
                **checks,
            )
        elif fmt == "coco":
            from hoigen.exports.coco import export_coco

            summary = export_coco(
                shards_dir, out_dir, image=image, overwrite=overwrite, progress=True, **checks
            )
        else:
            from hoigen.exports.bop import export_bop

            summary = export_bop(
                shards_dir,
                out_dir,
                split=split or "train_pbr",
                images_per_scene=images_per_scene,
                image=image,
                overwrite=overwrite,
                progress=True,
                **checks,
            )
    except (ValueError, FileNotFoundError, FileExistsError, OSError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary, indent=1, default=str))


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--decode", is_flag=True, help="also decode every image and array member (slower)")
def verify(out, decode):
    """Check a whole dataset: every shard against the manifest (size, sha256, samples, frames), stored files."""
    from hoigen.datasets.integrity import ShardIntegrityError, verify_dataset

    try:
        report = verify_dataset(out, decode=decode)
    except (FileNotFoundError, ShardIntegrityError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for line in report["warnings"]:
        click.echo(f"warning: {line}", err=True)
    for line in report["errors"]:
        click.echo(f"error: {line}", err=True)
    if report["errors"]:
        raise click.ClickException(
            f"{len(report['errors'])} problem(s) in {out}: the dataset is damaged (see above)"
        )
    click.echo(f"ok: {report['shards']} shards, {report['samples']} samples in {out} match the manifest")


@main.command("nocs-augment")
@click.option(
    "--nocs-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="a NOCS data root (CAMERA layout, labels, obj_models); none = built-in objects",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output root [the NOCS root]",
)
@click.option(
    "--ratio",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="HOI frames per original (add) or fraction replaced (replace)",
)
@click.option("--mode", type=click.Choice(["add", "replace"]), default="add", show_default=True)
@click.option("--num-frames", type=click.IntRange(min=1), default=None, help="original frames to use [all]")
@click.option("--split", default="train", show_default=True)
@click.option("--class0", type=click.Choice(["skip", "keep"]), default="skip", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@click.option(
    "--photo",
    type=click.Choice(PHOTO_CHOICES),
    default="none",
    show_default=True,
    help="hoidiffusion: photoreal hand and grasped object (labels unchanged)",
)
@_generation_options
def nocs_augment_cmd(nocs_root, out, ratio, mode, num_frames, split, class0, seed, overwrite, photo, **generation):
    """HOIDiffusion's recipe: hands grasping NOCS objects in their poses, written in NOCS layout + mixed list."""
    from tqdm import tqdm

    from hoigen.exports.nocs_augment import nocs_augment

    backend = None
    if photo != "none":
        try:
            from hoigen.diffusion.stage import SampleGenerator

            gen_config = _generate_config(photo, "none", {**generation, "crop": True})
            backend = SampleGenerator(gen_config).photo  # weights load (and fail) before any frame is made
        except (ValueError, ImportError, FileNotFoundError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc

    with tqdm(unit="frame", desc="nocs-augment", dynamic_ncols=True) as bar:

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            report = nocs_augment(
                nocs_root,
                out,
                ratio=ratio,
                mode=mode,
                num_frames=num_frames,
                seed=seed,
                class0=class0,
                split=split,
                overwrite=overwrite,
                progress=progress,
            )
        except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
    if backend is not None:
        from hoigen.exports.nocs_photo import photo_pass

        try:
            report["photo"] = photo_pass(report, backend, seed)
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
    keys = ("hoi_frames", "shortfall", "failed", "class0", "list", "photo")
    click.echo(json.dumps({k: report.get(k) for k in keys}, indent=1, default=str))


@main.command()
@click.argument("shards_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--photo", type=click.Choice(PHOTO_CHOICES), default="none", show_default=True)
@click.option("--video", type=click.Choice(VIDEO_CHOICES), default="none", show_default=True)
@_generation_options
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="default: one per visible GPU")
@click.option("-v", "--verbose", count=True)
def generate(shards_dir, out_dir, photo, video, executor, workers, verbose, **generation):
    """Add photoreal frames (HOIDiffusion) and/or videos (HVG-3D) to the shards of SHARDS_DIR, into OUT_DIR."""
    _setup_logging(verbose)
    try:
        from hoigen.diffusion.stage import GenerateJob, run_generate

        job = GenerateJob(shards_dir, out_dir, _generate_config(photo, video, generation))
        summary = run_generate(job, executor=executor, workers=workers)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished shards in {out_dir / 'shards'} are kept; rerun to resume", err=True)
        raise click.exceptions.Exit(130) from None
    except (ValueError, ImportError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    rate = summary.frames / max(summary.seconds, 1e-9)
    click.echo(
        f"{summary.samples} samples, {summary.frames} frames generated on {summary.device} in "
        f"{summary.shards_made} new shards, {summary.shards_kept} kept; {summary.seconds:.1f} s "
        f"({rate:.2f} frames/s); written to {out_dir / 'shards'}"
    )


@main.group()
def convert():
    """Convert released model weights into the local folders hoigen loads (nothing is downloaded)."""


@convert.command("hoidiffusion")
@click.argument("src_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--sd-config",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="a weightless diffusers config folder for a checkpoint that is not SD-1.4 [SRC_DIR/hoigen_sd_config]",
)
@click.option("--adapters-only", is_flag=True, help="convert only model_condition.pth (use with --sd DIR)")
@click.option("-v", "--verbose", count=True)
def convert_hoidiffusion(src_dir, out_dir, sd_config, adapters_only, verbose):
    """HOIDiffusion's model_condition.pth + model_sd_finetuned.ckpt in SRC_DIR -> a diffusers folder OUT_DIR."""
    _setup_logging(verbose)
    try:
        from hoigen.diffusion.hoidiffusion.weights import convert_released

        record = convert_released(src_dir, out_dir, config_dir=sd_config, adapters_only=adapters_only)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    params = ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in record["parameters"].items())
    click.echo(
        f"converted {', '.join(record['inputs'])} into {out_dir} ({params}); "
        f"sha256 of inputs and outputs in {out_dir / 'hoigen_weights.json'}"
    )


@main.group()
def fixture():
    """Write tiny RANDOM models for trying the pipeline end to end without the real weights."""


@fixture.command("hoidiffusion")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--released", is_flag=True, help="write the released file formats instead (to try `convert`)")
def fixture_hoidiffusion(out_dir, seed, released):
    """A tiny random HOIDiffusion-shaped model folder (its images are noise) for --hoidiffusion OUT_DIR."""
    try:
        from hoigen.diffusion.hoidiffusion.fixtures import write_tiny_hoidiffusion, write_tiny_released

        (write_tiny_released if released else write_tiny_hoidiffusion)(out_dir, seed=seed)
    except (ValueError, FileExistsError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote a tiny RANDOM HOIDiffusion model ({'released formats' if released else 'converted layout'}, "
        f"seed {seed}) to {out_dir}: for trying the pipeline end to end, its images are noise"
    )


@fixture.command("hvg3d")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=(int, int), default=(48, 32), show_default=True, help="video W H (multiples of 16)")
@click.option("--frames", type=click.IntRange(min=1), default=9, show_default=True, help="video frames (1 + 4 k)")
@click.option("--blocks", type=click.IntRange(min=1), default=1, show_default=True, help="ControlNet copies K")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def fixture_hvg3d(out_dir, size, frames, blocks, seed):
    """Tiny RANDOM CogVideoX-I2V (OUT_DIR/cogvideox) and HVG-3D ControlNet (OUT_DIR/hvg3d) folders."""
    try:
        from hoigen.diffusion.hvg3d.fixtures import write_tiny_cogvideox, write_tiny_hvg3d

        cogvideox = write_tiny_cogvideox(out_dir / "cogvideox", size[0], size[1], frames, max(2, blocks), seed)
        hvg3d = write_tiny_hvg3d(out_dir / "hvg3d", cogvideox, num_blocks=blocks, seed=seed)
    except (ValueError, FileExistsError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote a tiny RANDOM CogVideoX-I2V ({size[0]}x{size[1]}, {frames} frames) to {cogvideox} and an HVG-3D "
        f"ControlNet (K={blocks}) to {hvg3d}: use --cogvideox {cogvideox} --hvg3d {hvg3d} on shards of {frames} "
        f"frames at --size {size[0]} {size[1]}; its videos are noise"
    )


@main.command()
@click.option("--no-gl", is_flag=True, help="skip the (slow) GL platform probes")
@click.option("--source", default=None, help="dexycb:ROOT or ho3d:ROOT: check re-rendered labels")
@click.option("--mano", type=click.Path(path_type=Path), default=None, help="MANO_RIGHT.pkl or its folder")
@click.option("--split", default="", help="split of --source (dexycb s0:train ..., ho3d train|evaluation)")
@click.option("--frames", type=click.IntRange(min=1), default=4, show_default=True, help="--source frames")
def doctor(no_gl, source, mano, split, frames):
    """Report packages, GL platforms, GPU and optional weights, and what each enables.

    With --source, re-render a few annotated frames of a DexYCB / HO-3D root and print the 2D-joint error against
    the dataset's own keypoints and the mask IoU against its segmentation."""
    from hoigen.doctor import collect

    if source:
        from hoigen.sources.check import check_source, format_checks

        try:
            lines = format_checks(check_source(source, mano, frames, split))
        except (ValueError, FileNotFoundError, ImportError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(click.style(f"labels of {source} re-rendered by hoigen vs the dataset's own", bold=True))
        for line in lines:
            click.echo(f"  {line}")
        return
    section = None
    for check in collect(gl=not no_gl):
        if check.section != section:
            section = check.section
            click.echo(click.style(section, bold=True))
        mark = {True: click.style("ok ", fg="green"), False: click.style("no ", fg="red"), None: "-- "}[
            check.ok
        ]
        click.echo(f"  {mark} {check.name}: {check.detail}")


def _register_training() -> None:
    """``hoigen train hoidiffusion|hvg3d`` and ``hoigen eval photo|video`` (click only at import)."""
    from hoigen.diffusion.training.commands import evaluate, train

    main.add_command(train, "train")
    main.add_command(evaluate, "eval")


_register_training()


def _version() -> str:
    from hoigen import __version__

    return __version__


if __name__ == "__main__":
    main()
