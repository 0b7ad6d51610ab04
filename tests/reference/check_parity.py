#!/usr/bin/python3
"""Reference parity check for Loom's dense InterFormer (docs/model.md).

Modes
  check_parity.py --weights W.safetensors --batch X.safetensors --loom OUT.safetensors
                  [--tol 1e-5] [--f32-slack K] [--quiet]
      Runs the PyTorch reference (interformer_ref.py) in float64 and float32 on the same weights
      and batch, compares every tensor of Loom's output against the float64 reference, prints one
      row per tensor and exits 1 if any fails (or is missing / mis-shaped / non-finite).
      Metric per tensor: rel = max|loom - ref64| / max(max|ref64|, 1e-6); pass iff rel <= tol.
      The float32 reference's own error (same metric) is printed for scale; with --f32-slack K
      a tensor also passes when rel <= K * (float32 reference's rel). Keep parity configs small
      (the self-test's sizes): at d=32, B=16, T=50 the float32 reference itself reaches ~1e-5
      on bias gradients summed over the batch.
  check_parity.py --make-random --config-json CFG --out-weights W --out-batch X
                  [--batch-size 8] [--seq-len 10] [--seed 0] [--no-perturb]
      Writes random weights (contract init + noise on biases/LayerNorms unless --no-perturb) and
      a random batch with pre-padded sequences of mixed lengths (including an empty row).
      CFG is a JSON object or a path to a JSON file (proto field names).
  check_parity.py --dump-ref OUT --weights W --batch X [--dtype float32|float64]
      Writes the reference's outputs in Loom's output format (for debugging the C++ side).
  check_parity.py --self-test
      Safetensors round-trip, proto/reference default agreement, float64 gradcheck of the
      reference on tiny configs covering every interleaving mode and option value, masked-row
      and full-model checks, and the parity pipeline end to end (must pass, and must fail on a
      corrupted gradient).

Files (all little-endian safetensors; see docs/model.md §Parity files)
  weights: every dense-model parameter by name, F32, + metadata "model_config" (JSON).
  batch:   dense [B,m] F32 (omit or [B,0] if m = 0), sparse [B,n,d] F32, seq.<j> [B,T,d] F32,
           seq_mask [B,T] U8 (1 = real token, pre-padded), label [B] F32.
  loom:    logits [B], loss [] (mean BCE-with-logits), grad.<param> for every parameter,
           grad.input.sparse, grad.input.seq.<j>, grad.input.dense (m > 0); F32 or F64.
           Gradients are of the mean loss.

Exit status: 0 all pass, 1 a tensor failed, 2 bad usage or unreadable input.
"""

import argparse
import json
import math
import os
import random
import re
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interformer_ref as R  # noqa: E402
import safetensors_io as st  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "csrc", "proto", "model.proto")


# ---------------------------------------------------------------------------------------------
# Random weights / batches.

def random_weights(cfg, seed=0, perturb=True):
    model = R.InterFormerDense(cfg)
    R.init_parameters(model, seed=seed, perturb=perturb)
    return {n: p.detach().numpy().astype(np.float32) for n, p in model.named_parameters()}


def random_lengths(b, t, rng):
    """Mixed lengths in [0, T]: row 0 full, row 1 empty, row 2 length 1 (< K), rest random."""
    fixed = [t, 0, 1]
    return [fixed[i] if i < len(fixed) else int(rng.integers(0, t + 1)) for i in range(b)]


def random_batch(cfg, b=8, t=10, seed=0):
    rng = np.random.default_rng(seed)
    d, m, n, k = (cfg.embedding_dim, cfg.num_dense_features, cfg.num_sparse_features,
                  cfg.num_sequences)
    mask = np.zeros((b, t), np.uint8)
    for i, ln in enumerate(random_lengths(b, t, rng)):
        if ln:
            mask[i, t - ln:] = 1  # pre-padding: real tokens at the end, most recent last
    batch = {
        "dense": rng.standard_normal((b, m)).astype(np.float32),
        "sparse": rng.standard_normal((b, n, d)).astype(np.float32),
        "seq_mask": mask,
        "label": rng.integers(0, 2, b).astype(np.float32),
    }
    for j in range(k):
        # Padded positions hold random values too: Loom must treat them exactly as specified.
        batch[f"seq.{j}"] = rng.standard_normal((b, t, d)).astype(np.float32)
    return batch


