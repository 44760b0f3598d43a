"""CPU latency and peak memory of the mask-class-token head, ours vs a port of the reference design.

For each CLIP shape (random weights) and Q masks, both implementations embed the same masks of one
image: ``MasQCLIP.forward`` (one fused SDPA per layer, keys = image tokens only) and
``clip.reference.reference_mask_embeddings`` (per-layer explicit matmul + softmax over the full
[image + mask] sequence with an additive mask, as the official code). Each measurement runs in a
fresh process (so ``ru_maxrss`` deltas are its own): peak RSS growth during the forward passes,
and the median of the timed repeats. Also reports the largest difference between the two outputs.

    python benchmarks/masq_head.py [--threads 2] [--masks 100] [--repeats 5] [--output FILE.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time

# (open_clip architecture, input size) as in the issue: ViT-B/16 at 224, ViT-L/14 at 336.
SHAPES = (("ViT-B-16", 224), ("ViT-L-14-336", 336))
IMPLEMENTATIONS = ("ours", "reference")
MASK_GRID_DIVISOR = 4  # mask logits arrive at 1/4 of the input size, as Mask2Former's


def _measure(queue, model_name: str, impl: str, n_masks: int, repeats: int, threads: int) -> None:
    import torch

    from masqclip.modeling.clip import MasQCLIP, create_clip
    from masqclip.modeling.clip.reference import reference_mask_embeddings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    visual = create_clip(model_name=model_name, pretrained="").visual
    model = MasQCLIP(visual=visual, new_q_init="random").eval()
    size = model.image_size
    images = torch.randn(1, 3, *size)
    masks = torch.randn(1, n_masks, size[0] // MASK_GRID_DIVISOR, size[1] // MASK_GRID_DIVISOR)
    vis = model.visibility(masks)

    def run():
        with torch.no_grad():
            if impl == "ours":
                return model(images, visibility=vis)
            return reference_mask_embeddings(model, images, vis)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"model": model_name, "image_size": size[0], "impl": impl, "masks": n_masks,
               "median_s": statistics.median(times), "times_s": times, "peak_rss_delta_mib": (peak - before) / 1024,
               "output": out[0, :, :8].flatten().tolist()})


def measure(model_name: str, impl: str, n_masks: int, repeats: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(queue, model_name, impl, n_masks, repeats, threads))
    proc.start()
    result = queue.get()
    proc.join()
    print(f"  {model_name} {impl}: median {result['median_s']:.3f} s, peak RSS +{result['peak_rss_delta_mib']:.0f} MiB",
          flush=True)
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
        pair = {impl: measure(model_name, impl, args.masks, args.repeats, args.threads) for impl in IMPLEMENTATIONS}
        diff = max(abs(a - b) for a, b in zip(pair["ours"]["output"], pair["reference"]["output"]))
        for impl in IMPLEMENTATIONS:
            pair[impl]["max_abs_diff_first_values"] = diff
            rows.append(pair[impl])
        speedup = pair["reference"]["median_s"] / pair["ours"]["median_s"]
        print(f"{model_name} @{pair['ours']['image_size']}, {args.masks} masks, {args.threads} threads: "
              f"ours {pair['ours']['median_s']:.3f} s ({pair['ours']['peak_rss_delta_mib']:.0f} MiB), reference "
              f"{pair['reference']['median_s']:.3f} s ({pair['reference']['peak_rss_delta_mib']:.0f} MiB): "
              f"x{speedup:.2f} faster; outputs differ by {diff:.1e}", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
