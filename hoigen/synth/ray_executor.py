"""``hoigen synth --executor ray``: produce shards on Ray actors, one :class:`ShardProducer` per actor.

Without ``--ray-address`` a local Ray instance sized to ``--workers`` CPUs is started (no dashboard, a small
object store) and shut down afterwards; with an address the run connects to that cluster and only disconnects at
the end. A Ray instance this process was already connected to is used as it is and left running.

Each worker is an actor (one CPU) that builds its producer — object source, hand model and renderer — on its first
shard and reuses it; shards are handed out one at a time, so a worker takes the next shard as soon as it finishes
one. Workers run with the same single-threaded BLAS environment as the local executor and the GL platform the
driver chose, so a shard's bytes do not depend on the executor.

Workers write the shard tars and records **directly** into the output folder, which is therefore resolved to an
absolute path on the driver. On a multi-machine cluster that folder must be on a filesystem every node mounts at
the same path (NFS, Lustre, ...), and hoigen, the object folder and the optional MANO files must be present at the
same paths on every node; when the nodes need a different GL platform than the driver, set ``PYOPENGL_PLATFORM``
before running (it is forwarded to the workers, as are ``HOIGEN_*`` variables).

Ray is imported only here, when the executor is used: it is the optional ``hoigen[ray]`` extra.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from hoigen.synth.run import _THREAD_ENV, ShardProducer, SynthJob, _progress_bar

logger = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 200 * 1024**2  # records are small dicts; the shards go to disk, not through Ray
_POLL_SECONDS = 1.0  # ray.wait timeout, so Ctrl-C is handled promptly


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"the Ray executor needs the 'ray' package ({exc}); install it with: pip install 'hoigen[ray]'"
        ) from exc
    return ray


def worker_env(local: bool) -> dict[str, str]:
    """Environment variables the worker processes need: single-threaded BLAS, the driver's GL platform, hoigen's
    own ``HOIGEN_*`` settings and, for a local instance, a ``PYTHONPATH`` that finds this hoigen."""
    env = dict(_THREAD_ENV)
    for key, value in os.environ.items():
        if key.startswith("HOIGEN_"):
            env[key] = value
    platform = os.environ.get("PYOPENGL_PLATFORM")
    if platform:
        env["PYOPENGL_PLATFORM"] = platform
    if local:
        import hoigen

        root = str(Path(hoigen.__file__).resolve().parent.parent)
        paths = [root, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class ShardWorker:
    """The actor class: one producer per worker process, built on the first shard and reused."""

    def __init__(self, job: SynthJob, cwd: str | None = None, env: dict[str, str] | None = None):
        # runtime_env already set these before the interpreter started; repeat them for an instance that was
        # started without it (e.g. one the caller initialised)
        os.environ.update(env or _THREAD_ENV)
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative object / MANO paths in the config resolve as they do on the driver
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.job = job
        self.producer: ShardProducer | None = None

    def produce(self, shard: int) -> dict:
        if self.producer is None:
            # built here rather than in __init__ so that a failure surfaces as the task's own exception
            self.producer = ShardProducer(self.job)
        return self.producer.produce(shard)


def run_ray(
    job: SynthJob,
    todo: list[int],
    workers: int,
    total: int,
    progress: bool,
    ray_address: str | None = None,
    recycle_after: int | None = None,
) -> Iterator[dict]:
    """Produce shards ``todo`` of ``job`` on ``workers`` Ray actors; yield each shard's record as it finishes.

    ``recycle_after``: replace an actor by a fresh one after it made that many shards (None or 0: never).
    A worker's exception is raised here with its original type (the remote traceback is logged); a worker that
    dies raises :class:`RuntimeError`.
    """
    ray = _import_ray()
    if not todo:
        return
    job = dataclasses.replace(job, out=Path(job.out).resolve())
    started = False
    if ray.is_initialized():
        if ray_address:
            logger.warning("already connected to a Ray instance; ignoring --ray-address %s", ray_address)
        env = worker_env(local=False)
    elif ray_address:
        env = worker_env(local=False)
        logger.info("connecting to the Ray cluster at %s", ray_address)
        ray.init(address=ray_address, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
        started = True
    else:
        env = worker_env(local=True)
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
        )
        started = True
    try:
        yield from _schedule(ray, job, todo, workers, total, progress, env, recycle_after)
    finally:
        if started:
            ray.shutdown()


def _schedule(ray, job, todo, workers, total, progress, env, recycle_after) -> Iterator[dict]:
    remote_worker = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ShardWorker)
    options = {"runtime_env": {"env_vars": env}}
    cwd = os.getcwd()

    def spawn():
        return remote_worker.options(**options).remote(job, cwd, env)

    pending = collections.deque(todo)
    actors = [spawn() for _ in range(min(workers, len(todo)))]
    made = [0] * len(actors)
    in_flight = {}  # object ref -> (actor slot, shard)

    def submit(slot: int) -> None:
        shard = pending.popleft()
        in_flight[actors[slot].produce.remote(shard)] = (slot, shard)

    try:
        for slot in range(len(actors)):
            submit(slot)
        with _progress_bar(total, progress) as bar:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=_POLL_SECONDS)
                if not ready:
                    continue
                slot, shard = in_flight.pop(ready[0])
                record = _fetch(ray, ready[0], shard)
                made[slot] += 1
                if pending:
                    if recycle_after and made[slot] >= recycle_after:
                        ray.kill(actors[slot])
                        actors[slot], made[slot] = spawn(), 0
                    submit(slot)
                bar.update(len(job.shard_indices(shard)))
                yield record
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # best-effort cleanup must not hide the real error
                logger.debug("could not kill a Ray worker: %s", exc)


def _fetch(ray, ref, shard: int) -> dict:
    """The record behind ``ref``, or the worker's error raised here with a clear message."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        logger.error("shard %d failed on a Ray worker:\n%s", shard, exc)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from exc
        raise RuntimeError(f"shard {shard} failed on a Ray worker: {exc}") from exc
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(
            f"the Ray worker making shard {shard} died (out of memory, or a crash in native code such as the GL "
            f"driver?): {exc}"
        ) from exc