def save_weights(path, cfg, weights):
    st.save(path, weights, metadata={"model_config": cfg.to_json()})


def load_weights(path):
    weights, meta = st.load(path)
    if "model_config" not in meta:
        raise ValueError(f"{path}: no 'model_config' in __metadata__")
    return R.config_from_json(meta["model_config"]), weights


def load_batch(path, cfg):
    batch, _ = st.load(path)
    for key in ["sparse", "seq_mask", "label"] + [f"seq.{j}" for j in range(cfg.num_sequences)]:
        if key not in batch:
            raise ValueError(f"{path}: missing tensor {key!r}")
    if cfg.num_dense_features > 0 and "dense" not in batch:
        raise ValueError(f"{path}: missing tensor 'dense' (num_dense_features > 0)")
    R.check_batch_shapes(batch, cfg)
    return batch


# ---------------------------------------------------------------------------------------------
# Comparison.

def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    abs_err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-6)
    return abs_err, abs_err / scale, scale


def compare(loom, ref64, ref32, tol, quiet=False, out=sys.stdout, f32_slack=0.0):
    """Prints the table; returns the number of failing tensors. A tensor passes iff it is finite
    and rel <= max(tol, f32_slack * rel32), rel32 being the float32 reference's own error."""
    fails = 0
    extra = sorted(set(loom) - set(ref64))
    w = max(len(n) for n in ref64)
    hdr = (f"{'tensor':{w}s} {'shape':>16s} {'max|ref|':>10s} {'abs err':>10s} "
           f"{'rel err':>10s} {'f32 rel':>10s}  verdict")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for name in ref64:  # logits, loss, grads in parameter order, input grads
        b = ref64[name]
        shape = "x".join(map(str, b.shape)) or "scalar"
        if name not in loom:
            fails += 1
            print(f"{name:{w}s} {shape:>16s} {'':>10s} {'':>10s} {'':>10s} {'':>10s}  "
                  "FAIL (missing)", file=out)
            continue
        a = np.asarray(loom[name], np.float64)
        if a.size != b.size or (a.shape != b.shape and not (b.ndim == 0 and a.size == 1)):
            fails += 1
            print(f"{name:{w}s} {shape:>16s} {'':>10s} {'':>10s} {'':>10s} {'':>10s}  "
                  f"FAIL (shape {list(a.shape)})", file=out)
            continue
        a = a.reshape(b.shape)
        abs_e, rel_e, scale = rel_err(a, b)
        _, rel32, _ = rel_err(ref32[name], b)
        ok = bool(np.all(np.isfinite(a))) and rel_e <= max(tol, f32_slack * rel32)
        if not ok:
            fails += 1
        if not ok or not quiet:
            verdict = "ok" if ok else ("FAIL (non-finite)" if not np.all(np.isfinite(a))
                                       else "FAIL")
            print(f"{name:{w}s} {shape:>16s} {scale:10.3e} {abs_e:10.3e} {rel_e:10.3e} "
                  f"{rel32:10.3e}  {verdict}", file=out)
    for name in extra:
        print(f"{name:{w}s} (not produced by the reference; ignored)", file=out)
    crit = f"rel {tol:g}" + (f" (or {f32_slack:g} x float32 ref)" if f32_slack > 0 else "")
    print(f"{len(ref64) - fails}/{len(ref64)} tensors within {crit} of the float64 "
          f"reference: {'PASS' if fails == 0 else 'FAIL'}", file=out)
    return fails


