"""The output folder's lock, the run claims of concurrent processes, and the pin of a run's inputs.

Several ``hoigen synth`` processes may legitimately share one output folder: each with its own ``--shards I:J``
range (a SLURM array), or Ray workers on a shared filesystem. What they must not do is write the same shards, mix
configurations, or overwrite each other's ``run.json`` / ``manifest.json``. Three pieces keep that true:

- :func:`folder_lock`: an exclusive ``fcntl.flock`` on ``OUT/.hoigen.lock``, held for the few moments a process
  reads or writes the run pin (``run.json``) and the manifest. It holds the holder's pid and host; a lock left by
  a process that died is taken over (the kernel released it), with a log line.
- :class:`RunClaim`: every running process registers the shard range it produces in ``OUT/.hoigen-runs/`` and
  holds an exclusive flock on that file for its whole run, so a claim is alive exactly while its process is. A
  new run whose range overlaps a live claim, or whose configuration differs from a live run's, is refused with
  :class:`OutputBusyError` naming the other process (pid, host, shards).
- :func:`pin_file` / :func:`pin_inputs`: the identity (name, size, sha256) of the files a run reads — the object
  meshes, the MANO file, GrabNet's files; later stages (diffusion weights) add theirs with :func:`pin_file` — so a
  resume with changed inputs is refused, naming what changed (:func:`describe_differences`).

flock works on local filesystems and, on Linux, on NFS (emulated with POSIX byte-range locks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = ".hoigen.lock"
RUNS_DIR = ".hoigen-runs"
LOCK_TIMEOUT_S = 120.0  # the lock is only held for metadata; a longer wait means something is stuck


class OutputBusyError(ValueError):
    """Another live process holds what this run needs (the folder lock for too long, or overlapping shards)."""


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}


def _describe(holder: dict) -> str:
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    if "shards" in holder:
        a, b = holder["shards"]
        text += f", shards {a}:{b}"
    if "since" in holder:
        text += ", started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
    return text


def _read_json(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
        value = json.loads(data) if data.strip() else {}
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(fd: int, value: dict) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(value, sort_keys=True).encode())


def _open_locked(path: Path, timeout: float, what: str) -> int:
    """Open ``path`` (created if needed) and take an exclusive flock on it, waiting up to ``timeout`` s.

    The file may be removed by its previous holder after we opened it; the inode is re-checked after locking.
    """
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        holder = _read_json(fd)
                        raise OutputBusyError(
                            f"another hoigen process ({_describe(holder)}) has held {what} for more than "
                            f"{timeout:.0f} s; if it is stuck, stop it and rerun"
                        ) from None
                    time.sleep(0.02)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file while we waited: lock the new one


@contextlib.contextmanager
def folder_lock(out: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the exclusive lock of output folder ``out`` (for the run pin and the manifest)."""
    path = Path(out) / LOCK_NAME
    try:
        fd = _open_locked(path, timeout, f"the lock of {out}")
    except OSError as exc:
        raise OSError(exc.errno or errno.EIO, f"cannot lock the output folder {out}: {exc}") from exc
    try:
        stale = _read_json(fd)
        if stale:
            logger.warning(
                "taking over the lock of %s left by %s (that process is gone)", out, _describe(stale)
            )
        _write_json(fd, _holder())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: waiters re-check the inode and lock a fresh file
        os.close(fd)


