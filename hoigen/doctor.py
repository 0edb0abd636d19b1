"""Environment report for ``hoigen doctor``: packages, GL platforms, GPU and the optional user assets.

Each check runs independently and never raises; GL platforms are probed in subprocesses because
``PYOPENGL_PLATFORM`` must be set before OpenGL is first imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` None means informational."""

    section: str
    name: str
    ok: bool | None
    detail: str


PACKAGES = {
    "numpy": "core",
    "scipy": "core",
    "trimesh": "core",
    "manifold3d": "built-in object booleans",
    "click": "command line",
    "torch": "MANO hand (extra: mano)",
    "smplx": "MANO hand (extra: mano)",
    "pyrender": "headless rendering (extra: render)",
    "PyOpenGL": "headless rendering (extra: render; 3.1.7+ for OSMesa)",
    "webdataset": "shards (optional: extra data)",
    "pycocotools": "COCO export (optional: extra data)",
    "ray": "multi-machine runs (optional: extra ray)",
    "diffusers": "HOIDiffusion photos / HVG-3D videos (optional: extra diffusion)",
    "transformers": "text encoders, MiDaS (optional: extra diffusion)",
    "accelerate": "hoigen train (optional: extra diffusion)",
    "av": "mp4 videos (optional: extra diffusion)",
    "mujoco-core": "grasp hold test, hoigen grasp --physics (optional: extra physics)",
}

_GL_PROBE = """
import os, sys
os.environ["PYOPENGL_PLATFORM"] = sys.argv[1]
import numpy as np, pyrender, trimesh
r = pyrender.OffscreenRenderer(32, 32)
scene = pyrender.Scene()
scene.add(pyrender.Mesh.from_trimesh(trimesh.creation.box((0.1, 0.1, 0.1))))
pose = np.eye(4); pose[2, 3] = 0.5
scene.add(pyrender.PerspectiveCamera(yfov=1.0), pose=pose)
color, depth = r.render(scene)
r.delete()
from OpenGL import GL
print("ok" if depth.max() > 0 else "blank")
"""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Check]:
    out = [Check("python", "python", True, f"{platform.python_version()} ({sys.executable})")]
    for dist, purpose in PACKAGES.items():
        version = _version(dist)
        ok = None if version is None and "optional" in purpose else version is not None
        out.append(Check("packages", dist, ok, f"{version or 'not installed'} — {purpose}"))
    return out


def check_gl(timeout: float = 60.0) -> list[Check]:
    out = []
    if _version("pyrender") is None:
        return [Check("rendering", "pyrender", False, "not installed: pip install 'hoigen[render]'")]
    for name in ("egl", "osmesa"):
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _GL_PROBE, name], capture_output=True, text=True, timeout=timeout
            )
            if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
                out.append(Check("rendering", name, True, "offscreen rendering works"))
            else:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                out.append(Check("rendering", name, False, last[:200]))
        except subprocess.TimeoutExpired:
            out.append(Check("rendering", name, False, f"probe timed out after {timeout:.0f} s"))
    if not any(c.ok for c in out):
        out.append(
            Check(
                "rendering",
                "fix",
                None,
                "install the system GL packages: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6",
            )
        )
    return out


def check_gpu() -> list[Check]:
    smi = shutil.which("nvidia-smi")
    detail = "nvidia-smi not found (CPU rendering with Mesa llvmpipe)"
    ok = None
    if smi:
        try:
            proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            detail = proc.stdout.strip() or proc.stderr.strip()
            ok = proc.returncode == 0
        except (OSError, subprocess.TimeoutExpired) as exc:
            detail, ok = f"nvidia-smi failed: {exc}", False
    return [Check("gpu", "nvidia", ok, detail)]


