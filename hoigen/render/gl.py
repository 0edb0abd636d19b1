"""Headless OpenGL through pyrender: platform choice and the id rasteriser.

The GL platform (``PYOPENGL_PLATFORM``) must be fixed before OpenGL is first imported: :func:`select_platform`
keeps a value the user set, otherwise probes EGL (NVIDIA or Mesa's CPU renderer) and then OSMesa in short-lived
subprocesses, and exports the winner so worker processes inherit it.

:class:`IdRasterizer` draws every mesh once with a flat shader that writes the triangle index (``gl_PrimitiveID``
+ 1, 24 bits in RGB) and the mesh's instance id (alpha) — multisampling is switched off so ids are never blended —
and returns them with the depth buffer. Every label hoigen writes is derived from this one pass.

pyrender's ``IntrinsicsCamera`` puts pixel centres at half-integers; hoigen's ``K`` (SPEC §2) puts them at integers,
so the principal point is shifted by +0.5 px when the camera is built.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHADER_DIR = Path(__file__).resolve().parent / "shaders"
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"
_PROBE = """
import os, sys
os.environ["PYOPENGL_PLATFORM"] = sys.argv[1]
import pyrender
r = pyrender.OffscreenRenderer(8, 8)
r.delete()
print("ok")
"""


_SINGLE_SAMPLE = {"active": False}
_LIVE: weakref.WeakSet = weakref.WeakSet()  # rasterisers whose GL context is open


def _install_single_sample_switch(renderer_module, GL) -> None:
    """pyrender allocates 4x multisampled buffers and resolves them with a linear blit, which blends ids at
    edges. Route its allocation through a switch that hoigen turns on only while its own renderer draws, so
    other pyrender renderers in the process keep their anti-aliasing."""
    if getattr(renderer_module, "_hoigen_single_sample", False):
        return
    original = renderer_module.glRenderbufferStorageMultisample

    def storage(target, samples, internal_format, width, height):
        return original(target, 0 if _SINGLE_SAMPLE["active"] else samples, internal_format, width, height)

    renderer_module.glRenderbufferStorageMultisample = storage
    renderer_module._hoigen_single_sample = True


class RenderError(RuntimeError):
    """No usable OpenGL platform, or the renderer failed."""


def _probe(platform: str, timeout: float) -> str | None:
    """None when ``platform`` works in a fresh interpreter, else the last line of its error."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, platform], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
        return None
    return (proc.stderr.strip().splitlines() or ["failed without output"])[-1]


def select_platform(timeout: float = 60.0) -> str:
    """The GL platform for this process (and its children): ``PYOPENGL_PLATFORM`` if set, else the first of
    ``egl``, ``osmesa`` that works. Raises :class:`RenderError` naming the system packages when none does."""
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    if chosen:
        return chosen
    if "OpenGL" in sys.modules:
        raise RenderError(
            "OpenGL was imported before hoigen chose a GL platform; set PYOPENGL_PLATFORM=egl (or osmesa) "
            "before importing OpenGL/pyrender"
        )
    errors = {}
    for platform in ("egl", "osmesa"):
        error = _probe(platform, timeout)
        if error is None:
            os.environ["PYOPENGL_PLATFORM"] = platform
            logger.info("GL platform: %s", platform)
            return platform
        errors[platform] = error
    details = "; ".join(f"{k}: {v}" for k, v in errors.items())
    raise RenderError(
        f"no headless OpenGL platform works ({details}). Install the system packages ({GL_PACKAGES}, e.g. "
        f"`apt-get install {GL_PACKAGES}`) and PyOpenGL 3.1.7 for OSMesa; run `hoigen doctor` for a full report"
    )


