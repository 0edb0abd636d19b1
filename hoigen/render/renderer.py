"""Render a grasp sequence: every per-frame output of SPEC §3 from one id pass per frame.

Scene description in, images and labels out; the renderer knows nothing about how the sequence was made. Per frame
one GL pass gives, for each pixel, the instance and triangle it sees (``gl.IdRasterizer``); ray/triangle
intersection gives the exact 3D point and barycentric coordinates (``labels``); from these come depth, instance
mask, camera-frame normals, NOCS, the DaS tracking colours and the shaded RGB. Two depth-only passes give the
amodal masks (amodal boxes, visible fractions). Skeleton, hand-object mask and point tracks need no GL.

Instance ids: 1 object, 2 hand (``INSTANCES``), and 3 arm when the hand carries the forearm stub
(``BuiltinHand(forearm=True)``). The arm is part of the scene, not of the hand: it is drawn in ``rgb``, ``depth``
and ``mask`` and hides what lies behind it in them, in ``nocs`` and in the visibility labels (``px_count_visib_*``,
``bbox_visib_*``, ``visib_fract_*``); the conditions (``normal``, ``skeleton``, ``hoimask``, ``tracking``, point
tracks) and everything else stay those of the scene without it (a second id pass without the arm gives them, so
they are byte for byte what a run without the stub writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hoigen.geometry.camera import Intrinsics
from hoigen.geometry.transforms import apply_transform
from hoigen.grasping.trajectory import Trajectory, transform_hand_params
from hoigen.hands.model import HandModel, HandParams
from hoigen.objects.asset import ObjectAsset
from hoigen.render import conditions
from hoigen.render.config import RenderConfig
from hoigen.render.gl import IdRasterizer
from hoigen.render.labels import (
    bbox_xywh,
    encode_depth,
    encode_nocs,
    encode_unit_normals,
    interpolate,
    pixel_hits,
    vertex_normals,
)
from hoigen.render.shading import Appearance, MeshAlbedo, linear_to_srgb, sample_appearance, shade

logger = logging.getLogger(__name__)

OBJECT_ID, HAND_ID, ARM_ID = 1, 2, 3
INSTANCES = {OBJECT_ID: "object", HAND_ID: "hand"}  # ARM_ID: "arm" is added when the forearm stub is drawn


@dataclass
class FrameRender:
    """One frame's images (H x W) and labels.

    Attributes:
        rgb: uint8 (H, W, 3); depth: uint16 (H, W), ``value * depth_scale`` = mm, 0 = no surface;
        mask: uint8 (H, W) instance ids; normal: uint8 (H, W, 3) (n + 1) / 2, OpenCV camera frame;
        nocs: uint16 (H, W, 3) (x + 0.5) * 65535 on object pixels; skeleton, hoimask, tracking: uint8 (H, W, 3).
        labels: JSON-ready per-frame record (SPEC §3 ``meta.json`` frame entry).
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    normal: np.ndarray
    nocs: np.ndarray
    skeleton: np.ndarray
    hoimask: np.ndarray
    tracking: np.ndarray
    labels: dict


@dataclass
class SequenceRender:
    """A rendered sequence: frames, point tracks and sequence-level metadata.

    Attributes:
        points: float32 (T, N, 3) camera-frame surface points, point i the same surface point in every frame.
        points_label: uint8 (N,) 0 object, 1 hand.
    """

    frames: list[FrameRender]
    points: np.ndarray
    points_label: np.ndarray
    meta: dict = field(default_factory=dict)


