#!/usr/bin/python3
"""Load a `loom ckpt export` safetensors file into the PyTorch reference model and predict.

The export (docs/checkpoint-format.md, "Conversion tools") holds every dense parameter under
its model name (docs/model.md §7) and every table as `embedding.<table>.weight` [rows, d], or,
quantized, as `embedding.<table>.weight_int8` I8 [rows, d] + `.weight_scale` F32 [rows] +
`.weight_bias` F32 [rows] with w = scale[r] * q[r, c] + bias[r] (computed in float32, as
Loom's import does). Its metadata carries `model_config` (ModelConfig JSON) and
`embedding_config` (EmbeddingConfig JSON: tables with rows and id mappings, features with
kinds, tables and poolings), from which the reference InterFormerFull is built
(tests/reference/interformer_ref.py); no other file is needed.

A batch (what tests/train/ckpt_predict.cc writes) is a safetensors file of N rows:
  ids.<feature>      I64 [N, P]  raw ids of every embedding feature, -1 = empty slot; pooled
                                 features: the bag's ids; SEQUENCE features: the last T ids,
                                 pre-padded with -1
  weights.<feature>  F32 [N, P]  weighted pooled features (POOLING_WEIGHTED_SUM) only
  dense              F32 [N, m]  (m > 0)
  label              F32 [N]     (for --auc)
  logits             F32 [N]     Loom's logits (for --check-logits)
Ids become rows by the table's id_mapping (MODULO: id mod rows; HASH: Hash64(id, hash_seed)
mod rows, csrc/embedding/id_map.h; DIRECT: id). Pooled features sum (MEAN: divide by the
number of ids, WEIGHTED_SUM: weight each row); the sequence mask is 1 where any sequence has a
token (Loom's InputAdapter).

Usage:
  load_exported.py EXPORT --batch BATCH [--dtype float64|float32] [--check-logits]
                   [--rtol 1e-5] [--auc] [--auc-against OTHER_EXPORT --max-auc-diff 0.001]
Exit status: 0 when every requested check passes, 1 otherwise, 2 for bad input.

API:
  model, meta = load_exported(path, dtype=torch.float64)
  logits = predict(model, meta, batch)          # numpy float64 [N]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interformer_ref as ref  # noqa: E402
import safetensors_io  # noqa: E402

_U64 = np.uint64


def _enum(value, prefix):
    """Proto JSON enum value (name or number) -> short name without `prefix`."""
    v = str(value)
    return v[len(prefix):] if v.startswith(prefix) else v


def hash64(ids, seed):
    """csrc/embedding/id_map.h Hash64 (splitmix64 finalizer of id + seed * golden ratio)."""
    with np.errstate(over="ignore"):
        x = ids.astype(_U64) + _U64(seed) * _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def map_ids(ids, table):
    """Raw ids [..] int64 (-1 = none) -> rows (-1 kept), by the table's id_mapping."""
    rows = int(table["num_rows"])
    mapping = _enum(table.get("id_mapping", "ID_MAPPING_MODULO"), "ID_MAPPING_")
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    if mapping == "MODULO":
        out = (safe.astype(_U64) % _U64(rows)).astype(np.int64)
    elif mapping == "HASH":
        out = (hash64(safe, int(table.get("hash_seed", 0))) % _U64(rows)).astype(np.int64)
    elif mapping == "DIRECT":
        if np.any(valid & (safe >= rows)):
            raise ValueError(f"table {table['name']!r}: a DIRECT id outside [0, {rows})")
        out = safe.astype(np.int64)
    else:
        raise ValueError(f"table {table['name']!r}: unknown id_mapping {mapping!r}")
    return np.where(valid, out, -1)