class IdRasterizer:
    """One offscreen GL context (create once per process and reuse: contexts leak when made per frame).

    Args:
        width, height: image size in pixels.
        znear, zfar: clipping planes, metres.
    """

    def __init__(self, width: int, height: int, znear: float = 0.01, zfar: float = 10.0):
        select_platform()
        try:
            import pyrender
            import pyrender.renderer
            from OpenGL import GL
            from pyrender.shader_program import ShaderProgramCache
        except ImportError as exc:
            raise ImportError(
                f"rendering needs pyrender and PyOpenGL: pip install 'hoigen[render]' ({exc})"
            ) from exc

        _install_single_sample_switch(pyrender.renderer, GL)
        self._pyrender = pyrender
        try:
            self._renderer = pyrender.OffscreenRenderer(width, height)
        except Exception as exc:  # the GL stack reports many kinds of failure
            raise RenderError(
                f"could not create an offscreen GL context on {os.environ.get('PYOPENGL_PLATFORM')!r}: {exc}. "
                f"Check the system packages ({GL_PACKAGES}) with `hoigen doctor`"
            ) from exc

        class _IdShaders(ShaderProgramCache):
            """pyrender's shaders, except the flat pair, which hoigen replaces with its id shaders."""

            def get_program(self, vertex_shader, fragment_shader, geometry_shader=None, defines=None):
                if vertex_shader == "flat.vert" and fragment_shader == "flat.frag":
                    vertex_shader, fragment_shader = (
                        str(SHADER_DIR / "flat.vert"),
                        str(SHADER_DIR / "flat.frag"),
                    )
                return super().get_program(vertex_shader, fragment_shader, geometry_shader, defines)

        self._renderer._renderer._program_cache = _IdShaders()
        self._lean = False
        self._install_lean_readback()
        _LIVE.add(self)
        self.width, self.height = width, height
        self.znear, self.zfar = znear, zfar
        self._scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
        self._camera_node = None
        self._static: dict[object, tuple] = {}  # key -> (mesh node, vertices id, faces id)
        self._flags = (
            pyrender.RenderFlags.FLAT | pyrender.RenderFlags.RGBA | pyrender.RenderFlags.SKIP_CULL_FACES
        )

    def _install_lean_readback(self) -> None:
        """pyrender reads back depth and converts it to metres on every pass; the id pass needs only its colour
        buffer and the amodal passes only coverage. While ``self._lean`` is set, the renderer's readback returns
        the RGBA image (colour passes) or a boolean coverage mask (depth-only passes) and nothing else."""
        import types

        from OpenGL import GL

        inner = self._renderer._renderer
        original = inner._read_main_framebuffer
        owner = self
        depth_only = self._pyrender.RenderFlags.DEPTH_ONLY

        def read(renderer, scene, flags):
            if not owner._lean:
                return original(scene, flags)
            width, height = renderer._main_fb_dims
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, renderer._main_fb_ms)
            GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, renderer._main_fb)
            if flags & depth_only:
                GL.glBlitFramebuffer(
                    0, 0, width, height, 0, 0, width, height, GL.GL_DEPTH_BUFFER_BIT, GL.GL_NEAREST
                )
                GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, renderer._main_fb)
                raw = GL.glReadPixels(0, 0, width, height, GL.GL_DEPTH_COMPONENT, GL.GL_FLOAT)
                return np.frombuffer(raw, dtype=np.float32).reshape(height, width)[::-1] < 1.0
            GL.glBlitFramebuffer(
                0, 0, width, height, 0, 0, width, height, GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST
            )
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, renderer._main_fb)
            raw = GL.glReadPixels(0, 0, width, height, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
            return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 4)[::-1], None

        inner._read_main_framebuffer = types.MethodType(read, inner)

    def _mesh(self, vertices: np.ndarray, faces: np.ndarray, instance: int):
        pyrender = self._pyrender
        if not 0 < instance < 256:
            raise ValueError(f"instance ids must be in 1..255, got {instance}")
        material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[instance / 255.0, 0.0, 0.0, 1.0])
        primitive = pyrender.Primitive(
            positions=np.ascontiguousarray(vertices, dtype=np.float32),
            indices=np.ascontiguousarray(faces, dtype=np.uint32),
            material=material,
            mode=pyrender.constants.GLTF.TRIANGLES,
        )
        return pyrender.Mesh([primitive])

    def set_mesh(self, key, vertices: np.ndarray, faces: np.ndarray, instance: int, pose: np.ndarray) -> None:
        """Place a mesh for the next :meth:`rasterize`.

        Args:
            key: a name for the mesh; calling again with the same ``vertices`` array object only moves it.
            vertices: (V, 3) metres in the mesh's own frame; faces: (F, 3).
            instance: 1..255, written to the instance map.
            pose: (4, 4) ``T_cam_mesh`` in the OpenCV camera frame.
        """
        gl_pose = np.diag([1.0, -1.0, -1.0, 1.0]) @ np.asarray(
            pose, dtype=np.float64
        )  # OpenCV -> OpenGL camera
        entry = self._static.get(key)
        if entry is not None and entry[1] is vertices and entry[2] is faces and entry[3] == instance:
            self._scene.set_pose(entry[0], gl_pose)
            return
        if entry is not None:
            self._scene.remove_node(entry[0])
        node = self._scene.add(self._mesh(vertices, faces, instance), pose=gl_pose)
        self._static[key] = (node, vertices, faces, instance)

    def remove(self, key) -> None:
        entry = self._static.pop(key, None)
        if entry is not None:
            self._scene.remove_node(entry[0])

    def rasterize(
        self, K: np.ndarray, depth: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Render the placed meshes with intrinsics ``K`` (3, 3), OpenCV convention.

        Returns:
            instance: (H, W) uint8, 0 where no surface; face: (H, W) int64 triangle index within its mesh, -1
            where none; depth: (H, W) float32 metres along z from the depth buffer (0 where none), or None when
            ``depth`` is False (the renderer computes exact depth from the hits and skips the readback).
        """
        pyrender = self._pyrender
        K = np.asarray(K, dtype=np.float64)
        camera = pyrender.IntrinsicsCamera(
            K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=self.znear, zfar=self.zfar
        )
        if self._camera_node is not None:
            self._scene.remove_node(self._camera_node)
        self._camera_node = self._scene.add(camera, pose=np.eye(4))
        self._lean = not depth
        try:
            color, depth_m = self._render(self._flags)
        finally:
            self._lean = False
        c = color.astype(np.int64)
        face = c[..., 0] + (c[..., 1] << 8) + (c[..., 2] << 16) - 1
        return color[..., 3].copy(), face, depth_m

    def coverage(self, key) -> np.ndarray:
        """(H, W) bool: where the mesh ``key`` alone covers the image (its amodal mask), from a depth-only pass
        with the camera of the last :meth:`rasterize`."""
        nodes = {k: v[0] for k, v in self._static.items()}
        if key not in nodes:
            raise KeyError(f"no mesh {key!r} placed")
        for k, node in nodes.items():
            node.mesh.is_visible = k == key
        self._lean = True
        try:
            covered = self._render(self._pyrender.RenderFlags.DEPTH_ONLY)
        finally:
            self._lean = False
            for node in nodes.values():
                node.mesh.is_visible = True
        return covered

    def _render(self, flags):
        _SINGLE_SAMPLE["active"] = True
        try:
            return self._renderer.render(self._scene, flags=flags)
        except Exception as exc:
            raise RenderError(f"rendering failed: {exc}") from exc
        finally:
            _SINGLE_SAMPLE["active"] = False

    def close(self) -> None:
        """Free this context. On EGL every pyrender renderer of the process shares one display, which pyrender's
        own ``delete`` terminates; while other rasterisers are alive only this context is destroyed."""
        renderer, self._renderer = self._renderer, None
        if renderer is None:
            return
        _LIVE.discard(self)
        platform = renderer._platform
        if _LIVE and getattr(platform, "_egl_display", None) is not None:
            from OpenGL.EGL import eglDestroyContext

            platform.make_current()
            renderer._renderer.delete()
            eglDestroyContext(platform._egl_display, platform._egl_context)
            # pyrender's renderer and platform __del__ methods would terminate the shared display: disarm them
            platform._egl_context = platform._egl_display = None
            renderer._platform = renderer._renderer = None
        else:
            renderer.delete()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass
