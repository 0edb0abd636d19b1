"""Render benchmark: hoigen's full per-frame output set against plain pyrender, in one process, plus memory.

    python benchmarks/render.py [--sizes 256 512] [--rounds 20] [--quick] [--json out.json]

One scene (a built-in object of ~10k triangles, the bottle by default, and the built-in hand posed from a contact
grasp, following an approach + manipulation trajectory of T frames; seeds fixed), rendered at each size by:

- baseline A, one plain lit colour pass: a ``pyrender.OffscreenRenderer`` with pyrender's defaults (4x MSAA), object
  and hand as ``Mesh.from_trimesh`` (smooth shading, plain materials), one directional light, an
  ``IntrinsicsCamera`` from the same K (principal point + 0.5 px), camera pose from OpenCV via diag(1, -1, -1, 1).
  The posed hand changes every frame, so its node is re-created every frame: timed is hand upload + render.
- baseline B, naive separate passes with plain pyrender, per frame: A's lit pass, a segmentation pass
  (``RenderFlags.SEG``), a normal-map pass (meshes re-created with per-vertex colours = camera-frame normals
  (n + 1) / 2, rendered FLAT) and a NOCS pass (the object with NOCS vertex colours, rendered FLAT, hand as occluder).
- hoigen: ``Renderer.render_sequence`` over the T frames -- rgb, depth, mask, normal, nocs, skeleton, hoimask,
  tracking, amodal masks and point tracks; per-frame time = sequence total / T (so it carries its share of the
  per-sequence work: hand forward kinematics, appearance, point-track samples, tracking colours). The time is split
  by wrapping the calls (microseconds of overhead): the id pass (``IdRasterizer.set_mesh`` + ``rasterize``, with
  the hand upload), the two depth-only amodal passes, ray/triangle hits, interpolation of per-vertex values,
  shading, encodings (depth/normal/NOCS/sRGB, hoimask, boxes), the skeleton, the per-sequence setup, and the rest
  (inline numpy in ``_render_frame``: image buffers, scatter, quantisation).

For scale, two GL-only numbers: A's renderer re-rendering its scene unchanged (no upload), and hoigen's id pass
alone (``IdRasterizer.rasterize`` on meshes already uploaded).

Each round renders the whole trajectory with A, A unchanged, B, hoigen and the id pass alone, one after the other
(interleaved, so load from other processes hits all alike); a method's time for a round is its total / T; reported
is the median over rounds (p25-p75 in brackets). One warm-up round of each is not counted.

Memory: a hoigen ``Renderer`` at 256² renders sequences back to back (a new appearance per sequence, frames dropped
after each); resident memory (VmRSS from /proc/self/status) after ``--frames-short`` and ``--frames-long`` frames,
and the growth between them. This runs first, before any other renderer exists in the process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoigen.geometry.camera import CameraConfig, Intrinsics, sample_camera, square_intrinsics
from hoigen.geometry.transforms import invert_transform
from hoigen.grasping import ContactGraspSampler, GraspConfig, TrajectoryConfig, make_trajectory
from hoigen.hands import BuiltinHand
from hoigen.objects import BuiltinSource
from hoigen.render.gl import select_platform

CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> OpenGL camera axes (either direction)
OBJECT_COLOR = [0.55, 0.6, 0.7, 1.0]
SKIN_COLOR = [0.8, 0.6, 0.5, 1.0]
SEG_OBJECT, SEG_HAND = (255, 0, 0), (0, 255, 0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_kb(field: str = "VmRSS") -> int:
    """Resident memory of this process in kB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def quartiles(values) -> tuple[float, float, float]:
    p25, p50, p75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(p25), float(p50), float(p75)


@dataclass
class Scene:
    """The benchmark scene: object, hand and trajectory in the world frame, one camera pose."""

    category: str
    obj: object
    hand: BuiltinHand
    trajectory: object
    T_cam_world: np.ndarray
    hand_world: np.ndarray  # (T, V, 3) posed hand vertices, world frame
    frames: int
    approach_frames: int


def build_scene(category: str, frames: int, seed: int) -> Scene:
    rng = np.random.default_rng([seed, 0])
    obj = BuiltinSource((category,)).object_for(0, rng)
    hand = BuiltinHand()
    grasp = ContactGraspSampler(obj, hand, GraspConfig()).sample(rng)
    manipulation = frames // 4
    config = TrajectoryConfig(frames=frames - manipulation, manipulation_frames=manipulation)
    trajectory = make_trajectory(grasp.params, hand, config, rng, obj.up)
    camera = sample_camera(CameraConfig(preset="square-256"), rng, np.zeros(3), obj.up)
    hand_world = hand.forward(trajectory.hand).vertices
    return Scene(
        category, obj, hand, trajectory, camera.T_cam_world, hand_world, frames, frames - manipulation
    )


