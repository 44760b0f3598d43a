"""Speed and memory of the model code, this checkout against a baseline checkout, in one run.

    python benchmarks/speed.py --baseline /tmp/base [--quick] [--threads 2] [--repeats 5] [--output FILE.json]

The baseline is another checkout of this repository (e.g. ``git worktree add /tmp/base <commit>``);
without ``--baseline`` only this checkout is measured. Each implementation runs in its own worker
process (``PYTHONPATH`` = its checkout, so each imports its own ``masqclip``); per workload both
workers build the model (the baseline loads this checkout's random weights, so both compute the
same function on the same inputs), then the timed calls alternate between them, so a change in
machine load hits both alike. Printed per workload: median and minimum wall seconds, their ratio
(ours / baseline), the peak resident memory the first call added to the process (Linux ``VmHWM``,
reset before the call), the counted FLOPs of convolutions and matrix products and the fraction of
the fp32 matrix peak measured in the same run (a 2048^3 GEMM, best of several) they reach, and the
largest relative output difference between the two implementations.

Workloads (random weights): the R50 teacher's full call (network + instance post-processing) at
512 (and 1024) px; its network alone; its training step (forward, backward, the config's gradient
clipping and optimizer, each checkout's own, as its trainer steps) at 256 px, batch 2; the MasQ head (ViT-B/16 at 224, and ViT-L/14 at 336) embedding 100 masks; the synthetic
miniature's teacher call; and, where the CPU has native bf16 matrix units, the bf16 inference
option (``TEST.BF16_WEIGHTS``) of this checkout against its own fp32, with its accuracy cost.
``--quick`` runs the 512 px and ViT-B/16 workloads with 3 repeats (a few minutes on 2 cores).
``--profile ROWS`` adds a torch.profiler table per workload and implementation.

``benchmarks/masq_head.py`` compares the MasQ head with a port of the official design
(``clip/reference.py``) instead; ``benchmarks/train_step.py`` times the synthetic stages' real
training loops.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proc_status import status_kib

REPO = Path(__file__).resolve().parents[1]
TEACHER_CONFIG = "config/models/base-novel/teacher_R50_100k_base48.yaml"
SYNTHETIC_TEACHER_CONFIG = "config/models/synthetic/teacher.yaml"
RESET_PEAK_RSS = "5"  # written to /proc/self/clear_refs: VmHWM := current RSS
GEMM_SIZE = 2048
MASKS = 100
TRAIN_SIZE, TRAIN_BATCH, GT_PER_IMAGE = 256, 2, 4
# name: (kind, size or model, compared against: "baseline" or "fp32" (this checkout without bf16))
WORKLOADS = {
    "teacher_call_512": ("teacher_call", 512, "baseline"),
    "teacher_call_1024": ("teacher_call", 1024, "baseline"),
    "teacher_net_512": ("teacher_net", 512, "baseline"),
    "teacher_train_256": ("teacher_train", TRAIN_SIZE, "baseline"),
    "masq_head_vit_b16": ("masq_head", "ViT-B-16", "baseline"),
    "masq_head_vit_l14_336": ("masq_head", "ViT-L-14-336", "baseline"),
    "synthetic_teacher_call": ("synthetic_call", 0, "baseline"),
    "bf16_teacher_net_512": ("teacher_net", 512, "fp32"),
    "bf16_masq_head_vit_b16": ("masq_head", "ViT-B-16", "fp32"),
}
QUICK = ("teacher_call_512", "teacher_net_512", "teacher_train_256", "masq_head_vit_b16", "synthetic_teacher_call",
         "bf16_teacher_net_512", "bf16_masq_head_vit_b16")


# ---------------------------------------------------------------------------------------------
# worker side: runs with PYTHONPATH = one checkout, imports that checkout's masqclip
# ---------------------------------------------------------------------------------------------
class Workload:
    """One model + input; ``run()`` is the timed call, ``output()`` the tensors compared."""

    def __init__(self, kind: str, arg, *, root: str, bf16: bool, state: str, save_state: bool):
        import torch

        from masqclip.config import setup_cfg
        from masqclip.modeling import build_model

        self.torch, self.kind, self.bf16 = torch, kind, bf16
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        if kind == "masq_head":
            from masqclip.modeling.clip import MasQCLIP, create_clip
            visual = create_clip(model_name=arg, pretrained="").visual
            self.model = MasQCLIP(visual=visual, new_q_init="random").eval()
            size = self.model.image_size
            self.images = torch.randn(1, 3, *size, generator=gen)
            masks = torch.randn(1, MASKS, size[0] // 4, size[1] // 4, generator=gen)
            self.vis = self.model.visibility(masks)
        else:
            config = SYNTHETIC_TEACHER_CONFIG if kind == "synthetic_call" else TEACHER_CONFIG
            cfg = setup_cfg(os.path.join(root, config), ["MODEL.DEVICE", "cpu"])
            self.model = build_model(cfg)
            size = arg or cfg.INPUT.IMAGE_SIZE
            if kind == "teacher_train":
                from masqclip.structures import Instances
                self.batch = []
                for _ in range(TRAIN_BATCH):
                    gt = torch.zeros(GT_PER_IMAGE, size, size, dtype=torch.bool)
                    for k in range(GT_PER_IMAGE):
                        y, x = torch.randint(0, size // 2, (2,), generator=gen).tolist()
                        gt[k, y:y + size // 3, x:x + size // 3] = True
                    self.batch.append({"image": torch.rand(3, size, size, generator=gen) * 255, "height": size,
                                       "width": size, "instances": Instances(
                                           (size, size), gt_classes=torch.zeros(GT_PER_IMAGE, dtype=torch.int64),
                                           gt_masks=gt)})
            else:
                self.batch = [{"image": torch.rand(3, size, size, generator=gen) * 255, "height": size, "width": size}]
        if save_state:
            torch.save(self.model.state_dict(), state)
        # every worker loads the file (the same allocation history before the peak-memory call)
        self.model.load_state_dict(torch.load(state, weights_only=True))
        if kind == "teacher_train":
            from masqclip.engine.optim import build_grad_clipper, build_optimizer

            self.model.train()
            # each checkout's own optimizer and gradient clipping from the config, as its trainer steps
            self.optimizer, self.clip = build_optimizer(cfg, self.model), build_grad_clipper(cfg)
        else:
            self.model.eval()
        if bf16:
            from masqclip.modeling.bf16 import convert_for_bf16_inference
            convert_for_bf16_inference(self.model)
        self.step = 0

    def run(self):
        torch = self.torch
        if self.kind == "teacher_train":
            torch.manual_seed(self.step)  # same point samples in both implementations
            self.step += 1
            losses = self.model(self.batch)
            self.optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            if self.clip is not None:
                self.clip(p for p in self.model.parameters() if p.grad is not None)
            self.optimizer.step()
            return {k: v.detach() for k, v in losses.items()}
        with torch.no_grad():  # as the evaluator
            if self.kind == "masq_head":
                return {"embeddings": self.model(self.images, visibility=self.vis)}
            if self.kind == "teacher_net":
                out = self.model.predict_queries(self.batch)[0]
                return {"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}
            inst = self.model(self.batch)[0]["instances"]
            return {"pred_masks": inst.pred_masks, "scores": inst.scores}

    def flops(self) -> float:
        from torch.utils.flop_counter import FlopCounterMode
        frozen = [] if self.kind == "teacher_train" else [p for p in self.model.parameters() if p.requires_grad]
        for p in frozen:  # the counter's module tracker trips over views of grad-requiring leaves under no_grad
            p.requires_grad_(False)
        try:
            with FlopCounterMode(display=False) as counter:
                self.run()
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return float(counter.get_total_flops())


def gemm_peak(threads: int, dtype_name: str = "float32", seconds: float = 1.0) -> float:
    """Best GFLOP/s of a GEMM_SIZE^3 matrix product over ~``seconds``."""
    import torch
    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype), torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype)
    a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * GEMM_SIZE ** 3 / best / 1e9


def worker(threads: int) -> None:
    """Serve JSON commands on stdin, one reply line each on stdout."""
    import torch
    torch.set_num_threads(threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    work = None
    for line in sys.stdin:
        cmd = json.loads(line)
        reply: dict = {}
        if cmd["cmd"] == "setup":
            work = Workload(cmd["kind"], cmd["arg"], root=cmd["root"], bf16=cmd["bf16"], state=cmd["state"],
                            save_state=cmd["save_state"])
            gc.collect()
            with open("/proc/self/clear_refs", "w") as f:
                f.write(RESET_PEAK_RSS)
            before = status_kib("VmRSS")
            start = time.perf_counter()
            torch.save({k: v.float() if v.is_floating_point() else v for k, v in work.run().items()}, cmd["output"])
            reply = {"first_s": time.perf_counter() - start, "peak_mib": (status_kib("VmHWM") - before) / 1024}
        elif cmd["cmd"] == "run":
            wall, cpu = time.perf_counter(), time.process_time()
            work.run()
            reply = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        elif cmd["cmd"] == "flops":
            reply = {"flops": work.flops()}
        elif cmd["cmd"] == "profile":
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                work.run()
            reply = {"table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=cmd["rows"])}
        elif cmd["cmd"] == "peak":
            reply = {"gflops": gemm_peak(threads, cmd["dtype"])}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------------
class Worker:
    def __init__(self, root: Path, threads: int):
        env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "--threads",
                                      str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=str(root), text=True)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died during {cmd['cmd']} (its stderr is above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def compare(ours: dict, ref: dict) -> dict:
    """Largest relative difference per output (|a - b|max / |b|max); bool masks: disagreeing fraction."""
    import torch
    result = {}
    for key, b in ref.items():
        a = ours[key]
        if a.shape != b.shape:
            result[key] = f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
        elif key == "pred_masks" and a.dtype == b.dtype and set(torch.unique(b).tolist()) <= {0.0, 1.0}:
            result[key + "_disagree"] = float((a != b).float().mean())
        else:
            result[key] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0
    return result


def accuracy_cost(ours: dict, ref: dict, kind: str) -> dict:
    """bf16 against fp32: mask sign agreement and score / embedding deviation."""
    import torch
    if kind == "masq_head":
        a, b = ours["embeddings"], ref["embeddings"]
        cos = torch.nn.functional.cosine_similarity(a.flatten(0, -2), b.flatten(0, -2), dim=-1)
        return {"embedding_cosine_min": float(cos.min()), "embedding_max_abs_diff": float((a - b).abs().max())}
    a, b = ours["pred_masks"], ref["pred_masks"]
    out = {"mask_sign_agreement": float(((a > 0) == (b > 0)).float().mean())}
    if "pred_logits" in ref:
        pa, pb = ours["pred_logits"].softmax(-1)[..., 0], ref["pred_logits"].softmax(-1)[..., 0]
        out["object_score_max_abs_diff"] = float((pa - pb).abs().max())
    return out


def measure(name: str, args, peak_gflops: float) -> dict:
    import torch
    kind, arg, against = WORKLOADS[name]
    impls = {"ours": (REPO, against == "fp32")}
    if against == "fp32":
        impls["fp32"] = (REPO, False)
    elif args.baseline:
        impls["baseline"] = (Path(args.baseline).resolve(), False)
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state.pt")
        workers, result = {}, {"workload": name, "threads": args.threads}
        try:
            for i, (impl, (root, bf16)) in enumerate(impls.items()):
                workers[impl] = Worker(root, args.threads)
                first = workers[impl].ask(cmd="setup", kind=kind, arg=arg, root=str(root), bf16=bf16, state=state,
                                          save_state=i == 0, output=os.path.join(tmp, f"{impl}.pt"))
                result[impl] = {"peak_mib": first["peak_mib"], "first_s": first["first_s"], "wall": [], "cpu": []}
            for _ in range(args.warmup):
                for w in workers.values():
                    w.ask(cmd="run")
            for _ in range(args.repeats):
                for impl, w in workers.items():
                    r = w.ask(cmd="run")
                    result[impl]["wall"].append(r["wall"])
                    result[impl]["cpu"].append(r["cpu"])
            flops = workers["ours"].ask(cmd="flops")["flops"]
            if args.profile:
                for impl, w in workers.items():
                    print(f"--- profile of {name}, {impl}\n" + w.ask(cmd="profile", rows=args.profile)["table"])
        finally:
            for w in workers.values():
                w.close()
        outputs = {impl: torch.load(os.path.join(tmp, f"{impl}.pt"), weights_only=True) for impl in impls}
    for impl in impls:
        r = result[impl]
        r.update(median_s=statistics.median(r["wall"]), min_s=min(r["wall"]), median_cpu_s=statistics.median(r["cpu"]))
    result["gflop"] = flops / 1e9
    result["fraction_of_fp32_peak"] = flops / 1e9 / result["ours"]["median_s"] / peak_gflops
    other = "fp32" if against == "fp32" else "baseline"
    if other in impls:
        result["ratio_median"] = result["ours"]["median_s"] / result[other]["median_s"]
        result["ratio_min"] = result["ours"]["min_s"] / result[other]["min_s"]
        result["peak_ratio"] = result["ours"]["peak_mib"] / max(result[other]["peak_mib"], 1e-9)
        result["difference"] = (accuracy_cost if against == "fp32" else compare)(
            outputs["ours"], outputs[other], *((kind,) if against == "fp32" else ()))
    return result


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="", help="checkout to compare with, e.g. from "
                        "'git worktree add /tmp/base <commit>'")
    parser.add_argument("--quick", action="store_true", help="512 px and ViT-B/16 workloads only, 3 repeats")
    parser.add_argument("--workloads", nargs="*", choices=sorted(WORKLOADS), help="default: all (or --quick's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per implementation (default 5, quick 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", default="", help="also write the results as JSON")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print a torch.profiler table (this many rows) of one call of each implementation")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.threads)
        return 0
    if args.baseline and not (Path(args.baseline) / "masqclip").is_dir():
        print(f"--baseline {args.baseline}: not a checkout of this repository (no masqclip/ in it)", file=sys.stderr)
        return 2
    args.repeats = args.repeats or (3 if args.quick else 5)
    names = args.workloads or list(QUICK if args.quick else WORKLOADS)
    sys.path.insert(0, str(REPO))
    from masqclip.modeling.bf16 import bf16_support
    bf16_ok, bf16_why = bf16_support()
    if not bf16_ok:
        print(f"bf16 workloads skipped: {bf16_why}")
        names = [n for n in names if WORKLOADS[n][2] != "fp32"]
    import torch
    torch.set_num_threads(args.threads)
    peak = max(gemm_peak(args.threads) for _ in range(2))
    peak_bf16 = gemm_peak(args.threads, "bfloat16") if bf16_ok else None
    header = {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__, "fp32_gemm_peak_gflops": peak,
              "bf16_gemm_peak_gflops": peak_bf16, "baseline": args.baseline or None, "load_avg": os.getloadavg()}
    print(json.dumps(header))
    rows = []
    for name in names:
        r = measure(name, args, peak)
        rows.append(r)
        other = "fp32" if WORKLOADS[name][2] == "fp32" else "baseline"
        line = (f"{name}: ours median {r['ours']['median_s']:.3f} s (min {r['ours']['min_s']:.3f}), "
                f"peak +{r['ours']['peak_mib']:.0f} MiB, {r['gflop']:.1f} GFLOP = "
                f"{100 * r['fraction_of_fp32_peak']:.0f}% of the fp32 GEMM peak")
        if other in r:
            o = r[other]
            line += (f" | {other} median {o['median_s']:.3f} s (min {o['min_s']:.3f}), peak +{o['peak_mib']:.0f} MiB"
                     f" | ratio median {r['ratio_median']:.2f}, min {r['ratio_min']:.2f}, peak memory "
                     f"{r['peak_ratio']:.2f} | difference {json.dumps(r['difference'])}")
        print(line, flush=True)
    print(f"load average after: {os.getloadavg()}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