def cmd_check(args):
    cfg, weights = load_weights(args.weights)
    batch = load_batch(args.batch, cfg)
    loom, _ = st.load(args.loom)
    ref64 = R.run_reference(cfg, weights, batch, torch.float64)
    ref32 = R.run_reference(cfg, weights, batch, torch.float32)
    b = batch["sparse"].shape[0]
    t = batch["seq_mask"].shape[1]
    print(f"config: {cfg.to_json()}")
    print(f"batch: B={b} T={t}  real tokens per row: {batch['seq_mask'].sum(1).tolist()[:16]}")
    return 1 if compare(loom, ref64, ref32, args.tol, args.quiet, f32_slack=args.f32_slack) else 0


def cmd_make_random(args):
    text = args.config_json
    if os.path.exists(text):
        with open(text) as f:
            text = f.read()
    cfg = R.config_from_json(text)
    save_weights(args.out_weights, cfg, random_weights(cfg, args.seed, not args.no_perturb))
    batch = random_batch(cfg, args.batch_size, args.seq_len, args.seed + 1)
    st.save(args.out_batch, batch)
    print(f"wrote {args.out_weights} ({len(random_weights(cfg))} parameters) and "
          f"{args.out_batch} (B={args.batch_size}, T={args.seq_len})")
    return 0


def cmd_dump_ref(args):
    cfg, weights = load_weights(args.weights)
    batch = load_batch(args.batch, cfg)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    ref = R.run_reference(cfg, weights, batch, dtype)
    npdt = np.float64 if dtype == torch.float64 else np.float32
    st.save(args.dump_ref, {k: v.astype(npdt) for k, v in ref.items()})
    print(f"wrote {args.dump_ref} ({len(ref)} tensors, {args.dtype})")
    return 0


# ---------------------------------------------------------------------------------------------
# Self-test.

TINY = dict(embedding_dim=4, num_heads=2, num_dense_features=2, num_sparse_features=2,
            num_sequences=2, num_layers=2, num_cls_tokens=2, num_pma_tokens=1,
            num_recent_tokens=2, dcn_rank=3, dcn_layers=2, head_hidden_dims=[6, 4],
            pffn_hypernet_hidden_dim=3, masknet_expansion=2)

# option -> values to cover (beyond the three enumerated in the outer loop)
OPTION_VALUES = {
    "gating": [("GLU", "SIGMOID"), ("LITERAL", "SIGMOID"), ("LITERAL", "TANH"),
               ("LITERAL", "IDENTITY")],
    "gating_hidden_dim": [0, 3],
    "pffn_form": ["LOW_RANK", "HYPERNET"],
    "sequence_residual": ["PRE_LN", "LITERAL"],
    "use_rope": [True, False],
    "recent_zero_padding": [True, False],
    "masknet_sigmoid_mask": [False, True],
    "masknet_activation": ["RELU", "SILU"],
    "interaction_mlp_hidden_dim": [0, 5],
    "dhen_layers": [1, 2],
    "num_layers": [1, 2],
    "num_dense_features": [2, 0],
    "num_recent_tokens": [2, 1, 0],
    "head_hidden_dims": [[6, 4], [0]],
}


