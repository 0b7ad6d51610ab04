#!/usr/bin/python3
"""PyTorch baseline speed of the dense InterFormer: forward + backward samples/s (float32).

  bench_torch.py [--config small|paper] [--threads 2] [--iters 10] [--warmup 2]
                 [--device cpu|cuda] [--json PATH] [--seed 0]

Configs (other model fields at their model.proto defaults):
  small: B=512,  d=32, n=12 sparse, m=2 dense, k=3 sequences of T=50,  L=2, 2 heads
  paper: B=2048, d=64, n=20 sparse, m=1 dense, k=3 sequences of T=100, L=3, 4 heads
One step = zero grads, forward, mean BCE loss, backward (parameter and input gradients, as
Loom's dense step computes them). Batches use the parity batch semantics: random inputs and
pre-padded sequences of mixed lengths. Timing: `--warmup` untimed steps, then the median of
`--iters` timed steps (CUDA: synchronised). Prints one line; --json writes
{"samples_per_sec", "median_step_s", ...}.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interformer_ref as R  # noqa: E402
from check_parity import random_batch  # noqa: E402

CONFIGS = {
    "small": dict(batch=512, seq_len=50,
                  model=dict(embedding_dim=32, num_sparse_features=12, num_dense_features=2,
                             num_sequences=3, num_layers=2, num_heads=2)),
    "paper": dict(batch=2048, seq_len=100,
                  model=dict(embedding_dim=64, num_sparse_features=20, num_dense_features=1,
                             num_sequences=3, num_layers=3, num_heads=4)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--json", help="write the result as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_torch: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)

    spec = CONFIGS[args.config]
    cfg = R.ModelConfig(**spec["model"])
    model = R.InterFormerDense(cfg).to(dev)
    model.train()
    nparam = sum(p.numel() for p in model.parameters())
    batch = random_batch(cfg, spec["batch"], spec["seq_len"], args.seed)
    dense, sparse, seqs, mask, label = R.batch_tensors(batch, cfg, torch.float32)
    dense, sparse, label, mask = (t.detach().to(dev) for t in (dense, sparse, label, mask))
    seqs = [s.detach().to(dev) for s in seqs]
    for t in [dense, sparse] + seqs:
        t.requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=False)
        for t in [dense, sparse] + seqs:
            t.grad = None
        loss = R.bce_loss(model(dense, sparse, seqs, mask), label)
        loss.backward()
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    sps = spec["batch"] / med
    result = {
        "benchmark": "bench_torch", "config": args.config, "device": args.device,
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
        "threads": args.threads, "batch": spec["batch"], "seq_len": spec["seq_len"],
        "model_config": cfg.to_dict(), "parameters": nparam, "iters": args.iters,
        "warmup": args.warmup, "median_step_s": med, "min_step_s": min(times),
        "samples_per_sec": sps, "torch": torch.__version__,
    }
    print(f"bench_torch config={args.config} device={args.device} threads={args.threads} "
          f"B={spec['batch']} params={nparam} median_step={med * 1e3:.1f}ms "
          f"samples_per_sec={sps:.1f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
