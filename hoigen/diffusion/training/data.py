"""Training data for the generative models: hoigen shards -> sequence records -> model examples.

The seam is :class:`SequenceRecord`: one grasp sequence with its per-frame condition images, the training
**target** frames (``photo`` when an appearance model already ran, else ``rgb`` — the render, or the real frame for
``dexycb:`` / ``ho3d:`` runs, whose shards are ordinary hoigen shards, :mod:`hoigen.synth.real`), the per-frame
point clouds and the meta. A model's example builder turns one record into one or more examples (numpy arrays and
strings; the DataLoader collates them).

:class:`ShardExamples` is the torch ``IterableDataset``: it reads shards with the existing reader
(:func:`hoigen.datasets.reader.open_sequences`), so every shard is read **once per epoch per rank** (shards are
split across ranks by ``torch.distributed`` rank, then across DataLoader workers). The shard order and an example
buffer are shuffled with generators seeded from (seed, epoch[, rank, worker]), so an epoch's order is a function of
the seed alone. A sample that cannot be read or built is **skipped with a log line and counted**: each example
carries ``_skipped``, the number of samples its worker dropped since its previous example, so the loop can sum
them exactly across workers and ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

logger = logging.getLogger(__name__)

SKIPPED = "_skipped"


@dataclass
class SequenceRecord:
    """One grasp sequence for training (from a hoigen shard; real-data runs produce the same shards).

    Attributes:
        key: sample key (``s00000012``).
        meta: the sample's ``meta.json`` (camera K/width/height, object, per-frame labels in ``meta["frames"]``).
        frames: T dicts of decoded images: ``skeleton``, ``normal``, ``hoimask`` (H, W, 3) uint8, ``tracking``
            (H, W, 3) uint8 when stored per frame, ``mask`` (H, W) uint8 ...
        targets: (T, H, W, 3) uint8 training target frames.
        target_kind: 'photo' or 'rgb' (which member ``targets`` came from).
        points: (T, N, 3) float32 camera-frame metres (the same surface point i in every frame).
        points_label: (N,) uint8, 0 object / 1 hand.
    """

    key: str
    meta: dict
    frames: list[dict]
    targets: np.ndarray
    target_kind: str
    points: np.ndarray
    points_label: np.ndarray

    @classmethod
    def from_sequence(cls, sequence: dict) -> SequenceRecord:
        """The record of a reader sequence dict (``open_sequences``)."""
        frames = sequence["frames"]
        kind = "photo" if frames and all("photo" in f for f in frames) else "rgb"
        targets = np.stack([np.asarray(f[kind]) for f in frames])
        if targets.ndim != 4 or targets.shape[-1] != 3 or targets.dtype != np.uint8:
            raise ValueError(f"sample {sequence['key']}: {kind} frames are {targets.shape} {targets.dtype}")
        return cls(
            key=sequence["key"],
            meta=sequence["meta"],
            frames=frames,
            targets=targets,
            target_kind=kind,
            points=np.asarray(sequence["points"], dtype=np.float32),
            points_label=np.asarray(sequence["points_label"]),
        )

    def tracking_frames(self) -> np.ndarray:
        """(T, H, W, 3) uint8 DaS tracking images (``fNNN.tracking.png`` or the reader's decoded ``tracking.mp4``)."""
        if not all("tracking" in f for f in self.frames):
            raise ValueError(f"sample {self.key} has no tracking images (fNNN.tracking.png or tracking.mp4)")
        return np.stack([np.asarray(f["tracking"]) for f in self.frames])


@dataclass
class _SkipCounter:
    """Counts samples a worker dropped (reader errors and builder errors), logging each one."""

    pending: int = 0
    total: int = 0
    seen: set = field(default_factory=set)

    def __call__(self, error: Exception) -> bool:  # a webdataset handler: True = continue
        self.skip(f"{type(error).__name__}: {error}")
        return True

    def skip(self, why: str) -> None:
        self.pending += 1
        self.total += 1
        logger.warning("skipped a training sample (%d so far in this worker): %s", self.total, why)

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed, else the launcher's RANK / WORLD_SIZE (DataLoader workers)."""
    import os

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardExamples(torch.utils.data.IterableDataset):
    """Examples built from the sequences of hoigen shards, one epoch.

    Args:
        shards: shard paths/URLs (``hoigen.datasets.reader.resolve_shards`` of the ``--data`` source).
        build: picklable ``SequenceRecord -> list[dict]`` (the model's example builder); an exception it raises
            skips the sample (logged, counted).
        seed, epoch: the shuffle seeds (shard order from (seed, epoch), example buffer from (seed, epoch, rank,
            worker)).
        shuffle: example buffer size (0 = read order).
        verify: check shards against the manifest before reading them (the reader's integrity check).
    """

    def __init__(self, shards: list[str], build: Callable, seed: int, epoch: int = 0, shuffle: int = 64,
                 verify: bool = True):
        super().__init__()
        if not shards:
            raise ValueError("no training shards given (--data points at no shard)")
        self.shards = list(shards)
        self.build = build
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.shuffle = int(shuffle)
        self.verify = verify

    def shard_order(self) -> list[str]:
        """This epoch's shard order (the same on every rank and worker)."""
        order = np.random.default_rng([self.seed, self.epoch, 0x5A4D]).permutation(len(self.shards))
        return [self.shards[i] for i in order]

    def _sequences(self, counter: _SkipCounter) -> Iterator[dict]:
        from hoigen.datasets.reader import open_sequences

        _, world = rank_and_world()
        shards = self.shard_order()
        if world > 1:
            if len(shards) < world:
                raise ValueError(
                    f"{len(shards)} shard(s) for {world} processes: each rank reads whole shards, so give at least "
                    f"{world} shards (hoigen synth --samples-per-shard smaller)"
                )
        # the reader splits the shards across ranks (webdataset.split_by_node) and then DataLoader workers
        yield from open_sequences(shards, shuffle=0, handler=counter, verify=self.verify)

    def __iter__(self) -> Iterator[dict]:
        counter = _SkipCounter()
        rank, _ = rank_and_world()
        worker, _ = _worker()
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        buffer: list[dict] = []
        for sequence in self._sequences(counter):
            try:
                examples = self.build(SequenceRecord.from_sequence(sequence))
            except Exception as error:  # noqa: BLE001 - any bad sample is skipped, never fatal
                counter.skip(f"sample {sequence.get('key', '?')} ({sequence.get('url', '?')}): "
                             f"{type(error).__name__}: {error}")
                continue
            for example in examples:
                if not self.shuffle:
                    example[SKIPPED] = counter.take()
                    yield example
                    continue
                buffer.append(example)
                if len(buffer) >= self.shuffle:
                    out = buffer.pop(int(rng.integers(len(buffer))))
                    out[SKIPPED] = counter.take()
                    yield out
        while buffer:
            out = buffer.pop(int(rng.integers(len(buffer))))
            out[SKIPPED] = counter.take()
            yield out
        if counter.pending:
            # skips after the last example: report them with an empty marker the collate drops
            yield {SKIPPED: counter.take(), "_empty": True}


def collate_examples(examples: list[dict]) -> dict:
    """Stack numpy arrays / numbers key by key (torch tensors), keep strings as lists; ``_skipped`` is summed."""
    skipped = sum(int(e.get(SKIPPED, 0)) for e in examples)
    examples = [e for e in examples if not e.get("_empty")]
    batch: dict = {SKIPPED: skipped, "size": len(examples)}
    if not examples:
        return batch
    for key in examples[0]:
        if key in (SKIPPED, "_empty"):
            continue
        values = [e[key] for e in examples]
        first = values[0]
        if isinstance(first, np.ndarray):
            batch[key] = torch.from_numpy(np.ascontiguousarray(np.stack(values)))
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool | int | float | np.generic):
            batch[key] = torch.tensor(np.asarray(values))
        else:
            batch[key] = values
    return batch


def resolve_training_shards(source) -> list[str]:
    """Shards of a ``--data`` source (a hoigen output folder, a manifest, shard paths or a pattern)."""
    from hoigen.datasets.reader import resolve_shards

    try:
        return resolve_shards(source)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--data {source}: {error}") from error
