"""The canonical-mesh store of an output folder (SPEC §3): every distinct object's mesh, once, content-addressed.

Layout: ``<out>/objects/<sha256>.ply`` (the digest is that of the file's bytes), plus ``<out>/objects/<sha256>.png``
for a texture image the PLY names in a ``comment TextureFile`` line. Each sample's ``meta.json`` refers to its
object's mesh as ``object.mesh = {"file": "objects/<sha256>.ply", "sha256": ..., "bytes": ...}`` (and
``"texture"`` when there is one); the manifest lists every stored file with its size and sha256, so the shards and
this folder are the whole dataset: exports and readers need nothing else (not the object folder, not the synthesis
recipe).

The PLY (binary little-endian) holds the mesh **in its canonical frame, metres** (SPEC §2): ``double x y z``,
optional ``uchar red green blue alpha`` (vertex colours) or ``float texture_u texture_v`` (with the texture PNG),
faces as ``list uchar int vertex_indices``. Any PLY reader (trimesh, Open3D, bop_toolkit's ``inout.load_ply``)
reads it; :func:`read_mesh_file` reads it without one and checks the digest.

The bytes are a pure function of the mesh (no timestamps), so the same object gives the same file, name and meta
whatever the worker; several workers may store the same mesh at once (each writes a private temporary file and
renames it, and both write the same bytes).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np

MESH_DIR = "objects"
_DIGEST_NAME = re.compile(r"^[0-9a-f]{64}\.(ply|png)$")


class MeshStoreError(ValueError):
    """A stored mesh is missing, or its bytes do not match its content address."""


# ---------------------------------------------------------------------------------------------------------------
# encoding


def _texture_png(mesh) -> bytes | None:
    visual = getattr(mesh, "visual", None)
    if getattr(visual, "kind", None) != "texture" or getattr(visual, "uv", None) is None:
        return None
    material = getattr(visual, "material", None)
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    if image is None or len(visual.uv) != len(mesh.vertices):
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_mesh(mesh) -> tuple[bytes, bytes | None]:
    """``(ply bytes, texture png bytes or None)`` of a ``trimesh.Trimesh`` (canonical frame, metres)."""
    vertices = np.asarray(mesh.vertices, dtype="<f8")
    faces = np.asarray(mesh.faces, dtype=np.int64)
    texture = _texture_png(mesh)
    texture_name = hashlib.sha256(texture).hexdigest() + ".png" if texture is not None else None
    fields: list[tuple[str, str, np.ndarray]] = [(n, "<f8", vertices[:, k]) for k, n in enumerate("xyz")]
    if texture is not None:
        uv = np.asarray(mesh.visual.uv, dtype=np.float64)
        fields += [("texture_u", "<f4", uv[:, 0]), ("texture_v", "<f4", uv[:, 1])]
    elif getattr(mesh.visual, "kind", None) in ("face", "vertex"):
        colors = np.asarray(mesh.visual.vertex_colors)
        if colors.shape == (len(vertices), 4):
            fields += [(n, "u1", colors[:, k]) for k, n in enumerate(("red", "green", "blue", "alpha"))]
    vertex_data = np.empty(len(vertices), dtype=[(n, t) for n, t, _ in fields])
    for name, _, values in fields:
        vertex_data[name] = values
    face_data = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_data["n"] = 3
    face_data["v"] = faces
    types = {"<f8": "double", "<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment hoigen canonical object mesh (metres)"]
    if texture_name:
        header.append(f"comment TextureFile {texture_name}")
    header.append(f"element vertex {len(vertices)}")
    header += [f"property {types[t]} {n}" for n, t, _ in fields]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    data = ("\n".join(header) + "\n").encode("ascii") + vertex_data.tobytes() + face_data.tobytes()
    return data, texture


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` unless a file of that size is there (content-addressed: same name, same bytes)."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    from hoigen.datasets.shards import ShardWriteError

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        raise ShardWriteError(
            exc.errno or errno.EIO,
            f"could not write {path}: {reason}; free space or fix permissions, then rerun the same command "
            "(finished shards are kept)",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def store_mesh(root: str | Path, mesh) -> dict:
    """Store ``mesh`` under ``root/objects/`` (if not there yet) and return its meta reference
    ``{"file": "objects/<sha256>.ply", "sha256", "bytes"[, "texture": "objects/<sha256>.png"]}``."""
    folder = Path(root) / MESH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    data, texture = encode_mesh(mesh)
    digest = hashlib.sha256(data).hexdigest()
    ref = {"file": f"{MESH_DIR}/{digest}.ply", "sha256": digest, "bytes": len(data)}
    if texture is not None:
        name = hashlib.sha256(texture).hexdigest() + ".png"
        _write_once(folder / name, texture)
        ref["texture"] = f"{MESH_DIR}/{name}"
    _write_once(folder / f"{digest}.ply", data)
    return ref


def store_files(ref: dict) -> list[str]:
    """The files (relative to the output folder) a mesh reference needs."""
    return [ref["file"], *([ref["texture"]] if ref.get("texture") else [])]


def file_records(root: str | Path, names) -> list[dict]:
    """``[{"name", "bytes", "sha256"}]`` of stored files (sorted), each checked against its content address.

    Raises:
        MeshStoreError: a file is missing or its bytes do not hash to its name.
    """
    records = []
    for name in sorted(set(names)):
        path = Path(root) / name
        if not path.is_file():
            raise MeshStoreError(
                f"the mesh store file {path} is missing; rerun the same synth command to write it again"
            )
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if Path(name).stem != digest:
            raise MeshStoreError(f"{path} is corrupt: its sha256 is {digest}; delete it and rerun synth")
        records.append({"name": name, "bytes": len(data), "sha256": digest})
    return records


# ---------------------------------------------------------------------------------------------------------------
# reading

_PLY_TYPES = {"double": "<f8", "float": "<f4", "uchar": "u1", "int": "<i4"}


def _parse_ply(data: bytes) -> tuple[np.ndarray, np.ndarray, dict, str | None]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    fields, n_vertices, n_faces, texture = [], 0, 0, None
    element = None
    for line in lines:
        tokens = line.split()
        if tokens[:2] == ["comment", "TextureFile"]:
            texture = tokens[2]
        elif tokens[:1] == ["element"]:
            element = tokens[1]
            if element == "vertex":
                n_vertices = int(tokens[2])
            elif element == "face":
                n_faces = int(tokens[2])
        elif tokens[:1] == ["property"] and element == "vertex":
            fields.append((tokens[2], _PLY_TYPES[tokens[1]]))
    vertex_dtype = np.dtype(fields)
    vertex_bytes = n_vertices * vertex_dtype.itemsize
    vertex_data = np.frombuffer(data, dtype=vertex_dtype, count=n_vertices, offset=end)
    face_data = np.frombuffer(
        data, dtype=[("n", "u1"), ("v", "<i4", (3,))], count=n_faces, offset=end + vertex_bytes
    )
    vertices = np.stack([vertex_data[k].astype(np.float64) for k in "xyz"], axis=1)
    extra = {name: vertex_data[name] for name, _ in fields if name not in ("x", "y", "z")}
    return vertices, face_data["v"].astype(np.int64), extra, texture


def read_mesh_file(path: str | Path, sha256: str | None = None):
    """A stored mesh (``trimesh.Trimesh``, canonical frame, metres; colours or texture restored).

    Raises:
        FileNotFoundError: the file is missing; MeshStoreError: its bytes do not match ``sha256`` (or its name).
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"the stored object mesh {path} does not exist; copy the whole output folder (shards/ and "
            f"{MESH_DIR}/ together), or pass the folder that holds {MESH_DIR}/"
        )
    data = path.read_bytes()
    expected = sha256 or (path.stem if _DIGEST_NAME.match(path.name) else None)
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise MeshStoreError(f"{path} is corrupt: its sha256 is {digest}, expected {expected}")
    vertices, faces, extra, texture = _parse_ply(data)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if "red" in extra:
        mesh.visual = trimesh.visual.ColorVisuals(
            mesh, vertex_colors=np.stack([extra[k] for k in ("red", "green", "blue", "alpha")], axis=1)
        )
    elif texture is not None and "texture_u" in extra:
        from PIL import Image

        image_path = path.parent / texture
        if image_path.is_file():
            image = Image.open(io.BytesIO(image_path.read_bytes()))
            image.load()
            uv = np.stack([extra["texture_u"], extra["texture_v"]], axis=1).astype(np.float64)
            mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    return mesh


