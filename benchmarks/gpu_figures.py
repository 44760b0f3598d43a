"""Speed and memory figures of the paper-sized models on one device, fp32 against mixed precision.

    python benchmarks/gpu_figures.py [--device cuda] [--smoke] [--output-dir DIR]

Random weights throughout (nothing is downloaded; timing does not depend on the weights):

- **teacher step**: one training iteration (forward, loss, backward, AdamW step) of the R50
  Mask2Former teacher (``config/models/base-novel/teacher_R50_100k_base48.yaml``) at the paper's
  1024 x 1024 crop, 2 images per GPU (the paper's batch 16 over 8 GPUs): images/s and peak memory,
  in fp32 and in each AMP precision the device supports (``SOLVER.AMP.PRECISION`` fp16 / bf16).
- **MasQ head**: the mask-class-token ViT-L/14@336 forward (``MasQCLIP``) for one image with 100
  masks: latency and peak memory, fp32 and AMP.
- **evaluation**: full MasQ-Tuning inference (R50 mask generator + ViT-L/14@336, ADE20K-150-sized
  vocabulary, panoptic + semantic post-processing) on 640 x 853 images, batch 1 as ``masqclip eval``:
  images/s, fp32 and ``TEST.AMP``.

``--smoke`` runs every figure with the same code at toy sizes (128 px crop, 1 image, the tiny CLIP,
10 masks, 2 evaluation images), on the CPU by default, so that the script is known to work where no
GPU is at hand. Results: printed as JSON lines and a Markdown table; written to ``--output-dir``
(default ``$OUT`` when set) as ``gpu_figures.json`` and ``gpu_figures.md``. CUDA peak memory is
``torch.cuda.max_memory_allocated``; on CPU, the process's peak resident size (it only grows).
fp32 on CUDA runs with PyTorch's defaults (TF32 convolutions on Ampere and newer, no TF32 matmuls).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "config/models/base-novel/teacher_R50_100k_base48.yaml"
TUNING = REPO / "config/models/cross-dataset/masqclip_R50_bs4_10k.yaml"

FULL = {"crop": 1024, "batch": 2, "warmup": 3, "iters": 10, "clip": "ViT-L-14-336", "masks": 100,
        "head_repeats": 20, "eval_size": (640, 853), "eval_images": 20, "vocabulary": 150}
SMOKE = {"crop": 128, "batch": 1, "warmup": 1, "iters": 1, "clip": "masqclip-tiny", "masks": 10,
         "head_repeats": 2, "eval_size": (96, 128), "eval_images": 2, "vocabulary": 5}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def precisions(device: torch.device) -> list[str]:
    """fp32 and the AMP precisions this device runs (CPU: bf16 only with AMX)."""
    from masqclip.utils.precision import cpu_native_bf16

    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"] + (["bf16"] if cpu_native_bf16() else [])


def amp_opts(prefix: str, precision: str) -> list:
    if precision == "fp32":
        return [f"{prefix}.ENABLED", False]
    return [f"{prefix}.ENABLED", True, f"{prefix}.PRECISION", precision]


def synthetic_batch(n: int, size: int, seed: int = 0) -> list[dict]:
    """``n`` random images with 6 box-shaped class-agnostic instances each (the model's input format)."""
    from masqclip.structures import Instances

    gen = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        masks = torch.zeros(6, size, size, dtype=torch.bool)
        for k in range(6):
            y0, x0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=gen))
            h, w = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=gen))
            masks[k, y0:y0 + h, x0:x0 + w] = True
        batch.append({"image": torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8).float(),
                      "height": size, "width": size,
                      "instances": Instances((size, size), gt_classes=torch.zeros(6, dtype=torch.int64), gt_masks=masks)})
    return batch


def teacher_step(device: torch.device, precision: str, p: dict) -> dict:
    from masqclip.config import setup_cfg
    from masqclip.engine.defaults import build_trainer
    from masqclip.engine.optim import build_optimizer
    from masqclip.modeling import build_model
    from masqclip.utils.precision import amp_from_config

    cfg = setup_cfg(str(TEACHER), ["MODEL.DEVICE", device.type, "MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH",
                                   p["batch"], "INPUT.IMAGE_SIZE", p["crop"], "TRACKING.ENABLED", False,
                                   *amp_opts("SOLVER.AMP", precision)])
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    data = synthetic_batch(p["batch"], p["crop"])
    trainer, _ = build_trainer(cfg, model=model, data_loader=itertools.repeat(data),
                               optimizer=build_optimizer(cfg, model), device=device)
    used = amp_from_config(cfg, device).name
    trainer.train(0, p["warmup"])
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    trainer.train(p["warmup"], p["warmup"] + p["iters"])
    synchronize(device)
    seconds = (time.perf_counter() - start) / p["iters"]
    row = {"figure": "teacher step", "precision": precision, "ran_in": used, "crop": p["crop"],
           "images_per_step": p["batch"], "s_per_step": round(seconds, 4),
           "images_per_s": round(p["batch"] / seconds, 2), "peak_mib": round(peak_mib(device)),
           "loss": round(trainer.storage.latest()["total_loss"], 3)}
    del trainer, model
    return row


def masq_head(device: torch.device, precision: str, p: dict) -> dict:
    from masqclip.modeling.clip import MasQCLIP, create_clip
    from masqclip.utils.precision import resolve_amp

    amp = resolve_amp(precision != "fp32", precision if precision != "fp32" else "auto", device)
    torch.manual_seed(0)
    visual = create_clip(model_name=p["clip"], pretrained="").visual
    model = MasQCLIP(visual=visual, new_q_init="random").eval().to(device)
    size = model.image_size
    images = torch.randn(1, 3, *size, device=device)
    masks = torch.randn(1, p["masks"], size[0] // 4, size[1] // 4, device=device)
    times = []
    with torch.no_grad(), amp.autocast():
        vis = model.visibility(masks)
        model(images, visibility=vis)  # warm-up
        synchronize(device)
        reset_peak(device)
        for _ in range(p["head_repeats"]):
            start = time.perf_counter()
            out = model(images, visibility=vis)
            synchronize(device)
            times.append(time.perf_counter() - start)
    row = {"figure": "MasQ head", "precision": precision, "ran_in": amp.name, "clip": p["clip"],
           "image_size": size[0], "masks": p["masks"], "latency_ms": round(1000 * statistics.median(times), 2),
           "peak_mib": round(peak_mib(device)), "output_dtype": str(out.dtype).replace("torch.", "")}
    del model, visual
    return row


def evaluation(device: torch.device, precision: str, p: dict) -> dict:
    from masqclip.config import setup_cfg
    from masqclip.evaluation import inference_on_dataset
    from masqclip.modeling import build_model
    from masqclip.utils.precision import amp_from_config

    vocabulary = [f"class {i}" for i in range(p["vocabulary"])]
    cfg = setup_cfg(str(TUNING), ["MODEL.DEVICE", device.type, "MODEL.WEIGHTS", "", "MODEL.MASQ_CLIP.PRETRAINED", "",
                                  "MODEL.MASQ_CLIP.MODEL_NAME", [p["clip"]], "MODEL.MASQ_CLIP.VOCABULARY", vocabulary,
                                  "MODEL.SEM_SEG_HEAD.NUM_CLASSES", p["vocabulary"],
                                  "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True, "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True,
                                  "MODEL.MASK_FORMER.TEST.INSTANCE_ON", False, *amp_opts("TEST.AMP", precision)])
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    amp = amp_from_config(cfg, device, inference=True)
    h, w = p["eval_size"]
    gen = torch.Generator().manual_seed(1)
    images = [[{"image": torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8).float(), "height": h,
                "width": w, "image_id": i}] for i in range(p["eval_images"])]
    context = amp.autocast if amp.enabled else None
    inference_on_dataset(model, images[:1], None, log_period=0, autocast=context)  # warm-up, text embeddings
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    inference_on_dataset(model, images, None, log_period=0, autocast=context)
    synchronize(device)
    seconds = time.perf_counter() - start
    row = {"figure": "evaluation", "precision": precision, "ran_in": amp.name, "image": f"{h}x{w}",
           "vocabulary": p["vocabulary"], "images": p["eval_images"], "images_per_s": round(len(images) / seconds, 2),
           "peak_mib": round(peak_mib(device))}
    del model
    return row


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(rows: list[dict], header: dict) -> str:
    lines = [f"Device: {header['device_name']} (torch {header['torch']}{', smoke sizes' if header['smoke'] else ''})", "",
             "| figure | precision (ran in) | size | speed | peak memory (MiB) |", "|---|---|---|---|---|"]
    for r in rows:
        if r["figure"] == "teacher step":
            size, speed = f"{r['crop']} px, {r['images_per_step']} img/step", f"{r['images_per_s']} images/s"
        elif r["figure"] == "MasQ head":
            size, speed = f"{r['clip']} @{r['image_size']}, {r['masks']} masks", f"{r['latency_ms']} ms"
        else:
            size, speed = f"{r['image']}, {r['vocabulary']} classes", f"{r['images_per_s']} images/s"
        lines.append(f"| {r['figure']} | {r['precision']} ({r['ran_in']}) | {size} | {speed} | {r['peak_mib']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="", help="cuda or cpu (default: cuda when available, cpu for --smoke)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: check that every figure runs (CPU minutes)")
    parser.add_argument("--figures", nargs="+", default=["teacher", "head", "eval"], choices=["teacher", "head", "eval"])
    parser.add_argument("--output-dir", default=os.environ.get("OUT", ""), help="write gpu_figures.{json,md} here "
                        "(default $OUT)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_figures: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    p = SMOKE if args.smoke else FULL
    os.environ.setdefault("MASQCLIP_CACHE", tempfile.mkdtemp(prefix="masqclip-figures-"))
    header = {"device": device.type, "torch": torch.__version__, "smoke": args.smoke,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
              "cpu_threads": torch.get_num_threads()}
    print(json.dumps(header), flush=True)
    runs = {"teacher": teacher_step, "head": masq_head, "eval": evaluation}
    rows = []
    for name in args.figures:
        for precision in precisions(device):
            row = runs[name](device, precision, p)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = markdown(rows, header)
    print(table)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_figures.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
        (out / "gpu_figures.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
