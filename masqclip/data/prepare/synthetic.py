"""Generate the synthetic world (the embedded default's data) under ROOT/synthetic.

Writes images (PNG), COCO instance JSONs (RLE; base-only for training, base / novel / all for
validation), COCO-panoptic PNG + JSON and semantic PNGs for world A training and the world B
cross-dataset test, captioned crops of every category for CLIP pre-training, and world.json.
The output depends only on the arguments (not on --workers).
"""
from __future__ import annotations

import os
import time

COMMAND = "synthetic"
HELP = "generate the synthetic world (embedded default data)"


def add_arguments(parser) -> None:
    from ..datasets.common import DATASETS_ENV, DEFAULT_DATASETS_ROOT
    from ..synthetic.scene import SceneParams
    from ..synthetic.world import WorldConfig

    defaults, scene = WorldConfig(), SceneParams()
    parser.add_argument("--output", default=os.environ.get(DATASETS_ENV) or DEFAULT_DATASETS_ROOT,
                        help=f"datasets root (default ${DATASETS_ENV} or {DEFAULT_DATASETS_ROOT}); writes ROOT/synthetic")
    parser.add_argument("--num-train", type=int, default=defaults.num_train, help="training images")
    parser.add_argument("--num-val", type=int, default=defaults.num_val, help="images of each test set (>= 12 covers every thing)")
    parser.add_argument("--image-size", type=int, default=scene.image_size, help="image height in px")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--crop-size", type=int, default=defaults.crop_size, help="CLIP crop size in px")
    parser.add_argument("--crops-train", type=int, default=defaults.crops_train, help="CLIP training crops per category")
    parser.add_argument("--crops-val", type=int, default=defaults.crops_val, help="CLIP validation crops per category")
    parser.add_argument("--workers", type=int, default=0,
                        help="rendering processes; 0 = one per CPU this process may use (output does not depend on it)")


def config_from_args(args):
    """The ``WorldConfig`` the parsed arguments describe."""
    from dataclasses import replace

    from ..synthetic.scene import SceneParams
    from ..synthetic.world import WorldConfig

    for flag in ("num_train", "num_val", "image_size", "crop_size", "crops_train", "crops_val"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"masqclip prepare synthetic: --{flag.replace('_', '-')} must be >= 1")
    return WorldConfig(num_train=args.num_train, num_val=args.num_val, seed=args.seed, crop_size=args.crop_size,
                       crops_train=args.crops_train, crops_val=args.crops_val,
                       scene=replace(SceneParams(), image_size=args.image_size))


def main(args) -> int:
    from ..synthetic.world import generate_world

    from ..synthetic import THINGS

    cfg = config_from_args(args)
    if cfg.num_val < len(THINGS):
        print(f"warning: --num-val {cfg.num_val} < {len(THINGS)} thing categories: some categories will be "
              "missing from the test sets")
    start = time.perf_counter()
    workers = args.workers if args.workers > 0 else (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    out = generate_world(args.output, cfg, workers=max(1, workers))
    print(f"synthetic world written to {out} in {time.perf_counter() - start:.1f} s "
          f"({cfg.num_train} train, {cfg.num_val} val, {cfg.num_val} cross-val images)")
    from pathlib import Path

    from ._common import write_prepared_manifest

    write_prepared_manifest(COMMAND, args, registered_datasets(args), root=Path(args.output))
    return 0


def registered_datasets(args) -> list[str]:
    from ..datasets.synthetic import INSTANCE_SPLITS, PANOPTIC_SPLITS, SEM_SEG_SPLITS

    return [*INSTANCE_SPLITS, *PANOPTIC_SPLITS, *SEM_SEG_SPLITS]
