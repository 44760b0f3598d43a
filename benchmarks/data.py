"""Data benchmarks: synthetic-world generation speed and training-loader throughput.

    python benchmarks/data.py [--repeats 3] [--num-train 100] [--image-size 128] [--batches 20]

Prints the median (and all repeats) of: scene images generated per second (rendering plus every
annotation format), CLIP crops generated per second, and training-loader images per second with
LSJ augmentation for 0 and 2 workers. Figures are noisy on a shared machine; compare medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from itertools import islice

import torch

from masqclip.config import get_cfg
from masqclip.data.build import build_train_loader
from masqclip.data.synthetic import ALL_CATEGORIES, SceneParams, WorldConfig, generate_world


def _median(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "runs": [round(v, 2) for v in values]}


def bench_generation(root: str, args) -> tuple[dict, dict]:
    """(scene images/s, scene images per CPU-second of this process, crops/s), two separate generations.

    The CPU-time figure is the one to trust on a busy machine (it counts only this process, so it
    is meaningful with ``--workers 1``)."""
    scene = SceneParams(image_size=args.image_size)
    images, cpu, crops = [], [], []
    for r in range(args.repeats):
        cfg = WorldConfig(num_train=args.num_train, num_val=args.num_val, seed=r, crops_train=1, crops_val=1, scene=scene)
        start, start_cpu = time.perf_counter(), time.process_time()
        generate_world(root, cfg, workers=args.workers)
        images.append((args.num_train + 2 * args.num_val) / (time.perf_counter() - start))
        cpu.append((args.num_train + 2 * args.num_val) / (time.process_time() - start_cpu))
        cfg = WorldConfig(num_train=1, num_val=1, seed=r, crops_train=args.crops, crops_val=1, scene=scene)
        start = time.perf_counter()
        generate_world(root, cfg, workers=args.workers)
        crops.append(len(ALL_CATEGORIES) * (args.crops + 1) / (time.perf_counter() - start))
    return _median(images), _median(cpu), _median(crops)


def bench_loader(root: str, args, workers: int) -> dict:
    """Training-loader images/s (LSJ to --image-size, batch --batch) after two warm-up batches."""
    generate_world(root, WorldConfig(num_train=args.num_train, num_val=4, crops_train=1, crops_val=1,
                                     scene=SceneParams(image_size=args.image_size)), workers=args.workers)
    os.environ["DETECTRON2_DATASETS"] = root
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("synthetic_panoptic_train",)
    cfg.SOLVER.IMS_PER_BATCH, cfg.SEED, cfg.DATALOADER.NUM_WORKERS = args.batch, 0, workers
    cfg.INPUT.IMAGE_SIZE = args.image_size
    rates = []
    for r in range(args.repeats):
        loader = build_train_loader(cfg, start_iter=r * 1000)
        list(islice(loader, 2))
        start = time.perf_counter()
        n = sum(len(b) for b in islice(loader, args.batches))
        rates.append(n / (time.perf_counter() - start))
        del loader
    return _median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=100)
    parser.add_argument("--num-val", type=int, default=12)
    parser.add_argument("--crops", type=int, default=20, help="CLIP crops per category")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="generation processes")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as root:
        images, cpu, crops = bench_generation(root, args)
        results = {"generation_images_per_s": images, "generation_images_per_cpu_s": cpu,
                   "generation_crops_per_s": crops,
                   "loader_images_per_s_0_workers": bench_loader(root, args, 0),
                   "loader_images_per_s_2_workers": bench_loader(root, args, 2)}
    print(json.dumps({"args": vars(args), **results}, indent=1))


if __name__ == "__main__":
    main()