def _dequantize(tensors):
    """Replaces every int8 triple by embedding.<table>.weight (float32 arithmetic)."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(".weight_int8"):
            base = name[: -len("_int8")]
            scale = tensors[base + "_scale"].astype(np.float32)
            bias = tensors[base + "_bias"].astype(np.float32)
            q = value.astype(np.float32)
            out[base] = (scale[:, None] * q + bias[:, None]).astype(np.float32)
        elif name.endswith(".weight_scale") or name.endswith(".weight_bias"):
            continue
        else:
            out[name] = value
    return out


def load_exported(path, dtype=torch.float64):
    """-> (InterFormerFull with the exported weights, metadata dict with parsed configs)."""
    tensors, meta = safetensors_io.load(path)
    if meta.get("format") != "loom-export":
        raise ValueError(f"{path}: not a Loom export (metadata format={meta.get('format')!r})")
    if meta.get("model_type", "interformer") != "interformer":
        raise ValueError(f"{path}: model_type {meta.get('model_type')!r}; the reference "
                         "implements the InterFormer only")
    cfg = ref.config_from_json(meta["model_config"])
    emb = json.loads(meta["embedding_config"])
    tables = {t["name"]: t for t in emb.get("tables", [])}
    features = emb.get("features", [])
    sparse, sequences = [], []
    for f in features:
        kind = _enum(f.get("kind", "SINGLE"), "")
        pooling = _enum(f.get("pooling", "POOLING_SUM"), "POOLING_")
        entry = {"name": f["name"], "table": f["table"],
                 "pooling": "MEAN" if pooling == "MEAN" else "SUM"}
        (sequences if kind == "SEQUENCE" else sparse).append(entry)
    spec = {"tables": {n: int(t["num_rows"]) for n, t in tables.items()},
            "sparse": sparse, "sequences": sequences}
    model = ref.InterFormerFull(cfg, spec)
    ref.load_state(model, _dequantize(tensors))
    model = model.to(dtype)
    model.eval()
    parsed = dict(meta)
    parsed["tables"] = tables
    parsed["features"] = features
    return model, parsed


def predict(model, meta, batch, chunk=512):
    """Logits (numpy float64 [N]) of `batch` (dict name -> numpy array, the format above)."""
    dtype = next(model.parameters()).dtype
    features = meta["features"]
    n = batch[f"ids.{features[0]['name']}"].shape[0]
    m = model.cfg.num_dense_features
    out = []
    with torch.no_grad():
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            pooled, seqs, seq_valid = [], [], None
            for f in features:
                table = meta["tables"][f["table"]]
                rows = torch.as_tensor(map_ids(batch[f"ids.{f['name']}"][lo:hi], table))
                w = model.embedding[f["table"]].weight
                valid = rows >= 0
                e = F.embedding(rows.clamp(min=0), w) * valid[..., None].to(dtype)
                kind = _enum(f.get("kind", "SINGLE"), "")
                if kind == "SEQUENCE":
                    seqs.append(e)
                    seq_valid = valid if seq_valid is None else (seq_valid | valid)
                    continue
                pooling = _enum(f.get("pooling", "POOLING_SUM"), "POOLING_")
                if pooling == "WEIGHTED_SUM":
                    wts = torch.as_tensor(batch[f"weights.{f['name']}"][lo:hi]).to(dtype)
                    e = e * wts[..., None]
                v = e.sum(dim=1)
                if pooling == "MEAN":
                    v = v / valid.sum(dim=1).clamp(min=1)[:, None].to(dtype)
                pooled.append(v)
            b = hi - lo
            sparse = (torch.stack(pooled, dim=1) if pooled
                      else torch.zeros(b, 0, model.cfg.embedding_dim, dtype=dtype))
            dense = (torch.as_tensor(batch["dense"][lo:hi]).to(dtype) if m > 0
                     else torch.zeros(b, 0, dtype=dtype))
            logits = model.dense_forward(dense, sparse, seqs, seq_valid)
            out.append(logits.to(torch.float64).numpy())
    return np.concatenate(out)


def auc(scores, labels):
    """Exact ROC AUC with ties counted half (Mann-Whitney U)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    pos = labels.sum()
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float((r[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export")
    p.add_argument("--batch", required=True)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--check-logits", action="store_true",
                   help="compare with the batch's Loom logits: max|loom - ref| / "
                        "max(max|ref|, 1e-6) <= --rtol")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--auc", action="store_true", help="print the AUC on the batch's labels")
    p.add_argument("--auc-against", help="another export: |AUC - its AUC| <= --max-auc-diff")
    p.add_argument("--max-auc-diff", type=float, default=0.001)
    a = p.parse_args(argv)
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    try:
        model, meta = load_exported(a.export, dtype)
        batch, _ = safetensors_io.load(a.batch)
        logits = predict(model, meta, batch)
    except (ValueError, KeyError, OSError) as e:
        print(f"load_exported: {e}", file=sys.stderr)
        return 2
    ok = True
    print(f"load_exported: {a.export}: {len(logits)} predictions (reference, {a.dtype})")
    if a.check_logits:
        loom = batch["logits"].astype(np.float64)
        err = float(np.max(np.abs(loom - logits)) / max(float(np.max(np.abs(logits))), 1e-6))
        passed = err <= a.rtol
        ok = ok and passed
        print(f"  logits vs Loom: relative error {err:.3e} (tolerance {a.rtol:g}) "
              f"{'OK' if passed else 'FAILED'}")
    if a.auc or a.auc_against:
        mine = auc(logits, batch["label"])
        print(f"  AUC {mine:.6f}")
        if a.auc_against:
            other_model, other_meta = load_exported(a.auc_against, dtype)
            theirs = auc(predict(other_model, other_meta, batch), batch["label"])
            passed = abs(mine - theirs) <= a.max_auc_diff
            ok = ok and passed
            print(f"  AUC of {a.auc_against}: {theirs:.6f}; difference {abs(mine - theirs):.6f} "
                  f"(tolerance {a.max_auc_diff:g}) {'OK' if passed else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
