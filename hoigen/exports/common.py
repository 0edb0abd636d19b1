"""What every exporter shares: choosing a frame's image, and reading a sample's object mesh from the mesh store."""

from __future__ import annotations

import numpy as np

IMAGES = ("rgb", "photo")
"""Frame images an export can write: the render, or the photoreal frame of an appearance model."""


def check_image(image: str) -> None:
    if image not in IMAGES:
        raise ValueError(f"image must be one of {IMAGES}, got {image!r}")


def frame_image(sequence: dict, t: int, image: str = "rgb"):
    """The image an export writes for frame ``t`` of ``sequence`` (decoded array or PNG bytes, as read).

    The one place where exports pick the frame image; a frame without it is a ValueError naming the member.
    """
    frame = sequence["frames"][t]
    if image not in frame:
        hint = (
            "image='photo' needs the photoreal frames of an appearance model; use image='rgb'"
            if image == "photo"
            else f"the exportable images are {IMAGES}"
        )
        raise ValueError(
            f"sample {sequence.get('key', '?')} in {sequence.get('url', '?')} has no f{t:03d}.{image}.png "
            f"member ({hint})"
        )
    if image == "photo":
        from hoigen.datasets.photo import photo_crop, photo_in_frame

        crop = photo_crop(sequence.get("meta", {}))
        if crop is not None:  # crop-mode photos go back into the frame's camera: labels stay exact
            value, rgb = frame[image], frame.get("rgb")
            if isinstance(value, bytes | bytearray) or isinstance(rgb, bytes | bytearray):
                from hoigen.render.png import decode_png, encode_png

                pasted = photo_in_frame(decode_png(value), decode_png(rgb) if isinstance(rgb, bytes | bytearray) else rgb, crop)
                return encode_png(pasted) if isinstance(value, bytes | bytearray) else pasted
            return photo_in_frame(value, rgb, crop)
    return frame[image]


class MeshCache:
    """Reads each sample's canonical mesh from the output folder's mesh store (``hoigen.datasets.meshes``), once
    per stored file."""

    def __init__(self, size: int = 32):
        self._meshes: dict[str, object] = {}
        self._size = size

    def mesh(self, sequence: dict):
        """``(trimesh.Trimesh, reference)`` of the sequence's object (canonical frame, metres)."""
        from hoigen.datasets.meshes import object_mesh

        ref = sequence["meta"].get("object", {}).get("mesh")
        name = ref.get("sha256") if isinstance(ref, dict) else None
        if name is not None and name in self._meshes:
            return self._meshes[name], ref
        mesh = object_mesh(sequence)
        if name is not None:
            self._meshes[name] = mesh
            if len(self._meshes) > self._size:
                self._meshes.pop(next(iter(self._meshes)))
        return mesh, ref


def vertices_faces(mesh) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)
