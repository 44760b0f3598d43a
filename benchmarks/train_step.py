"""Training-step benchmark: seconds per iteration of each stage's synthetic config on CPU.

    python benchmarks/train_step.py [--repeats 3] [--iters 5] [--warmup 1] [--threads 2] [--stages teacher student tuning] [--opts KEY VALUE ...]

For every stage (teacher = MaskFormer, student = MaskDistill with a frozen teacher, tuning =
MasQ-Tuning with the tiny CLIP, random weights: timing does not depend on them) it builds the model,
the training loader (on a small generated synthetic world), the optimizer and the engine's trainer
from ``config/models/synthetic/<stage>.yaml`` exactly as ``masqclip train`` does, runs --warmup
iterations, then times --iters iterations --repeats times. Prints JSON: per stage the median
seconds/iteration (and every repeat), the batch size and the CPU-time per iteration of this process
(the figure to trust on a busy machine). Figures are noisy on a shared machine; compare medians.
On an oversubscribed machine use --threads 1 (with OMP_NUM_THREADS=1): measured here at load ~9 on
2 cores, the teacher took 26 s/iter with 2 threads and 2.1 s/iter with 1 (OpenMP spin-waiting).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from masqclip.config import setup_cfg
from masqclip.data.build import build_train_loader
from masqclip.data.synthetic import WorldConfig, generate_world
from masqclip.engine.defaults import build_trainer
from masqclip.engine.optim import build_optimizer
from masqclip.modeling import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "config" / "models" / "synthetic"
STAGES = ("teacher", "student", "tuning")
WORLD_TRAIN_IMAGES = 16


def build_stage(stage: str, seed: int, opts: list[str] = ()):
    """(cfg, model) of a stage, ready to train on CPU; ``opts``: extra KEY VALUE overrides."""
    cfg = setup_cfg(str(CONFIGS / f"{stage}.yaml"), ["MODEL.DEVICE", "cpu", "SEED", str(seed),
                                                    "DATALOADER.NUM_WORKERS", "0", "TRACKING.ENABLED", "False",
                                                    *opts])
    torch.manual_seed(seed)
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "MaskDistill":
        teacher_cfg = cfg.clone().defrost()
        teacher_cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
        model.set_teacher(build_model(teacher_cfg))
    return cfg, model


def time_stage(stage: str, args) -> dict:
    """Median s/iter over repeats of ``args.iters`` timed iterations after ``args.warmup``."""
    cfg, model = build_stage(stage, args.seed, args.opts)
    trainer, _ = build_trainer(cfg, model=model, data_loader=build_train_loader(cfg), optimizer=build_optimizer(cfg, model),
                               device=torch.device("cpu"))
    trainer.train(0, args.warmup)
    wall, cpu = [], []
    for r in range(args.repeats):
        start_iter = args.warmup + r * args.iters
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.train(start_iter, start_iter + args.iters)
        wall.append((time.perf_counter() - start) / args.iters)
        cpu.append((time.process_time() - start_cpu) / args.iters)
    return {"config": str(CONFIGS / f"{stage}.yaml"), "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
            "image_size": cfg.INPUT.IMAGE_SIZE, "s_per_iter_median": round(statistics.median(wall), 3),
            "s_per_iter_runs": [round(v, 3) for v in wall], "cpu_s_per_iter_median": round(statistics.median(cpu), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per repeat")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides for every stage")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__, "stages": {}}
    with tempfile.TemporaryDirectory() as root:
        scene_size = setup_cfg(str(CONFIGS / "teacher.yaml"), args.opts).INPUT.IMAGE_SIZE
        from masqclip.data.synthetic import SceneParams

        generate_world(root, WorldConfig(num_train=WORLD_TRAIN_IMAGES, num_val=2, crops_train=1, crops_val=1,
                                         scene=SceneParams(image_size=scene_size)), workers=1)
        os.environ["DETECTRON2_DATASETS"] = root
        for stage in args.stages:
            results["stages"][stage] = time_stage(stage, args)
            print(json.dumps({stage: results["stages"][stage]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
