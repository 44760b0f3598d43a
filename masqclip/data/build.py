"""Training and test data loaders (docs/architecture.md, "Loaders").

Training data is a pure function of ``(cfg.SEED, iteration)``: the global batch of iteration ``i``
holds ``SOLVER.IMS_PER_BATCH`` samples at positions ``0..B-1``; sample ``(i, p)`` is record
``perm_e[(i * B + p) % n]`` where ``perm_e`` is the seeded shuffle of epoch ``e = (i * B + p) // n``,
and its augmentation draws from a generator seeded by ``(seed, i, p)``. Rank ``r`` of ``world_size``
takes positions ``r::world_size``. Resuming at ``start_iter``, the number of workers and the rank
split therefore never change what any sample is. The loader's own generator (worker seeds) is
seeded by ``(seed, start_iter, rank)``: building and starting it draws nothing from the global one.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..utils.env import derived_seed
from .catalog import DatasetCatalog
from .mapper import DatasetMapper

logger = logging.getLogger(__name__)

ORDER_STREAM, AUGMENT_STREAM = 0, 1  # separate random streams for sample order and augmentation
LOADER_STREAM = 3  # the DataLoader's own generator (worker seeds); 2 is the trainer's per-iteration stream


def _has_targets(record: dict) -> bool:
    if "annotations" in record:
        return any(not a.get("iscrowd", 0) for a in record["annotations"])
    if "segments_info" in record:
        return any(not s.get("iscrowd", 0) for s in record["segments_info"])
    return "sem_seg_file_name" in record


def train_records(cfg) -> list[dict]:
    """The records of ``cfg.DATASETS.TRAIN`` (concatenated), without images that have no targets
    when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``."""
    if not cfg.DATASETS.TRAIN:
        raise ValueError("DATASETS.TRAIN is empty: name at least one registered dataset")
    records = [r for name in cfg.DATASETS.TRAIN for r in DatasetCatalog.get(name)]
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        kept = [r for r in records if _has_targets(r)]
        logger.info("removed %d of %d training images without annotations", len(records) - len(kept), len(records))
        records = kept
    if not records:
        raise ValueError(f"no training images with annotations in {list(cfg.DATASETS.TRAIN)}")
    return records


class IterationSamples(Dataset):
    """Map-style dataset over ``(iteration, position)`` keys -> mapped training samples.

    Args:
        records: the training records.
        mapper: a training ``DatasetMapper`` (called as ``mapper(record, rng)``).
        seed: the run's seed; batch_size: the global batch size.
    """

    def __init__(self, *, records: list[dict], mapper: DatasetMapper, seed: int, batch_size: int):
        self.records, self.mapper, self.seed, self.batch_size = records, mapper, seed, batch_size
        self._perm: tuple[int, np.ndarray] | None = None

    def record_index(self, iteration: int, position: int) -> int:
        """Index into ``records`` of sample ``(iteration, position)`` (epoch-wise shuffling)."""
        n = len(self.records)
        g = iteration * self.batch_size + position
        epoch = g // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, ORDER_STREAM, epoch]).permutation(n))
        return int(self._perm[1][g % n])

    def __getitem__(self, key: tuple[int, int]) -> dict:
        iteration, position = key
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, iteration, position])
        return self.mapper(self.records[self.record_index(iteration, position)], rng)

    def __len__(self) -> int:  # an epoch's worth; the sampler, not this, decides how long to run
        return len(self.records)


class IterationBatchSampler(Sampler):
    """Infinite: for ``i = start_iter, start_iter + 1, ...`` yields ``[(i, p) for p in positions]``."""

    def __init__(self, *, start_iter: int, positions: list[int]):
        self.start_iter, self.positions = start_iter, positions

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        i = self.start_iter
        while True:
            yield [(i, p) for p in self.positions]
            i += 1


def keep_list(batch: list[dict]) -> list[dict]:
    """Collate that keeps a batch as the list of per-image dicts the model takes."""
    return list(batch)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers map data; the main process owns the cores for the model


def resolve_seed(cfg, world_size: int) -> int:
    """``cfg.SEED``, or a fresh one when negative (refused with several ranks: they must agree)."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    if world_size > 1:
        raise ValueError("SEED < 0 with several ranks: set SEED so every rank sees the same global batch")
    seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    logger.warning("SEED < 0: the training data uses the fresh seed %d", seed)
    return seed


def build_train_loader(cfg, start_iter: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[list[dict]]:
    """An infinite iterator of this rank's part of each global batch, from ``start_iter`` on.

    Args:
        cfg: uses DATASETS.TRAIN, SOLVER.IMS_PER_BATCH, SEED, DATALOADER.*, INPUT.* (LSJ).
        start_iter: the first iteration to produce (resuming).
        rank, world_size: this process takes positions ``rank::world_size`` of every global batch.
    Returns:
        iterator of lists of model-input dicts (``len = ceil((B - rank) / world_size)``).
    """
    batch = cfg.SOLVER.IMS_PER_BATCH
    if not 0 <= rank < world_size or batch < world_size:
        raise ValueError(f"need 0 <= rank < world_size <= SOLVER.IMS_PER_BATCH, got {rank}, {world_size}, {batch}")
    seed = resolve_seed(cfg, world_size)
    dataset = IterationSamples(records=train_records(cfg), mapper=DatasetMapper.from_config(cfg, is_train=True),
                               seed=seed, batch_size=batch)
    sampler = IterationBatchSampler(start_iter=start_iter, positions=list(range(rank, batch, world_size)))
    workers = cfg.DATALOADER.NUM_WORKERS
    # Its own generator: starting the iterator (worker seeds) draws nothing from the global one.
    generator = torch.Generator().manual_seed(derived_seed(seed, LOADER_STREAM, start_iter, rank))
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=keep_list,
                        worker_init_fn=_worker_init if workers else None, generator=generator)
    return iter(loader)


class MappedRecords(Dataset):
    """records[i] -> mapper(records[i]) (test time: no randomness)."""

    def __init__(self, records: list[dict], mapper: DatasetMapper):
        self.records, self.mapper = records, mapper

    def __getitem__(self, index: int) -> dict:
        return self.mapper(self.records[index])

    def __len__(self) -> int:
        return len(self.records)


def build_test_loader(cfg, dataset_name: str) -> DataLoader:
    """Finite loader over ``dataset_name``, batch 1 (a list of one dict), test-time resize only."""
    dataset = MappedRecords(DatasetCatalog.get(dataset_name), DatasetMapper.from_config(cfg, is_train=False))
    workers = cfg.DATALOADER.NUM_WORKERS
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=keep_list,
                      worker_init_fn=_worker_init if workers else None)