def dataset_root(url: str | Path) -> Path:
    """The output folder a shard belongs to (``<out>/shards/x.tar`` -> ``<out>``)."""
    folder = Path(url).parent
    return folder.parent if folder.name == "shards" else folder


def object_mesh(sample: dict, root: str | Path | None = None):
    """The canonical mesh of a sequence or frame from :mod:`hoigen.datasets.reader` (``trimesh.Trimesh``, metres).

    ``root`` is the output folder; by default the one of the sample's shard (``sample["url"]``).

    Raises:
        ValueError: the sample's meta has no mesh reference (shards of schema ``hoigen-shards/1`` stored none);
        FileNotFoundError / MeshStoreError: the stored file is missing or corrupt.
    """
    meta = sample.get("meta", sample)
    obj = meta.get("object", {}) if isinstance(meta, dict) else {}
    ref = obj.get("mesh")
    if not isinstance(ref, dict) or "file" not in ref:
        raise ValueError(
            f"sample {sample.get('key', '?')}: meta.json has no object.mesh reference (schema "
            f"{meta.get('schema', '?')}); shards written before hoigen-shards/2 store no meshes, rerun synth"
        )
    if root is None:
        url = sample.get("url")
        if not url or url == "?":
            raise ValueError("the sample has no shard url; pass root=<the output folder>")
        root = dataset_root(url)
    return read_mesh_file(Path(root) / ref["file"], ref.get("sha256"))


__all__ = [
    "MESH_DIR",
    "MeshStoreError",
    "dataset_root",
    "encode_mesh",
    "file_records",
    "object_mesh",
    "read_mesh_file",
    "store_files",
    "store_mesh",
]