def self_test_configs():
    """One config per (interleaving, final_summary, backbone); the other options cycle so that
    every value of every option appears (checked)."""
    combos = []
    i = 0
    for inter in R.ENUMS["interleaving"][1]:
        for final in R.ENUMS["final_summary"][1]:
            for bb in R.ENUMS["interaction_backbone"][1]:
                c = dict(TINY, interleaving=inter, final_summary=final, interaction_backbone=bb)
                for j, (opt, vals) in enumerate(OPTION_VALUES.items()):
                    v = vals[(i + 7 * j + (i // len(vals))) % len(vals)]
                    if opt == "gating":
                        c["gating_form"], c["gating_literal_activation"] = v
                    else:
                        c[opt] = v
                combos.append(c)
                i += 1
    # Coverage check: every option value appears at least once.
    for opt, vals in OPTION_VALUES.items():
        for v in vals:
            if opt == "gating":
                hit = any((c["gating_form"], c["gating_literal_activation"]) == v for c in combos)
            else:
                hit = any(c[opt] == v for c in combos)
            assert hit, f"self-test combos never use {opt}={v}"
    return combos


def gradcheck_config(cfgd, seed, full_inputs=False):
    """float64 torch.autograd.gradcheck of (logits, loss) w.r.t. all float inputs and all
    parameters (fast mode: random projections), on a batch with mixed padded lengths."""
    from torch.nn.utils.stateless import functional_call
    cfg = R.ModelConfig(**cfgd)
    model = R.InterFormerDense(cfg).double()
    R.init_parameters(model, seed=seed, perturb=True)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    # All parameters as ONE flat input: fast mode then checks a random projection of the whole
    # Jacobian with 2 forwards instead of 2 per parameter tensor.
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    flat.requires_grad_(True)
    batch = random_batch(cfg, b=4, t=5, seed=seed)
    dense, sparse, seqs, mask, label = R.batch_tensors(batch, cfg, torch.float64)
    k = cfg.num_sequences

    has_dense = cfg.num_dense_features > 0  # a [B, 0] tensor cannot be gradchecked
    x_in = ([dense] if has_dense else []) + [sparse] + seqs
    nx = len(x_in)

    def fn(*args):
        xs = list(args[:nx])
        dense_ = xs.pop(0) if has_dense else dense.detach()
        sparse_, seqs_ = xs[0], xs[1:]
        ps = torch.split(args[nx], sizes)
        state = {n: p.reshape(sh) for n, p, sh in zip(names, ps, shapes)}
        logits = functional_call(model, state, (dense_, sparse_, seqs_, mask))
        return logits, R.bce_loss(logits, label)

    ok = torch.autograd.gradcheck(fn, (*x_in, flat), eps=1e-6, atol=1e-6, rtol=1e-4,
                                  fast_mode=True)
    if full_inputs:  # exact Jacobian w.r.t. the inputs (parameters fixed)
        def fn_in(*args):
            return fn(*args, flat.detach())
        ok = ok and torch.autograd.gradcheck(fn_in, tuple(x_in), eps=1e-6, atol=1e-6, rtol=1e-4)
    return ok, len(names)


def check_proto_defaults():
    """Every scalar field of model.proto exists in the reference with the same default."""
    if not os.path.exists(PROTO):
        print(f"  (skipped: {PROTO} not found)")
        return
    text = open(PROTO).read()
    fields = re.findall(r"^\s*(optional|repeated)\s+(\w+)\s+(\w+)\s*=\s*\d+\s*(?:\[default\s*=\s*"
                        r"([^\]]+)\])?\s*;", text, re.M)
    names = set()
    for label, typ, name, default in fields:
        names.add(name)
        assert name in R.DEFAULTS, f"proto field {name} unknown to the reference"
        ref = R.DEFAULTS[name]
        if label == "repeated":
            assert ref == [], f"{name}: repeated field default must be empty"
            continue
        assert default, f"proto field {name} has no explicit default"
        default = default.strip()
        if typ == "bool":
            val = default == "true"
        elif typ in ("int32", "int64", "uint32"):
            val = int(default)
        elif typ in ("float", "double"):
            val = float(default)
            assert math.isclose(val, float(ref), rel_tol=1e-7), f"{name}: {val} != {ref}"
            continue
        else:  # enum
            prefix, _ = R.ENUMS[name]
            val = default[len(prefix):] if default.startswith(prefix) else default
        assert val == ref, f"proto default {name}={val!r} != reference {ref!r}"
    missing = set(R.DEFAULTS) - names
    assert not missing, f"reference fields missing from model.proto: {sorted(missing)}"
    print(f"  model.proto: {len(names)} fields, defaults agree with the reference")


def self_test():
    t0 = time.time()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # 1. safetensors round trip.
        rng = np.random.default_rng(0)
        ts = {"f64": rng.standard_normal((2, 3)), "f32": rng.standard_normal(5).astype(np.float32),
              "f16": rng.standard_normal((4,)).astype(np.float16), "scalar": np.float32(3.5),
              "i64": np.arange(6, dtype=np.int64).reshape(2, 3), "i32": np.arange(3, dtype=np.int32),
              "i8": np.array([-1, 2], np.int8), "u8": np.array([0, 1, 255], np.uint8),
              "bf16": np.array([1.0, -2.5, 3.140625, 1e-3], np.float32), "empty": np.zeros((0, 4),
                                                                                          np.float32)}
        p = os.path.join(tmp, "t.safetensors")
        st.save(p, ts, metadata={"model_config": "{}", "x": "y"}, dtypes={"bf16": "BF16"})
        back, meta = st.load(p)
        assert meta == {"model_config": "{}", "x": "y"}
        for n, v in ts.items():
            v = np.asarray(v)
            assert back[n].shape == v.shape, n
            if n == "bf16":
                assert np.allclose(back[n], v, rtol=1e-2) and back[n][2] == 3.140625
            else:
                assert back[n].dtype == v.dtype and np.array_equal(back[n], v), n
        print("  safetensors: round trip of F64/F32/F16/BF16/I64/I32/I8/U8/scalar/empty ok")

        # 2. proto defaults.
        check_proto_defaults()

        # 3. gradchecks.
        combos = self_test_configs()
        tg = time.time()
        nfail = 0
        for i, c in enumerate(combos):
            ok, npar = gradcheck_config(c, seed=100 + i, full_inputs=(i % 6 == 0))
            nfail += not ok
        print(f"  gradcheck (float64, fast mode, inputs + all parameters): {len(combos)} configs "
              f"(5 interleavings x 2 final summaries x 3 backbones, options cycled), "
              f"{len(combos) - nfail} passed, {time.time() - tg:.1f}s")
        assert nfail == 0

        # 4. Fully-masked rows stay finite; padded inputs get zero gradient with zero padding.
        for inter in ("S2N", "INT"):
            cfg = R.ModelConfig(**dict(TINY, interleaving=inter))
            w = random_weights(cfg, 3)
            batch = random_batch(cfg, 4, 5, 3)
            out = R.run_reference(cfg, w, batch, torch.float64)
            assert all(np.all(np.isfinite(v)) for v in out.values()), inter
            pad = batch["seq_mask"] == 0
            for j in range(cfg.num_sequences):
                assert np.all(out[f"grad.input.seq.{j}"][pad] == 0), "padded positions leak"
        print("  masking: empty rows finite; padded positions get zero input gradient")

        # 5. Full model == dense model on the looked-up embeddings.
        cfg = R.ModelConfig(**dict(TINY, num_layers=1))
        spec = {"tables": {"user": 7, "item": 11, "cate": 5},
                "sparse": [{"name": "user_id", "table": "user", "pooling": "SUM"},
                           {"name": "item_id", "table": "item", "pooling": "MEAN"}],
                "sequences": [{"name": "item_hist", "table": "item"},
                              {"name": "cate_hist", "table": "cate"}]}
        full = R.InterFormerFull(cfg, spec).double()
        ids_u = torch.tensor([[1, -1], [2, 3], [-1, -1]])
        ids_i = torch.tensor([[4, 5], [-1, 6], [10, -1]])
        hist_i = torch.tensor([[-1, -1, 1, 2], [3, 4, 5, 6], [-1, -1, -1, -1]])
        hist_c = torch.tensor([[-1, -1, 0, 1], [1, 2, 3, 4], [-1, -1, -1, -1]])
        dense = torch.randn(3, 2, dtype=torch.float64)
        lf = full(dense, [ids_u, ids_i], [hist_i, hist_c])
        Eu, Ei, Ec = (full.embedding[t].weight for t in ("user", "item", "cate"))
        su = Eu[1:2].sum(0), Eu[2] + Eu[3], torch.zeros(4, dtype=torch.float64)
        si = (Ei[4] + Ei[5]) / 2, Ei[6], Ei[10]
        sparse = torch.stack([torch.stack(su), torch.stack(si)], dim=1)
        mask = hist_i >= 0
        seqs = [R.F.embedding(h.clamp(min=0), E) * mask[..., None] for h, E in
                ((hist_i, Ei), (hist_c, Ec))]
        ld = full.dense_forward(dense, sparse, seqs, mask)
        assert torch.allclose(lf, ld, atol=1e-12), (lf, ld)
        R.bce_loss(lf, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)).backward()
        assert Eu.grad is not None and Eu.grad[0].abs().sum() == 0 and Eu.grad[1].abs().sum() > 0
        names = [n for n, _ in full.named_parameters()]
        assert "embedding.item.weight" in names
        print("  full model: embedding lookup/pooling + dense model agree; table grads ok")

        # 6. Parity pipeline end to end.
        cfg = R.ModelConfig(**dict(TINY, embedding_dim=8, num_heads=2))
        wp, bp = os.path.join(tmp, "w.safetensors"), os.path.join(tmp, "b.safetensors")
        save_weights(wp, cfg, random_weights(cfg, 5))
        st.save(bp, random_batch(cfg, 6, 7, 5))
        cfg2, w2 = load_weights(wp)
        batch2 = load_batch(bp, cfg2)
        ref64 = R.run_reference(cfg2, w2, batch2, torch.float64)
        ref32 = R.run_reference(cfg2, w2, batch2, torch.float32)
        loom = {k: v.astype(np.float32) for k, v in ref32.items()}
        sink = open(os.devnull, "w")
        f32_fails = compare(loom, ref64, ref32, 1e-5, out=sink)
        worst = max(rel_err(ref32[k], ref64[k])[1] for k in ref64)
        bad = dict(loom)
        name = next(k for k in bad if k.startswith("grad.layers.0.sequence.attn.q.weight"))
        bad[name] = bad[name] * 1.001
        del bad["grad.input.seq.1"]
        assert compare(bad, ref64, ref32, 1e-5, out=sink) == 2
        assert compare(loom, ref64, ref64 and ref32, 1e-5, out=sink) == f32_fails
        print(f"  parity pipeline: files round-trip; float32 reference vs float64 worst rel err "
              f"{worst:.2e} ({'within' if f32_fails == 0 else 'OUTSIDE'} 1e-5); a corrupted "
              f"and a missing gradient are caught")
        assert f32_fails == 0
    print(f"self-test PASSED in {time.time() - t0:.1f}s")
    return 0


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--self-test", action="store_true")
    mode.add_argument("--make-random", action="store_true")
    mode.add_argument("--dump-ref", metavar="OUT", help="write reference outputs to OUT")
    ap.add_argument("--weights", help="weights safetensors (+ metadata model_config)")
    ap.add_argument("--batch", help="batch safetensors")
    ap.add_argument("--loom", help="Loom's output safetensors")
    ap.add_argument("--tol", type=float, default=1e-5, help="max rel error vs float64 (1e-5)")
    ap.add_argument("--f32-slack", type=float, default=0.0, metavar="K",
                    help="also pass a tensor whose rel err <= K x the float32 reference's own "
                         "rel err (default 0 = off; useful at large sizes, where float32 "
                         "summation error alone can exceed 1e-5)")
    ap.add_argument("--quiet", action="store_true", help="print failing rows only")
    ap.add_argument("--config-json", help="model config JSON (or a path to one)")
    ap.add_argument("--out-weights")
    ap.add_argument("--out-batch")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-perturb", action="store_true",
                    help="pure contract init (zero biases, unit LayerNorm gains)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                    help="--dump-ref precision")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    try:
        if args.self_test:
            return self_test()
        if args.make_random:
            if not (args.config_json and args.out_weights and args.out_batch):
                ap.error("--make-random needs --config-json, --out-weights and --out-batch")
            return cmd_make_random(args)
        if args.dump_ref:
            if not (args.weights and args.batch):
                ap.error("--dump-ref needs --weights and --batch")
            return cmd_dump_ref(args)
        if not (args.weights and args.batch and args.loom):
            ap.error("need --weights, --batch and --loom (or --self-test / --make-random)")
        return cmd_check(args)
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"check_parity: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