class PlainPyrender:
    """Baselines A and B: plain pyrender, one renderer and one scene, nodes shown or hidden per pass.

    Args:
        scene: what to render; intr: the camera (OpenCV ``K``, integer pixel centres).
        separate_passes: False = baseline A (lit pass only), True = baseline B (lit, seg, normal, NOCS).
    """

    def __init__(self, scene: Scene, intr: Intrinsics, separate_passes: bool):
        import pyrender
        import trimesh

        self.pyrender, self.trimesh = pyrender, trimesh
        self.s = scene
        self.separate = separate_passes
        self.renderer = pyrender.OffscreenRenderer(intr.width, intr.height)
        self.scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[0.3, 0.3, 0.3])
        K = intr.K
        camera = pyrender.IntrinsicsCamera(
            K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=0.01, zfar=10.0
        )
        camera_pose = invert_transform(scene.T_cam_world) @ CV_TO_GL
        self.scene.add(camera, pose=camera_pose)
        self.scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.0), pose=camera_pose)

        self.obj_v = np.asarray(scene.obj.mesh.vertices, dtype=np.float64)
        self.obj_f = np.asarray(scene.obj.mesh.faces)
        self.hand_f = np.asarray(scene.hand.faces)
        self.object_material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=OBJECT_COLOR, metallicFactor=0.0, roughnessFactor=0.7
        )
        self.skin_material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=SKIN_COLOR, metallicFactor=0.0, roughnessFactor=0.7
        )
        obj_tm = trimesh.Trimesh(self.obj_v, self.obj_f, process=False)
        self.obj_node = self.scene.add(
            pyrender.Mesh.from_trimesh(obj_tm, material=self.object_material, smooth=True),
            pose=scene.trajectory.T_world_obj[0],
        )
        self.hand_node = None
        self.hand_tm = None
        self.lit_meshes: list = [self.obj_node.mesh]
        if separate_passes:
            self.obj_normals = np.asarray(obj_tm.vertex_normals, dtype=np.float64)
            nocs = (self.obj_v / scene.obj.scale + 0.5).astype(np.float32)
            self.nocs_node = self.scene.add(self._colored(self.obj_v, self.obj_f, nocs))
            self.nocs_node.mesh.is_visible = False
            self.normal_nodes: list = []
        self.pass_seconds: dict[str, float] = defaultdict(float)

    def _colored(self, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray):
        pyrender = self.pyrender
        primitive = pyrender.Primitive(
            positions=np.ascontiguousarray(vertices, dtype=np.float32),
            color_0=np.ascontiguousarray(colors, dtype=np.float32),
            indices=np.ascontiguousarray(faces, dtype=np.uint32),
            mode=pyrender.constants.GLTF.TRIANGLES,
        )
        return pyrender.Mesh([primitive])

    def _show(self, meshes) -> None:
        visible = {id(m) for m in meshes}
        for node in self.scene.mesh_nodes:
            node.mesh.is_visible = id(node.mesh) in visible

    def lit_pass(self, t: int):
        """Move the object, re-create the posed hand, render one lit colour image (+ depth)."""
        pyrender = self.pyrender
        self.scene.set_pose(self.obj_node, self.s.trajectory.T_world_obj[t])
        if self.hand_node is not None:
            self.scene.remove_node(self.hand_node)
        self.hand_tm = self.trimesh.Trimesh(self.s.hand_world[t], self.hand_f, process=False)
        self.hand_node = self.scene.add(
            pyrender.Mesh.from_trimesh(self.hand_tm, material=self.skin_material, smooth=True)
        )
        self.lit_meshes = [self.obj_node.mesh, self.hand_node.mesh]
        if self.separate:
            self._show(self.lit_meshes)
        return self.renderer.render(self.scene)

    def render_frame(self, t: int) -> dict:
        """Baseline A: the lit pass. Baseline B: lit, segmentation, normal and NOCS passes."""
        pyrender = self.pyrender
        t0 = time.perf_counter()
        color, depth = self.lit_pass(t)
        t1 = time.perf_counter()
        self.pass_seconds["lit"] += t1 - t0
        if not self.separate:
            return {"rgb": color, "depth": depth}

        seg_map = {self.obj_node: SEG_OBJECT, self.hand_node: SEG_HAND}
        seg, _ = self.renderer.render(self.scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_map)
        t2 = time.perf_counter()
        self.pass_seconds["seg"] += t2 - t1

        # normals in the OpenCV camera frame as vertex colours, on meshes re-made for this frame
        T_world_obj = self.s.trajectory.T_world_obj[t]
        R_cam_obj = (self.s.T_cam_world @ T_world_obj)[:3, :3]
        R_cam_world = self.s.T_cam_world[:3, :3]
        obj_n = self.obj_normals @ R_cam_obj.T
        hand_n = np.asarray(self.hand_tm.vertex_normals) @ R_cam_world.T
        for node in self.normal_nodes:
            self.scene.remove_node(node)
        self.normal_nodes = [
            self.scene.add(self._colored(self.obj_v, self.obj_f, (obj_n + 1.0) * 0.5), pose=T_world_obj),
            self.scene.add(self._colored(self.s.hand_world[t], self.hand_f, (hand_n + 1.0) * 0.5)),
        ]
        self._show([n.mesh for n in self.normal_nodes])
        normal, _ = self.renderer.render(self.scene, flags=pyrender.RenderFlags.FLAT)
        t3 = time.perf_counter()
        self.pass_seconds["normal"] += t3 - t2

        # NOCS: the object with NOCS vertex colours; the hand, drawn flat, occludes it
        self.scene.set_pose(self.nocs_node, T_world_obj)
        self._show([self.nocs_node.mesh, self.hand_node.mesh])
        nocs, _ = self.renderer.render(self.scene, flags=pyrender.RenderFlags.FLAT)
        self.pass_seconds["nocs"] += time.perf_counter() - t3
        return {"rgb": color, "depth": depth, "seg": seg, "normal": normal, "nocs": nocs}

    def close(self) -> None:
        self.renderer.delete()