@dataclass
class RunClaim:
    """A live process's claim on shards ``[start, stop)`` of an output folder (see the module docstring).

    Attributes:
        path: the claim file in ``OUT/.hoigen-runs/``; info: pid, host, shards, config digest, start time.
    """

    path: Path
    info: dict
    _fd: int | None = None

    def release(self) -> None:
        """Drop the claim (idempotent). Call it under :func:`folder_lock` when possible."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only when no other claim is left


def live_claims(out: Path) -> list[dict]:
    """The claims of processes still running (claims of dead processes are removed). Call under the lock."""
    runs = Path(out) / RUNS_DIR
    if not runs.is_dir():
        return []
    alive = []
    for path in sorted(runs.glob("*.json")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            info = _read_json(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive.append(info)
                continue
            logger.warning("removing the claim of %s (that process is gone)", _describe(info))
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(fd)
    return alive


def claim_shards(out: Path, start: int, stop: int, config_digest: str) -> RunClaim:
    """Register this process as producing shards ``[start, stop)`` of ``out``. Call under :func:`folder_lock`.

    Raises:
        OutputBusyError: a live run claims an overlapping range, or runs with another configuration.
    """
    for other in live_claims(out):
        a, b = other.get("shards", (0, 0))
        if other.get("config") != config_digest:
            raise OutputBusyError(
                f"another run ({_describe(other)}) is writing to {out} with a different configuration; "
                "wait for it to finish or use another --out"
            )
        if a < stop and start < b:
            raise OutputBusyError(
                f"another run ({_describe(other)}) is writing to {out} and its shards overlap this run's "
                f"{start}:{stop}; wait for it to finish, or give each process its own --shards I:J range"
            )
    runs = Path(out) / RUNS_DIR
    runs.mkdir(exist_ok=True)
    info = {**_holder(), "shards": [start, stop], "config": config_digest}
    path = runs / f"{info['host']}-{info['pid']}-{uuid.uuid4().hex[:8]}.json"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
    _write_json(fd, info)
    return RunClaim(path, info, fd)


def claimed_by_others(out: Path, claim: RunClaim | None) -> set[int]:
    """Shard numbers that live runs other than ``claim`` are producing. Call under :func:`folder_lock`."""
    own = claim.info if claim is not None else {}
    shards: set[int] = set()
    for other in live_claims(out):
        if (other.get("pid"), other.get("host"), other.get("since")) == (
            own.get("pid"),
            own.get("host"),
            own.get("since"),
        ):
            continue
        a, b = other.get("shards", (0, 0))
        shards.update(range(a, b))
    return shards


# ---------------------------------------------------------------------------------------------------------------
# pinned inputs


def pin_file(path: str | Path, name: str | None = None) -> dict:
    """Identity of one input file: ``{"name", "size", "sha256"}`` (``name`` defaults to the file name).

    Stages that read weights or data files pin them with this and add the result to the run's inputs.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": name or path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def pin_inputs(config) -> dict:
    """The identity of every file a run of ``config`` (a :class:`~hoigen.config.RunConfig`) reads.

    Returns ``{"objects": {relpath: {size, sha256}} (folder sources; other sources list their files with an
    ``input_files()`` method), "mano": {...} (``--hand mano``), "grabnet": {file name: {...}} (``--grasp
    grabnet``), <section>: {...}}``: a config section with an ``input_files() -> [(name, path)]`` method (e.g.
    the diffusion weights of a photo stage) is pinned under its own name. Built-in objects and the built-in hand
    need no files.
    """
    from hoigen.objects import open_source

    inputs: dict = {}
    source = open_source(config.objects.source, config.objects.units, config.objects.categories)
    files = getattr(source, "input_files", None)  # sources other than folders may list their files
    if callable(files):
        listed = list(files())
    else:
        listed = []
        for entry in getattr(source, "entries", ()):
            listed.append((entry.relpath, entry.path))
            folder = Path(entry.relpath).parent
            for extra in companion_files(entry.path):
                try:
                    rel = (folder / extra.relative_to(entry.path.parent)).as_posix()
                except ValueError:  # outside the mesh's folder
                    rel = str(extra)
                listed.append((rel, extra))
        listed = sorted(set(listed))
    if listed:
        inputs["objects"] = {rel: _size_sha(pin_file(path)) for rel, path in sorted(listed)}
    if config.hand.model == "mano":
        from hoigen.hands.mano import resolve_mano_path

        inputs["mano"] = pin_file(resolve_mano_path(config.hand.mano or None))
    if config.grasp.method == "grabnet":
        from hoigen.grasping.grabnet_data import find_grabnet_files

        found = find_grabnet_files(config.grasp.grabnet or None)
        inputs["grabnet"] = {name: _size_sha(pin_file(p)) for name, p in sorted(found.items())}
    for section in dataclasses.fields(config):  # a config section that reads files lists them itself
        value = getattr(config, section.name)
        files = getattr(value, "input_files", None)
        if callable(files) and (listed := sorted(files())):
            inputs[section.name] = {name: _size_sha(pin_file(p)) for name, p in listed}
    return inputs


def companion_files(mesh: Path) -> list[Path]:
    """Files a mesh file reads besides itself: an OBJ's material libraries (``mtllib``) and the texture images
    they name (``map_Kd``), where they exist."""
    mesh = Path(mesh)
    if mesh.suffix.lower() != ".obj":
        return []
    found: list[Path] = []
    try:
        with mesh.open("r", encoding="utf-8", errors="replace") as fh:
            libraries = [name for line in fh if line.startswith("mtllib") for name in line.split()[1:]]
        for library in libraries:
            mtl = mesh.parent / library.replace("\\", "/")
            if not mtl.is_file():
                continue
            found.append(mtl)
            with mtl.open("r", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    tokens = line.split()
                    if len(tokens) >= 2 and tokens[0] == "map_Kd":
                        image = mtl.parent / tokens[-1].replace("\\", "/")
                        if image.is_file():
                            found.append(image)
    except OSError:
        return found
    return sorted(set(found))


def _size_sha(pin: dict) -> dict:
    return {"size": pin["size"], "sha256": pin["sha256"]}


def config_digest(record: dict) -> str:
    """A short digest of a run record (config, n, shard size, inputs) for comparing live runs."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def describe_differences(pinned: dict, current: dict, limit: int = 8) -> list[str]:
    """Human lines for every key path where ``current`` differs from ``pinned`` (nested dicts are walked).

    ``inputs.objects['mug.obj']: added`` / ``removed`` / ``changed (size 120 -> 130, sha256 1a2b.. -> 3c4d..)``,
    ``config.trajectory.frames: 2 (pinned) -> 3 (now)``.
    """
    lines: list[str] = []

    def short(value) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."

    def walk(a, b, path: str) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict) and "sha256" in a and "sha256" in b:
            name = f"{a['name']}, " if "name" in a else ""
            lines.append(
                f"{path}: file changed ({name}size {a.get('size')} -> {b.get('size')}, sha256 "
                f"{str(a['sha256'])[:12]}.. -> {str(b['sha256'])[:12]}..)"
            )
        elif isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                sub = f"{path}['{key}']" if ("." in str(key) or "/" in str(key)) else f"{path}.{key}"
                sub = sub.lstrip(".")
                if key not in b:
                    lines.append(f"{sub}: removed (was {short(a[key])})")
                elif key not in a:
                    lines.append(f"{sub}: added ({short(b[key])})")
                else:
                    walk(a[key], b[key], sub)
        else:
            lines.append(f"{path}: {short(a)} (pinned) -> {short(b)} (now)")

    walk(pinned, current, "")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines
