"""CPU latency and peak memory of the mask-class-token head, ours vs a port of the reference design.

For each CLIP shape (random weights) and Q masks, both implementations embed the same masks of one
image: ``MasQCLIP.forward`` (one fused SDPA per layer, keys = image tokens only) and
``clip.reference.reference_mask_embeddings`` (per-layer explicit matmul + softmax over the full
[image + mask] sequence with an additive mask, as the official code). Each shape runs in a fresh
process; the two implementations alternate repeat by repeat (so a change in machine load hits both
alike) and the medians of wall and process-CPU time are reported. Peak memory: growth of the peak
RSS over the resident size before an implementation's first call in a process where nothing ran
before it (Linux: the peak counter ``VmHWM`` is reset through ``/proc/self/clear_refs``), so the
reference gets one more fresh process. Also reports the largest output difference.

    python benchmarks/masq_head.py [--threads 2] [--masks 100] [--repeats 5] [--output FILE.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import statistics
import sys
import time

from proc_status import status_kib

# (open_clip architecture, input size) as in the issue: ViT-B/16 at 224, ViT-L/14 at 336.
SHAPES = (("ViT-B-16", 224), ("ViT-L-14-336", 336))
IMPLEMENTATIONS = ("ours", "reference")
MASK_GRID_DIVISOR = 4  # mask logits arrive at 1/4 of the input size, as Mask2Former's
RESET_PEAK_RSS = "5"  # written to /proc/self/clear_refs: resets VmHWM to the current RSS


def _measure(queue, model_name: str, impls: tuple[str, ...], n_masks: int, repeats: int, threads: int) -> None:
    """Build the model, call each of ``impls`` once (peak memory: valid for the first only), then
    time ``repeats`` alternating rounds; put the per-implementation results on ``queue``."""
    import torch

    from masqclip.modeling.clip import MasQCLIP, create_clip
    from masqclip.modeling.clip.reference import reference_mask_embeddings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    visual = create_clip(model_name=model_name, pretrained="").visual  # the text tower is freed here
    model = MasQCLIP(visual=visual, new_q_init="random").eval()
    size = model.image_size
    images = torch.randn(1, 3, *size)
    masks = torch.randn(1, n_masks, size[0] // MASK_GRID_DIVISOR, size[1] // MASK_GRID_DIVISOR)
    vis = model.visibility(masks)
    runs = {"ours": lambda: model(images, visibility=vis),
            "reference": lambda: reference_mask_embeddings(model, images, vis)}
    result = {impl: {"model": model_name, "image_size": size[0], "impl": impl, "masks": n_masks, "threads": threads,
                     "wall_s": [], "cpu_s": []} for impl in impls}
    outputs = {}
    with torch.no_grad():
        for impl in impls:  # first call of each: peak memory (and warm-up)
            gc.collect()
            with open("/proc/self/clear_refs", "w") as f:
                f.write(RESET_PEAK_RSS)
            before = status_kib("VmRSS")
            outputs[impl] = runs[impl]()
            result[impl]["peak_rss_delta_mib"] = (status_kib("VmHWM") - before) / 1024
        for _ in range(repeats):
            for impl in impls:
                wall, cpu = time.perf_counter(), time.process_time()
                runs[impl]()
                result[impl]["wall_s"].append(time.perf_counter() - wall)
                result[impl]["cpu_s"].append(time.process_time() - cpu)
    diff = (outputs[impls[0]] - outputs[impls[-1]]).abs().max().item()
    for r in result.values():
        if repeats:
            r.update(median_wall_s=statistics.median(r["wall_s"]), median_cpu_s=statistics.median(r["cpu_s"]))
        r["max_abs_diff"] = diff
    queue.put(result)


def measure(model_name: str, impls: tuple[str, ...], n_masks: int, repeats: int, threads: int) -> dict:
    """``_measure`` in a fresh (spawned) process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(queue, model_name, impls, n_masks, repeats, threads))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=[m for m, _ in SHAPES])
    parser.add_argument("--output", default="", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rows = []
    for model_name in args.models:
        pair = measure(model_name, IMPLEMENTATIONS, args.masks, args.repeats, args.threads)
        alone = measure(model_name, IMPLEMENTATIONS[1:], args.masks, 0, args.threads)
        pair["reference"]["peak_rss_delta_mib"] = alone["reference"]["peak_rss_delta_mib"]
        rows.extend(pair.values())
        ours, ref = pair["ours"], pair["reference"]
        print(f"{model_name} @{ours['image_size']}, {args.masks} masks, {args.threads} threads, median of "
              f"{args.repeats}: ours {ours['median_wall_s']:.3f} s wall / {ours['median_cpu_s']:.3f} s CPU, "
              f"+{ours['peak_rss_delta_mib']:.0f} MiB; reference {ref['median_wall_s']:.3f} s / "
              f"{ref['median_cpu_s']:.3f} s, +{ref['peak_rss_delta_mib']:.0f} MiB; speed-up x"
              f"{ref['median_wall_s'] / ours['median_wall_s']:.2f} wall, x{ref['median_cpu_s'] / ours['median_cpu_s']:.2f} "
              f"CPU; max |difference| {ours['max_abs_diff']:.1e}", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