class Renderer:
    """Renders sequences with one reusable GL context (create one per process).

    Args:
        intrinsics: the camera.
        config: outputs and appearance.
    """

    def __init__(self, intrinsics: Intrinsics, config: RenderConfig | None = None):
        self.intrinsics = intrinsics
        self.config = config or RenderConfig()
        self.raster = IdRasterizer(intrinsics.width, intrinsics.height)
        self._albedo_cache: tuple[object, MeshAlbedo] | None = None

    def close(self) -> None:
        self.raster.close()

    def _object_albedo(self, obj: ObjectAsset, rng: np.random.Generator) -> MeshAlbedo:
        fallback = rng.uniform(0.15, 0.8, 3)
        if self._albedo_cache is None or self._albedo_cache[0] is not obj.mesh:
            self._albedo_cache = (obj.mesh, MeshAlbedo(obj.mesh, fallback))
        albedo = self._albedo_cache[1]
        albedo.constant = albedo.constant if albedo.kind != "constant" else fallback
        return albedo

    def render_sequence(
        self,
        obj: ObjectAsset,
        hand: HandModel,
        trajectory: Trajectory,
        T_cam_world: np.ndarray,
        rng: np.random.Generator,
    ) -> SequenceRender:
        """Render every frame of ``trajectory`` seen from ``T_cam_world`` (4, 4, OpenCV).

        ``rng`` draws the appearance (lights, background, skin) and the point-track samples.
        """
        cfg = self.config
        intr = self.intrinsics
        K = intr.K
        W, H = intr.width, intr.height
        n_frames = len(trajectory.t)
        appearance = sample_appearance(cfg.appearance, W, H, rng)
        background = np.clip(np.round(appearance.background * 255.0), 0, 255).astype(np.uint8)
        obj_albedo = self._object_albedo(obj, rng)

        # hand and object in the camera frame, every frame
        rest_wrist = hand.rest_joints(trajectory.hand.betas[0])[0]
        hand_cam = transform_hand_params(trajectory.hand, T_cam_world, rest_wrist)
        hand_out = hand.forward(hand_cam)
        T_cam_obj = np.einsum("ij,tjk->tik", T_cam_world, trajectory.T_world_obj)
        obj_v, obj_f = np.asarray(obj.mesh.vertices), np.asarray(obj.mesh.faces)
        hand_f = np.asarray(hand.faces)
        obj_normals_canon = vertex_normals(obj_v, obj_f)
        arm_skin = getattr(hand, "forearm_skin", None)
        arm_v = hand.forearm_vertices(hand_cam, hand_out) if arm_skin is not None else None

        # fixed surface samples -> point tracks
        obj_samples = conditions.sample_surface_points(obj_v, obj_f, cfg.points_object, rng)
        hand_samples = conditions.sample_surface_points(hand_out.vertices[0], hand_f, cfg.points_hand, rng)
        obj_pts = obj_samples.positions(obj_v)
        points = np.concatenate(
            [
                np.stack([apply_transform(T, obj_pts) for T in T_cam_obj]),
                hand_samples.positions(hand_out.vertices),
            ],
            axis=1,
        ).astype(np.float32)
        points_label = np.concatenate(
            [np.zeros(cfg.points_object, np.uint8), np.ones(cfg.points_hand, np.uint8)]
        )

        # DaS tracking colours, fixed at the first frame
        first = np.concatenate([apply_transform(T_cam_obj[0], obj_v), hand_out.vertices[0]])
        track = conditions.tracking_vertex_colors(first, K, W, H).astype(np.float64)
        track_obj, track_hand = track[: len(obj_v)], track[len(obj_v) :]

        frames = []
        for t in range(n_frames):
            hand_v = hand_out.vertices[t]
            joints3d = hand_out.joints[t]
            frame = self._render_frame(
                obj,
                obj_v,
                obj_f,
                obj_normals_canon,
                obj_albedo,
                T_cam_obj[t],
                hand_v,
                hand_f,
                appearance,
                background,
                track_obj,
                track_hand,
                K,
                W,
                H,
                None if arm_v is None else (arm_v[t], arm_skin.faces),
            )
            joints2d = intr.project(joints3d)
            frame.skeleton = conditions.draw_skeleton(joints2d, W, H)
            frame.labels.update(
                {
                    "T_cam_obj": T_cam_obj[t].tolist(),
                    "mano": {k: v[0] for k, v in hand_cam[t].to_dict().items()},
                    "joints3d": joints3d.tolist(),
                    "joints2d": joints2d.tolist(),
                }
            )
            frames.append(frame)
        instances = {**INSTANCES, **({ARM_ID: "arm"} if arm_v is not None else {})}
        meta = {
            "instances": {str(k): v for k, v in instances.items()},
            "appearance": appearance.metadata(),
            "object_albedo": obj_albedo.kind,
            "depth_scale": cfg.depth_scale,
        }
        return SequenceRender(frames=frames, points=points, points_label=points_label, meta=meta)

    def _render_frame(
        self,
        obj: ObjectAsset,
        obj_v: np.ndarray,
        obj_f: np.ndarray,
        obj_normals_canon: np.ndarray,
        obj_albedo: MeshAlbedo,
        T_cam_obj: np.ndarray,
        hand_v: np.ndarray,
        hand_f: np.ndarray,
        appearance: Appearance,
        background: np.ndarray,
        track_obj: np.ndarray,
        track_hand: np.ndarray,
        K: np.ndarray,
        W: int,
        H: int,
        arm: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> FrameRender:
        """``arm``: the forearm stub's camera-frame vertices (A, 3) and faces, or None."""
        cfg = self.config
        raster = self.raster
        raster.set_mesh("object", obj_v, obj_f, OBJECT_ID, T_cam_obj)
        raster.set_mesh("hand", hand_v, hand_f, HAND_ID, np.eye(4))
        seen = seen_face = None
        if arm is not None:  # the scene with the arm first, then without it (every other pass)
            raster.set_mesh("arm", arm[0], arm[1], ARM_ID, np.eye(4))
            seen, seen_face, _ = raster.rasterize(K, depth=False)
        raster.remove("arm")
        instance, face, _ = raster.rasterize(K, depth=False)
        obj_cam = apply_transform(T_cam_obj, obj_v)
        meshes = {OBJECT_ID: (obj_cam, obj_f), HAND_ID: (hand_v, hand_f)}
        hits = pixel_hits(instance, face, meshes, K)

        # every output is computed on the hit pixels only and written straight into its final image
        depth = np.zeros((H, W), np.uint16)
        depth[hits.ys, hits.xs] = encode_depth(hits.points[:, 2], cfg.depth_scale)
        normal_img = np.zeros((H, W, 3), np.uint8)
        nocs_img = np.zeros((H, W, 3), np.uint16)
        tracking = np.zeros((H, W, 3), np.uint8)
        rgb8 = background.copy()

        R = T_cam_obj[:3, :3]
        per_instance = {
            OBJECT_ID: (obj_f, obj_normals_canon @ R.T, obj_albedo, track_obj),
            HAND_ID: (hand_f, vertex_normals(hand_v, hand_f), None, track_hand),
        }
        labels = {}
        for inst, (faces, vnormals, albedo, track) in per_instance.items():
            sel = hits.select(inst)
            name = "obj" if inst == OBJECT_ID else "hand"
            labels[f"px_count_visib_{name}"] = int(len(sel))
            if len(sel) == 0:
                labels[f"bbox_visib_{name}"] = [-1, -1, -1, -1]
                continue
            ys, xs = hits.ys[sel], hits.xs[sel]
            x0, y0 = int(xs.min()), int(ys.min())
            labels[f"bbox_visib_{name}"] = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
            # one gather for every per-vertex attribute: normals, tracking colours (and canonical coordinates)
            attributes = [vnormals, track] + ([obj_v] if inst == OBJECT_ID else [])
            values = interpolate(hits, sel, faces, np.concatenate(attributes, axis=1))
            n = values[:, 0:3]
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
            n[hits.backfacing[sel]] *= -1.0  # an open mesh seen from behind: report the side we see
            normal_img[ys, xs] = encode_unit_normals(n)
            tracking[ys, xs] = np.clip(np.round(values[:, 3:6] * 255.0), 0, 255)
            if inst == OBJECT_ID:
                nocs_img[ys, xs] = encode_nocs(values[:, 6:9] / obj.scale)
                base = albedo(hits, sel, faces)
            else:
                base = np.broadcast_to(appearance.skin, (len(sel), 3))
            shaded = linear_to_srgb(shade(appearance, base, n, hits.points[sel]))
            rgb8[ys, xs] = np.clip(np.round(shaded * 255.0), 0, 255)

        if cfg.amodal:
            others = {OBJECT_ID: HAND_ID, HAND_ID: OBJECT_ID}
            for name, key, inst, verts in (
                ("obj", "object", OBJECT_ID, obj_cam),
                ("hand", "hand", HAND_ID, hand_v),
            ):
                if _may_be_occluded(verts, hits, others[inst], K, W, H):
                    full = raster.coverage(key) | (instance == inst)
                    count = int(np.count_nonzero(full))
                    labels[f"bbox_{name}"] = bbox_xywh(full)
                else:  # nothing can hide it: its amodal mask is its visible mask (no depth pass needed)
                    count = labels[f"px_count_visib_{name}"]
                    labels[f"bbox_{name}"] = labels[f"bbox_visib_{name}"]
                labels[f"px_count_all_{name}"] = count
                visible = labels[f"px_count_visib_{name}"]
                labels[f"visib_fract_{name}"] = float(visible / count) if count else 0.0
        mask = instance
        if seen is not None and (seen == ARM_ID).any():
            mask = seen
            self._draw_arm(seen, seen_face, arm, appearance, K, depth, rgb8, nocs_img, labels)
        return FrameRender(
            rgb=rgb8,
            depth=depth,
            mask=mask,
            normal=normal_img,
            nocs=nocs_img,
            skeleton=np.zeros((H, W, 3), np.uint8),
            hoimask=conditions.hoi_mask(instance, [HAND_ID], [OBJECT_ID]),
            tracking=tracking,
            labels=labels,
        )

    def _draw_arm(self, seen, seen_face, arm, appearance, K, depth, rgb8, nocs_img, labels) -> None:
        """Lay the arm over the scene without it: its depth and shading where it is in front (``seen`` = ARM_ID),
        no NOCS there, and the object's and hand's visible pixels, boxes and fractions recounted from ``seen``
        (their amodal counts do not change: the arm hides, it never adds)."""
        arm_v, arm_f = arm
        on_arm = np.where(seen == ARM_ID, ARM_ID, 0).astype(np.uint8)
        hits = pixel_hits(on_arm, seen_face, {ARM_ID: (arm_v, arm_f)}, K)
        everything = np.arange(len(hits.ys))
        n = interpolate(hits, everything, arm_f, vertex_normals(arm_v, arm_f))
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        n[hits.backfacing] *= -1.0  # an open sheet: report the side we see
        depth[hits.ys, hits.xs] = encode_depth(hits.points[:, 2], self.config.depth_scale)
        base = np.broadcast_to(appearance.skin, (len(everything), 3))
        shaded = linear_to_srgb(shade(appearance, base, n, hits.points))
        rgb8[hits.ys, hits.xs] = np.clip(np.round(shaded * 255.0), 0, 255)
        nocs_img[hits.ys, hits.xs] = 0
        for inst, name in ((OBJECT_ID, "obj"), (HAND_ID, "hand")):
            visible = seen == inst
            count = int(np.count_nonzero(visible))
            labels[f"px_count_visib_{name}"] = count
            labels[f"bbox_visib_{name}"] = bbox_xywh(visible)
            if f"px_count_all_{name}" in labels:
                total = labels[f"px_count_all_{name}"]
                labels[f"visib_fract_{name}"] = float(count / total) if total else 0.0


def _may_be_occluded(
    vertices: np.ndarray, hits, occluder: int, K: np.ndarray, width: int, height: int
) -> bool:
    """Whether some visible pixel of instance ``occluder`` lies inside the box of ``vertices`` (V, 3, camera frame)
    projected to the image — the only place it could hide them. Exact test for skipping an amodal pass: a mesh's
    silhouette lies inside the box of its projected vertices when every vertex is in front of the camera."""
    z = vertices[:, 2]
    if (z <= 1e-6).any():
        return True  # a vertex at or behind the camera: no bound from projection
    u = K[0, 0] * vertices[:, 0] / z + K[0, 2]
    v = K[1, 1] * vertices[:, 1] / z + K[1, 2]
    sel = hits.instance == occluder
    if not sel.any():
        return False
    xs, ys = hits.xs[sel], hits.ys[sel]
    inside = (xs >= np.floor(u.min()) - 1) & (xs <= np.ceil(u.max()) + 1)
    inside &= (ys >= np.floor(v.min()) - 1) & (ys <= np.ceil(v.max()) + 1)
    return bool(inside.any())


__all__ = [
    "ARM_ID",
    "HAND_ID",
    "INSTANCES",
    "OBJECT_ID",
    "FrameRender",
    "HandParams",
    "Renderer",
    "SequenceRender",
]
