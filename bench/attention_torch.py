#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of bench/attention_bench.cc.

  attention_torch.py [--device cuda|cpu] [--dtype f32|bf16|all] [--reps 20] [--warmup 3]
                     [--quick] [--json PATH] [--loom-json PATH]

Run it with the python3 that has PyTorch (on the GPU machines: `python3`; torch >= 2.0 for
F.scaled_dot_product_attention; older torch, e.g. Debian's 1.13 here, falls back to the plain
softmax(q k^T) v math, which is then what is timed, and says so).

Shapes, padding and FLOP counting are attention_bench's: T' in {104, 1004}, Dh in {16, 32, 64},
H = 64 / Dh, B = 2048 (T' = 104) or 256 (T' = 1004) (--quick: / 8), pre-padded batches (4 CLS
keys + the last L_b tokens valid, L_b = T/4 + (b * 7919) mod (3T/4 + 1)) and unpadded ones.
The key-padding mask is a boolean attn_mask of shape (B, 1, 1, T') (True = attend); SDPA picks
its backend (flash attention takes no mask, so padded rows run the memory-efficient or math
kernel). FLOPs count valid keys only, forward+backward = 3.5 x forward, so rates compare
directly with Loom's. Layout: SDPA's native (B, H, T, Dh), contiguous; Loom's is (B, T, H, Dh).
Timing: CUDA events around each call after --warmup calls, median of --reps.

With --loom-json (attention_bench's --json output from the same machine), prints the ratio
Loom time / PyTorch time per row (< 1: Loom is faster).
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def padded_mask(batch, t, padded, device):
    mask = torch.ones(batch, t, dtype=torch.bool)
    if padded:
        tokens = t - 4
        lo = tokens // 4
        for b in range(batch):
            length = lo + (b * 7919) % (tokens - lo + 1)
            mask[b, 4:t - length] = False
    return mask.to(device)


def attention(q, k, v, attn_mask):
    if HAS_SDPA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    s = torch.matmul(q, k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def time_ms(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        samples = []
        for _ in range(reps):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop))
        return statistics.median(samples)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["f32", "bf16", "all"], default="all")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--loom-json", help="attention_bench --json output to compare with")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("attention_torch: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    dtypes = {"f32": [torch.float32], "bf16": [torch.bfloat16],
              "all": [torch.float32, torch.bfloat16]}[args.dtype]
    if args.device == "cpu":
        dtypes = [d for d in dtypes if d == torch.float32]
    # Full fp32 (no TF32) for the f32 rows, as Loom's f32 kernels.
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    div = 8 if args.quick else 1
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}; "
          f"{'F.scaled_dot_product_attention' if HAS_SDPA else 'plain softmax(qk^T)v (no SDPA)'}")
    print("FLOPs count valid keys only; fwd+bwd = 3.5 x fwd (FlashAttention convention).")
    unit, scale = ("TFLOP/s", 1.0) if args.device == "cuda" else ("GFLOP/s", 1e3)
    print(f"{'dtype':5} {'T':>5} {'Dh':>4} {'H':>3} {'B':>5} {'pad':>4} | {'fwd ms':>9} "
          f"{unit:>8} | {'fwd+bwd ms':>10} {unit:>8}")
    torch.manual_seed(0)
    rows = []
    for t in (104, 1004):
        for dh in (16, 32, 64):
            for padded in (True, False):
                batch = (2048 if t < 500 else 256) if args.device == "cuda" else (32 if t < 500 else 2)
                batch = max(batch // div, 1)
                heads = 64 // dh
                mask = padded_mask(batch, t, padded, dev)
                valid = int(mask.sum().item())
                attn_mask = mask[:, None, None, :] if padded else None
                for dtype in dtypes:
                    shape = (batch, heads, t, dh)
                    q = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
                    k = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
                    v = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
                    go = torch.randn(shape, device=dev, dtype=dtype)

                    def fwd():
                        with torch.no_grad():
                            attention(q, k, v, attn_mask)

                    def fwdbwd():
                        o = attention(q, k, v, attn_mask)
                        torch.autograd.grad(o, (q, k, v), go)

                    fwd_ms = time_ms(fwd, args.device, args.warmup, args.reps)
                    fwdbwd_ms = time_ms(fwdbwd, args.device, args.warmup, args.reps)
                    flops = 4.0 * heads * dh * t * valid
                    row = dict(dtype="f32" if dtype == torch.float32 else "bf16", T=t, dh=dh,
                               heads=heads, batch=batch, padded=padded,
                               valid_fraction=valid / (batch * t), fwd_ms=fwd_ms,
                               fwdbwd_ms=fwdbwd_ms, fwd_tflops=flops / (fwd_ms * 1e-3) / 1e12,
                               fwdbwd_tflops=3.5 * flops / (fwdbwd_ms * 1e-3) / 1e12)
                    rows.append(row)
                    print(f"{row['dtype']:5} {t:5d} {dh:4d} {heads:3d} {batch:5d} "
                          f"{'yes' if padded else 'no':>4} | {fwd_ms:9.3f} {row['fwd_tflops'] * scale:8.2f} | "
                          f"{fwdbwd_ms:10.3f} {row['fwdbwd_tflops'] * scale:8.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(bench="attention_torch", device=name, torch=torch.__version__,
                           sdpa=HAS_SDPA, rows=rows), f, indent=1)
        print(f"wrote {args.json}")
    if args.loom_json:
        with open(args.loom_json) as f:
            loom = json.load(f)
        print("Loom time / PyTorch time (< 1: Loom faster); Loom kernel in brackets:")
        for r in rows:
            for lr in loom["rows"]:
                if (lr["dtype"], lr["T"], lr["dh"], lr["padded"], lr["batch"]) == (
                        r["dtype"], r["T"], r["dh"], r["padded"], r["batch"]):
                    print(f"  {r['dtype']:5} T'={r['T']:5d} Dh={r['dh']:3d} "
                          f"pad={'yes' if r['padded'] else 'no ':3} [{lr['kernel']:4}] "
                          f"fwd {lr['fwd_ms'] / r['fwd_ms']:6.2f}  "
                          f"fwd+bwd {lr['fwdbwd_ms'] / r['fwdbwd_ms']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
