"""Pre-train the tiny CLIP of the synthetic world contrastively on captioned crops.

Reads ``CROPS/{train,val}.jsonl`` (written by ``masqclip prepare synthetic``), trains the open_clip
architecture ``--model`` from random weights, reports zero-shot top-1 accuracy of the val crops over
all categories (bare class names as prompts) and writes the checkpoint (loadable as
``MODEL.MASQ_CLIP.PRETRAINED <output>`` with ``MODEL.MASQ_CLIP.MODEL_NAME ["masqclip-tiny"]``) and
a metrics JSON.
"""
from __future__ import annotations

import os
from pathlib import Path

COMMAND = "pretrain-clip"
HELP = "contrastively pre-train the tiny CLIP on the synthetic captioned crops"
# Flags overriding ``PretrainConfig`` fields (defaults live there; torch is not imported for --help).
HYPER_PARAMETERS = (
    ("epochs", float, "upper bound on passes over the train crops"),
    ("minutes", float, "also stop after this much wall time (0 = no limit)"),
    ("batch_size", int, "crops per step"),
    ("lr", float, "peak learning rate (AdamW)"),
    ("weight_decay", float, "AdamW weight decay of matrices"),
    ("warmup_steps", int, "linear warm-up steps"),
    ("min_lr_ratio", float, "cosine decays to lr x this"),
    ("grad_clip", float, "gradient-norm clipping"),
    ("seed", int, "random seed"),
)


def _default_crops() -> str:
    return str(Path(os.environ.get("DETECTRON2_DATASETS", "./datasets")) / "synthetic" / "clip_crops")


def add_arguments(parser) -> None:
    parser.add_argument("--crops", default=_default_crops(), help="clip_crops folder (default: %(default)s)")
    parser.add_argument("--output", required=True, help="checkpoint to write, e.g. results/models/clip/tiny.pt")
    parser.add_argument("--metrics", default="", help="metrics JSON (default: OUTPUT with .json suffix)")
    parser.add_argument("--model", dest="model_name", default="masqclip-tiny", help="open_clip architecture")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave torch's default)")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="MLflow run tag, repeatable (the run is tagged job=train, stage=clip, seed)")
    for name, kind, text in HYPER_PARAMETERS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                            help=f"{text} (default: see PretrainConfig)")


def main(args) -> int:
    import json
    from dataclasses import replace

    import torch

    from ..modeling.clip.pretrain import PretrainConfig, pretrain_clip, save_pretrained
    from ..utils.env import resolve_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    overrides = {name: getattr(args, name) for name, _, _ in HYPER_PARAMETERS if getattr(args, name) is not None}
    cfg = replace(PretrainConfig(), model_name=args.model_name, **overrides)
    tracker = _start_tracking(args, cfg)
    try:
        model, metrics = pretrain_clip(args.crops, cfg, device=resolve_device(args.device))
    except BaseException:
        tracker.end("FAILED")
        raise
    save_pretrained(args.output, model, metrics)
    metrics_path = Path(args.metrics or Path(args.output).with_suffix(".json"))
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps({**metrics, "weights": str(args.output), "crops": str(args.crops)}, indent=2))
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    scalars.update({f"zero_shot/{k}": v for k, v in (metrics.get("zero_shot_per_category") or {}).items()})
    tracker.log_metrics(scalars, step=int(metrics.get("steps", 0)))
    tracker.log_artifact(str(metrics_path))
    tracker.end()
    print(f"wrote {args.output} and {metrics_path}: zero-shot top-1 {metrics['zero_shot_top1']:.1f}%")
    return 0


def _start_tracking(args, cfg):
    """The pre-training's MLflow run (a child of the pipeline run inside a workflow), tagged like a
    training stage (job=train, stage=clip, seed); params = the settings that differ from defaults."""
    import socket
    from dataclasses import asdict

    from ..modeling.clip.pretrain import PretrainConfig
    from ..tracking import INVOCATION_ENV, Tracker, git_commit, parse_tags, run_name

    tags = {"job": "train", "stage": "clip", "seed": str(cfg.seed), "dataset": str(args.crops),
            "invocation": os.environ.get(INVOCATION_ENV, ""), "git_commit": git_commit(),
            "hostname": socket.gethostname(), **parse_tags(args.tag)}
    defaults = asdict(PretrainConfig())
    params = {k: v for k, v in asdict(cfg).items() if defaults.get(k) != v}
    return Tracker().start(run_name=run_name(tags), tags=tags, params=params or {"model_name": cfg.model_name})