def run_plain(plain: PlainPyrender) -> tuple[float, list]:
    """Render the scene's whole trajectory with ``plain``: (seconds per frame, every frame's outputs).

    With ``separate_passes=False`` this is baseline A, one lit colour pass per frame (``benchmarks/synth.py
    --frame-cost`` uses it as its baseline too)."""
    T = plain.s.frames
    outputs = []
    start = time.perf_counter()
    for t in range(T):
        outputs.append(plain.render_frame(t))
    return (time.perf_counter() - start) / T, outputs


class CallTimer:
    """Wrap functions or methods (module attributes or instance attributes) to add up the time spent in them."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list = []

    def wrap(self, owner, name: str, key: str) -> None:
        original = getattr(owner, name)
        on_instance = name in getattr(owner, "__dict__", {})
        seconds = self.seconds

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[key] += time.perf_counter() - start

        setattr(owner, name, timed)
        self._undo.append((owner, name, original, on_instance))

    def restore(self) -> None:
        for owner, name, original, on_instance in reversed(self._undo):
            if on_instance or not hasattr(type(owner), name):
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the class method shows through again
        self._undo.clear()


def probe_renderer(renderer, hand) -> CallTimer:
    """Time the parts of ``Renderer.render_sequence`` by wrapping what it calls (none of these calls another)."""
    import hoigen.render.conditions as conditions
    import hoigen.render.renderer as renderer_module

    timer = CallTimer()
    for name in ("set_mesh", "rasterize"):
        timer.wrap(renderer.raster, name, "id pass")
    timer.wrap(renderer.raster, "coverage", "amodal passes")
    timer.wrap(renderer_module, "pixel_hits", "ray/triangle hits")
    timer.wrap(renderer_module, "interpolate", "interpolation")
    timer.wrap(renderer_module, "shade", "shading")
    for name in ("encode_depth", "encode_nocs", "encode_unit_normals", "linear_to_srgb", "bbox_xywh"):
        timer.wrap(renderer_module, name, "encodings")
    timer.wrap(conditions, "hoi_mask", "encodings")
    timer.wrap(conditions, "draw_skeleton", "skeleton")
    timer.wrap(renderer_module, "sample_appearance", "per-sequence setup")
    timer.wrap(conditions, "sample_surface_points", "per-sequence setup")
    timer.wrap(conditions, "tracking_vertex_colors", "per-sequence setup")
    timer.wrap(hand, "forward", "per-sequence setup")
    return timer


BREAKDOWN = (
    "id pass",
    "amodal passes",
    "ray/triangle hits",
    "interpolation",
    "shading",
    "encodings",
    "skeleton",
    "per-sequence setup",
)
BREAKDOWN_HEADERS = (
    "id pass (GL, incl. hand upload)",
    "amodal passes (2 depth-only)",
    "ray/triangle hits",
    "interpolation (normals, NOCS, tracking)",
    "shading",
    "encodings + masks + boxes",
    "skeleton",
    "per-sequence setup (hand FK, appearance, point samples)",
    "rest (image buffers, scatter, quantisation)",
)


def gl_renderer_name() -> str:
    try:
        from OpenGL import GL

        return GL.glGetString(GL.GL_RENDERER).decode()
    except Exception:  # no current context, or a binding without the call
        return "unknown"


def close_all(*renderers) -> None:
    """Close GL renderers that live side by side. pyrender's EGL backend ends ``delete`` with ``eglTerminate`` on
    the display, which every context in the process shares: after the first close the other contexts are gone with
    it and their own close fails (EGL_BAD_DISPLAY), which is expected here and ignored."""
    for k, renderer in enumerate(renderers):
        try:
            renderer.close()
        except Exception:
            if k == 0:
                raise
    gc.collect()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def bench_size(scene: Scene, size: int, rounds: int, seed: int) -> dict:
    from hoigen.render.renderer import HAND_ID, OBJECT_ID, Renderer

    intr = square_intrinsics(size)
    T = scene.frames
    last = T - 1
    plain_a = PlainPyrender(scene, intr, separate_passes=False)
    plain_b = PlainPyrender(scene, intr, separate_passes=True)
    ours = Renderer(intr)
    gl_name = gl_renderer_name()

    def run_static() -> float:
        """A's renderer on its scene as it stands (no upload): the GL cost of one lit pass."""
        start = time.perf_counter()
        for _ in range(T):
            plain_a.renderer.render(plain_a.scene)
        return (time.perf_counter() - start) / T

    def run_ours(k: int):
        rng = np.random.default_rng([seed, 10, k])
        start = time.perf_counter()
        seq = ours.render_sequence(scene.obj, scene.hand, scene.trajectory, scene.T_cam_world, rng)
        return (time.perf_counter() - start) / T, seq

    # the id pass alone: the last frame's meshes placed once (uploaded by an untimed pass), rasterize only
    T_cam_obj = scene.T_cam_world @ scene.trajectory.T_world_obj[last]
    hand_cam = scene.hand_world[last] @ scene.T_cam_world[:3, :3].T + scene.T_cam_world[:3, 3]
    obj_v, obj_f = np.asarray(scene.obj.mesh.vertices), np.asarray(scene.obj.mesh.faces)
    hand_f = np.asarray(scene.hand.faces)

    def run_id_alone() -> float:
        ours.raster.set_mesh("object", obj_v, obj_f, OBJECT_ID, T_cam_obj)
        ours.raster.set_mesh("hand", hand_cam, hand_f, HAND_ID, np.eye(4))
        ours.raster.rasterize(intr.K)
        start = time.perf_counter()
        for _ in range(T):
            ours.raster.rasterize(intr.K)
        return (time.perf_counter() - start) / T

    # warm-up (shader compilation, first uploads), then a check that all three see the same scene
    _, out_b = run_plain(plain_b)
    run_plain(plain_a)
    run_static()
    run_id_alone()
    _, seq = run_ours(rounds)  # a seed no timed round uses
    seg = out_b[last]["seg"]
    mask = seq.frames[last].mask
    check = {
        "iou_object": mask_iou(seg[..., 0] > 127, mask == OBJECT_ID),
        "iou_hand": mask_iou(seg[..., 1] > 127, mask == HAND_ID),
        "object_px": int((mask == OBJECT_ID).sum()),
        "hand_px": int((mask == HAND_ID).sum()),
    }
    del out_b, seq

    times: dict[str, list[float]] = {"A": [], "A static": [], "B": [], "hoigen": [], "id pass alone": []}
    parts: dict[str, list[float]] = defaultdict(list)
    plain_b.pass_seconds.clear()
    for k in range(rounds):
        times["A"].append(run_plain(plain_a)[0])
        times["A static"].append(run_static())
        times["B"].append(run_plain(plain_b)[0])
        timer = probe_renderer(ours, scene.hand)
        try:
            per_frame, seq = run_ours(k)
        finally:
            timer.restore()
        del seq
        times["hoigen"].append(per_frame)
        times["id pass alone"].append(run_id_alone())
        for key in BREAKDOWN:
            parts[key].append(timer.seconds[key] / T)
        parts["rest"].append(per_frame - sum(timer.seconds[key] for key in BREAKDOWN) / T)
        log(
            f"  {size}² round {k + 1}/{rounds}: "
            + "  ".join(f"{name} {v[-1] * 1e3:.1f}" for name, v in times.items())
            + " ms/frame"
        )
    b_passes = {k: v / (rounds * T) for k, v in plain_b.pass_seconds.items()}
    close_all(plain_a, plain_b, ours)

    ms = {k: quartiles(np.asarray(v) * 1e3) for k, v in times.items()}
    return {
        "size": size,
        "frames_per_round": T,
        "rounds": rounds,
        "gl_renderer": gl_name,
        "ms_per_frame": {k: {"p25": v[0], "median": v[1], "p75": v[2]} for k, v in ms.items()},
        "hoigen_breakdown_ms": {k: float(np.median(v) * 1e3) for k, v in parts.items()},
        "baseline_b_passes_ms": {k: v * 1e3 for k, v in b_passes.items()},
        "ratio_B_over_A": ms["B"][1] / ms["A"][1],
        "ratio_hoigen_over_A": ms["hoigen"][1] / ms["A"][1],
        "ratio_hoigen_over_B": ms["hoigen"][1] / ms["B"][1],
        "scene_check": check,
    }


def bench_memory(scene: Scene, size: int, frames_short: int, frames_long: int, seed: int) -> dict:
    from hoigen.render.renderer import Renderer

    renderer = Renderer(square_intrinsics(size))
    T = scene.frames
    series = []  # (frames rendered, VmRSS kB) after every sequence
    short = None
    done, k = 0, 0
    start = time.perf_counter()
    while done < frames_long:
        seq = renderer.render_sequence(
            scene.obj, scene.hand, scene.trajectory, scene.T_cam_world, np.random.default_rng([seed, 20, k])
        )
        del seq  # a writer would have saved the frames by now
        done += T
        k += 1
        if short is None and done >= frames_short:
            gc.collect()
            short = (done, rss_kb())
            series.append(short)
            log(f"  memory: {done} frames, RSS {short[1] / 1024:.1f} MiB")
        else:
            series.append((done, rss_kb()))
        if done % 500 < T:
            log(f"  memory: {done} frames, RSS {series[-1][1] / 1024:.1f} MiB")
    gc.collect()
    final = (done, rss_kb())
    series[-1] = final
    elapsed = time.perf_counter() - start
    renderer.close()
    return {
        "size": size,
        "frames_per_sequence": T,
        "frames_short": short[0],
        "rss_short_mib": short[1] / 1024,
        "frames_long": final[0],
        "rss_long_mib": final[1] / 1024,
        "growth_percent": (final[1] - short[1]) / short[1] * 100.0,
        "peak_rss_mib": rss_kb("VmHWM") / 1024,
        "ms_per_frame_long_run": elapsed / final[0] * 1e3,
        "series_frames_rss_kb": series,
    }


def fmt(q: dict) -> str:
    return f"{q['median']:.1f} ({q['p25']:.1f}-{q['p75']:.1f})"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square image sizes, pixels")
    parser.add_argument("--category", default="bottle", help="built-in object category")
    parser.add_argument(
        "--frames", type=int, default=8, help="trajectory length T (a quarter is manipulation)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per size (default 20, quick 3)"
    )
    parser.add_argument("--frames-short", type=int, default=None, help="memory: first reading (default 100)")
    parser.add_argument("--frames-long", type=int, default=None, help="memory: last reading (default 2000)")
    parser.add_argument("--memory-size", type=int, default=256, help="image size of the memory run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds, memory at 20 / 100 frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 20)
    frames_short = args.frames_short or (20 if args.quick else 100)
    frames_long = args.frames_long or (100 if args.quick else 2000)
    if frames_long < frames_short:
        parser.error("--frames-long must be >= --frames-short")

    wall = time.perf_counter()
    load_start = os.getloadavg()[0]
    gl_platform = select_platform()
    scene = build_scene(args.category, args.frames, args.seed)
    log(f"scene built ({time.perf_counter() - wall:.1f} s); memory run at {args.memory_size}²")
    memory = bench_memory(scene, args.memory_size, frames_short, frames_long, args.seed)
    results = {"memory": memory, "sizes": {}}
    for size in args.sizes:
        log(f"timing at {size}²")
        results["sizes"][str(size)] = bench_size(scene, size, rounds, args.seed)
    wall = time.perf_counter() - wall
    load_end = os.getloadavg()[0]

    sizes = list(results["sizes"].values())
    n_obj = len(scene.obj.mesh.faces)
    n_hand = len(scene.hand.faces)
    checks = "; ".join(
        f"{r['size']}²: object {r['scene_check']['object_px']} px (IoU {r['scene_check']['iou_object']:.3f}), "
        f"hand {r['scene_check']['hand_px']} px (IoU {r['scene_check']['iou_hand']:.3f})"
        for r in sizes
    )
    results["meta"] = {
        "category": scene.category,
        "object_triangles": n_obj,
        "hand_triangles": n_hand,
        "frames": scene.frames,
        "approach_frames": scene.approach_frames,
        "seed": args.seed,
        "rounds": rounds,
        "gl_platform": gl_platform,
        "gl_renderer": sizes[0]["gl_renderer"] if sizes else "unknown",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wall_s": wall,
        "load_average_1min": [load_start, load_end],
        "quick": args.quick,
    }

    print()
    print(
        f"Scene: built-in {scene.category} ({n_obj} triangles) + built-in hand ({n_hand} triangles) from a contact "
        f"grasp, T = {scene.frames} frames ({scene.approach_frames} approach + "
        f"{scene.frames - scene.approach_frames} manipulation), seed {args.seed}. "
        f"GL: {gl_platform}, {results['meta']['gl_renderer']}, {os.cpu_count()} CPU cores, 1-min load average "
        f"{load_start:.1f} at the start and {load_end:.1f} at the end (other processes share the cores)."
    )
    print(f"Same scene check at the last frame (hoigen mask vs. plain SEG pass): {checks}.")
    print(f"ms per frame, median over {rounds} interleaved rounds (p25-p75).")
    print()
    print(
        "| size | A: lit colour pass (+ hand upload) | B: naive separate passes | hoigen: full output set | "
        "B / A | hoigen / A | hoigen / B | A's render alone (static scene) | hoigen's id pass alone (static) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sizes:
        m = r["ms_per_frame"]
        print(
            f"| {r['size']}² | {fmt(m['A'])} | {fmt(m['B'])} | {fmt(m['hoigen'])} | {r['ratio_B_over_A']:.2f}x | "
            f"{r['ratio_hoigen_over_A']:.2f}x | {r['ratio_hoigen_over_B']:.2f}x | {fmt(m['A static'])} | "
            f"{fmt(m['id pass alone'])} |"
        )
    print()
    print("Where hoigen's time goes (ms per frame, median over rounds; share of the hoigen median):")
    print()
    print("| size | " + " | ".join(BREAKDOWN_HEADERS) + " |")
    print("|---" * (len(BREAKDOWN_HEADERS) + 1) + "|")
    for r in sizes:
        b = r["hoigen_breakdown_ms"]
        total = r["ms_per_frame"]["hoigen"]["median"]
        cells = " | ".join(f"{b[k]:.1f} ({b[k] / total:.0%})" for k in (*BREAKDOWN, "rest"))
        print(f"| {r['size']}² | {cells} |")
    print()
    print("Baseline B by pass (ms per frame, mean over rounds):")
    print()
    print("| size | lit (incl. hand upload) | segmentation | normals (incl. mesh re-creation) | NOCS |")
    print("|---|---|---|---|---|")
    for r in sizes:
        p = r["baseline_b_passes_ms"]
        print(f"| {r['size']}² | {p['lit']:.1f} | {p['seg']:.1f} | {p['normal']:.1f} | {p['nocs']:.1f} |")
    print()
    print(
        f"Memory (hoigen Renderer at {memory['size']}², sequences of {memory['frames_per_sequence']} frames "
        "back to back, VmRSS):"
    )
    print()
    print("| frames rendered | resident memory MiB |")
    print("|---|---|")
    print(f"| {memory['frames_short']} | {memory['rss_short_mib']:.1f} |")
    print(f"| {memory['frames_long']} | {memory['rss_long_mib']:.1f} |")
    print()
    print(
        f"Growth {memory['frames_short']} -> {memory['frames_long']} frames: {memory['growth_percent']:+.1f} % "
        f"(peak so far {memory['peak_rss_mib']:.1f} MiB; "
        f"{memory['ms_per_frame_long_run']:.1f} ms per frame over the long run)."
    )
    print()
    print(f"Wall time: {wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