def check_assets() -> list[Check]:
    out = []
    mano_env = os.environ.get("HOIGEN_MANO_DIR", "")
    if not mano_env:
        out.append(
            Check(
                "assets", "MANO", None, "HOIGEN_MANO_DIR not set: the built-in hand is used (--hand builtin)"
            )
        )
    else:
        try:
            from hoigen.hands.mano import load_mano_data, resolve_mano_path

            path = resolve_mano_path(mano_env)
            data, _ = load_mano_data(path)
            out.append(
                Check("assets", "MANO", True, f"{path}: {data.num_vertices} vertices — enables --hand mano")
            )
        except Exception as exc:  # a report line, never a crash
            out.append(Check("assets", "MANO", False, f"HOIGEN_MANO_DIR={mano_env}: {exc}"))
    grabnet_env = os.environ.get("HOIGEN_GRABNET_DIR", "")
    if not grabnet_env:
        out.append(Check("assets", "GrabNet", None, "HOIGEN_GRABNET_DIR not set: --grasp contact only"))
    else:
        try:  # loads both checkpoints strictly with weights_only=True: a file with code in it is refused
            from hoigen.grasping.grabnet import describe_grabnet_dir

            out.append(Check("assets", "GrabNet", True, describe_grabnet_dir(grabnet_env)))
        except Exception as exc:  # a report line, never a crash
            out.append(Check("assets", "GrabNet", False, f"HOIGEN_GRABNET_DIR={grabnet_env}: {exc}"))
    out += check_hoidiffusion()
    video_dirs = (
        ("HOIGEN_COGVIDEOX_DIR", "CogVideoX-5B-I2V (--video hvg3d)", ("model_index.json", "config.json")),
        ("HOIGEN_HVG3D_DIR", "HVG-3D ControlNet (--video hvg3d)", ("hvg3d.safetensors", "config.json")),
    )
    for env, what, files in video_dirs:
        value = os.environ.get(env, "")
        if not value:
            out.append(Check("assets", what, None, f"{env} not set"))
            continue
        missing = (
            [f for f in files if not any(Path(value).rglob(f))] if Path(value).is_dir() else ["the folder"]
        )
        ok = not missing
        out.append(Check("assets", what, ok, f"{env}={value}" + (f": missing {missing}" if missing else "")))
    return out


def check_hoidiffusion() -> list[Check]:
    """HOIGEN_HOIDIFFUSION_DIR / HOIGEN_SD_DIR checked without loading weights.

    A converted folder: every component is built on the meta device from its config and compared with its weight
    files' headers (keys and shapes). Released files: the whole conversion is dry-run on the meta device.
    """
    out = []
    for env, what in (("HOIGEN_HOIDIFFUSION_DIR", "HOIDiffusion"), ("HOIGEN_SD_DIR", "SD-1.x (--sd)")):
        value = os.environ.get(env, "")
        if not value:
            if env == "HOIGEN_HOIDIFFUSION_DIR":
                detail = f"{env} not set: --photo hoidiffusion needs --hoidiffusion DIR"
                out.append(Check("assets", what, None, detail))
            continue
        if _version("diffusers") is None:
            out.append(Check("assets", what, False, f"{env}={value}: needs pip install 'hoigen[diffusion]'"))
            continue
        try:
            from hoigen.diffusion.hoidiffusion.weights import check_released, check_weights, folder_kind

            folder = Path(value).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} is not a folder")
            if folder_kind(folder) == "released":
                report = check_released(folder)
                params = sum(report["parameters"].values())
                detail = (
                    f"released files, {params / 1e6:.1f} M parameters convert cleanly (dry run); converted on "
                    "first use, or run `hoigen convert hoidiffusion`"
                )
            else:
                report = check_weights(folder)
                parts = [
                    f"{c} {report[c]['parameters'] / 1e6:.1f} M"
                    for c in ("unet", "vae", "text_encoder")
                    if c in report
                ]
                if "adapters" in report:
                    parts.append(f"{len(report['adapters'])} adapters")
                random = ""
                record = folder / "hoigen_weights.json"
                if record.is_file() and json.loads(record.read_text()).get("random"):
                    random = " — RANDOM fixture weights (images are noise)"
                detail = f"{report['kind']} folder: {', '.join(parts)}; keys and shapes match{random}"
            out.append(Check("assets", what, True, f"{env}={value}: {detail}"))
        except Exception as exc:  # a report line, never a crash
            out.append(Check("assets", what, False, f"{env}={value}: {exc}"))
    return out


def collect(gl: bool = True) -> list[Check]:
    """All checks, in report order."""
    checks = check_packages()
    if gl:
        checks += check_gl()
    return checks + check_gpu() + check_assets()
