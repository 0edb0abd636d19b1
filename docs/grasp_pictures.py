"""The README's grasp pictures: one ``contact`` grasp of each built-in category and YCB sample, posed built-in v2 hand.

    python docs/grasp_pictures.py [--out docs/hand_v2_grasps.png] [--ycb ../shared/data/ycb] [--seed 0]

Each tile is a pyrender view (EGL or OSMesa) from the side of the index finger, where the flexion of the fingers
around the object shows, tilted 35 degrees toward the back of the hand; the object in its own colours where it has
them, the hand in one skin tone. The grasp type and whether the grasp held in the MuJoCo hold test (when
``hoigen[physics]`` is installed) are written under each tile.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

CATEGORIES = ("bottle", "bowl", "camera", "can", "laptop", "mug")


def tile(obj, hand, grasp, size: int = 320) -> np.ndarray:
    import pyrender
    import trimesh

    from hoigen.geometry.rotations import axis_angle_to_matrix
    from hoigen.hands.lbs import shaped_rest

    out = hand.forward(grasp.params)
    verts = out.vertices[0]
    _, rest_j = shaped_rest(hand.data, grasp.params.betas[0])
    rot = axis_angle_to_matrix(grasp.params.global_orient)[0]
    across = rot @ (rest_j[1] - rest_j[7])  # pinky -> index knuckles
    across /= np.linalg.norm(across)
    normal = np.asarray(grasp.approach["normal"], dtype=np.float64)
    target = 0.5 * (verts.mean(axis=0) + np.asarray(grasp.approach["point"]))
    view = across * np.cos(np.radians(35)) + normal * np.sin(np.radians(35))
    eye = target + 0.30 * view / np.linalg.norm(view)
    scene = pyrender.Scene(ambient_light=[0.35, 0.35, 0.35], bg_color=[0.93, 0.93, 0.93, 1.0])
    mesh = obj.mesh.copy()
    has_colour = getattr(mesh.visual, "kind", None) in ("vertex", "face")
    if has_colour:
        scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=False))
    else:
        material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=[0.55, 0.62, 0.72, 1.0], roughnessFactor=0.7
        )
        scene.add(pyrender.Mesh.from_trimesh(trimesh.Trimesh(mesh.vertices, mesh.faces), material=material))
    skin = pyrender.MetallicRoughnessMaterial(baseColorFactor=[0.87, 0.64, 0.52, 1.0], roughnessFactor=0.8)
    scene.add(pyrender.Mesh.from_trimesh(trimesh.Trimesh(verts, hand.faces, process=False), material=skin))
    from hoigen.geometry.camera import look_at

    # hoigen's OpenCV camera pose (y down, z forward) -> pyrender's OpenGL one (y up, z backward)
    pose = look_at(eye, target, np.asarray(obj.up, dtype=np.float64)) @ np.diag([1.0, -1.0, -1.0, 1.0])
    scene.add(pyrender.PerspectiveCamera(yfov=np.radians(40)), pose=pose)
    scene.add(pyrender.DirectionalLight(intensity=3.5), pose=pose)
    renderer = pyrender.OffscreenRenderer(size, size)
    try:
        colour, _ = renderer.render(scene)
    finally:
        renderer.delete()
    return colour


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("hand_v2_grasps.png"))
    parser.add_argument(
        "--ycb", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    from hoigen.grasping import ContactGraspSampler, GraspConfig, GraspError
    from hoigen.hands import BuiltinHand
    from hoigen.objects import BuiltinSource, FolderSource

    hand = BuiltinHand()
    objects = [
        BuiltinSource((c,)).object_for(0, np.random.default_rng([args.seed, k]))
        for k, c in enumerate(CATEGORIES)
    ]
    if args.ycb.is_dir():
        ycb = FolderSource(args.ycb)
        objects += [ycb.object_for(i, np.random.default_rng(args.seed)) for i in range(len(ycb))]
    try:
        from hoigen.grasping.physics import HoldTest
    except ImportError:
        HoldTest = None
    tiles = []
    for k, obj in enumerate(objects):
        grasp = None
        for attempt in range(3):
            try:
                grasp = ContactGraspSampler(obj, hand, GraspConfig()).sample(
                    np.random.default_rng([args.seed, k, attempt])
                )
                break
            except GraspError as exc:
                print(f"{obj.id}: {exc}")
        if grasp is None:
            continue
        label = f"{obj.id.split('-')[0]}: {grasp.metrics['grasp_type']}"
        if HoldTest is not None:
            try:
                held = HoldTest(obj.mesh).run(hand, grasp.params)
                label += f", held {held['held_directions']}/6"
            except ImportError:
                pass
        image = Image.fromarray(tile(obj, hand, grasp, args.size))
        ImageDraw.Draw(image).text((8, args.size - 18), label, fill=(20, 20, 20))
        tiles.append(image)
        print(label)
    cols = 3
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * args.size, rows * args.size), (255, 255, 255))
    for i, image in enumerate(tiles):
        sheet.paste(image, ((i % cols) * args.size, (i // cols) * args.size))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
