#!/usr/bin/python3
"""PyTorch reference of the InterFormer model as Loom implements it (docs/model.md).

This file is the executable form of the contract in docs/model.md; the two must agree.
Every parameter is an explicit nn.Parameter whose state_dict name and shape are the names the
C++ trainer uses (gradients in Loom's parity output are "grad.<name>").

Entry points
  InterFormerDense(cfg)            the dense model: embedded inputs -> logits [B]
      forward(dense [B,m], sparse [B,n,d], seqs: list of k x [B,T,d], seq_mask [B,T] (1 = real))
  InterFormerFull(cfg, features)   the same model plus embedding tables `embedding.<t>.weight`
      forward(dense [B,m], sparse_ids: list of n x [B,P_i] int64 (-1 = empty slot),
              seq_ids: list of k x [B,T] int64 (-1 = padding; mask taken from seq_ids[0]))
  bce_loss(logits, label)          BCEWithLogits, mean over B
  ModelConfig / config_from_json   the config (field names = csrc/proto/model.proto)
  init_parameters(model, seed)     the documented init rule (docs/model.md §Init)
  run_reference(...)               forward + backward, returns logits/loss/all gradients

Runs in float32 or float64 (model.to(dtype); inputs of the same dtype).
Dimension letters: B batch, d embedding dim, m dense, n sparse, k sequences, T sequence length,
T' = T + n_cls (CLS prepended), N_x non-sequence tokens, M interaction tokens, H heads.
"""

import json
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Configuration (mirrors csrc/proto/model.proto; defaults must match its [default = ...]).

# enum field -> (proto value prefix, short value names in proto number order)
ENUMS = {
    "architecture": ("ARCHITECTURE_", ["INTERFORMER", "DLRM_BASELINE"]),
    "interleaving": ("INTERLEAVING_", ["INT", "N2S", "S2N", "SEP", "SOLE"]),
    "final_summary": ("FINAL_SUMMARY_", ["EXTRA_CROSS", "LITERAL"]),
    "masknet_activation": ("MASKNET_ACTIVATION_", ["RELU", "SILU"]),
    "gating_form": ("GATING_FORM_", ["GLU", "LITERAL"]),
    "gating_literal_activation": ("GATING_ACTIVATION_", ["SIGMOID", "TANH", "IDENTITY"]),
    "interaction_backbone": ("INTERACTION_BACKBONE_", ["DHEN", "DOT", "DCN"]),
    "pffn_form": ("PFFN_FORM_", ["LOW_RANK", "HYPERNET"]),
    "sequence_residual": ("SEQUENCE_RESIDUAL_", ["PRE_LN", "LITERAL"]),
}

DEFAULT_HEAD_HIDDEN_DIMS = [1024, 512, 256, 128]

DEFAULTS = {
    "architecture": "INTERFORMER",
    "embedding_dim": 64,
    "num_dense_features": 0,
    "num_sparse_features": 0,
    "num_sequences": 1,
    "num_layers": 3,
    "num_heads": 2,
    "num_cls_tokens": 4,
    "num_pma_tokens": 2,
    "num_recent_tokens": 2,
    "layer_norm_eps": 1e-5,
    "interleaving": "INT",
    "final_summary": "EXTRA_CROSS",
    "masknet_expansion": 2,
    "masknet_activation": "RELU",
    "masknet_sigmoid_mask": False,
    "gating_form": "GLU",
    "gating_literal_activation": "SIGMOID",
    "gating_hidden_dim": 0,
    "recent_zero_padding": True,
    "interaction_backbone": "DHEN",
    "dhen_layers": 1,
    "dcn_layers": 2,
    "dcn_rank": 32,
    "interaction_mlp_hidden_dim": 0,
    "pffn_form": "LOW_RANK",
    "pffn_hypernet_hidden_dim": 64,
    "sequence_residual": "PRE_LN",
    "use_rope": True,
    "rope_base": 10000.0,
    "head_hidden_dims": [],  # empty = DEFAULT_HEAD_HIDDEN_DIMS; [0] = no hidden layer
    "head_dropout": 0.0,
}


def _snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class ModelConfig:
    """Attribute access to the model config; enums normalised to their short names."""

    def __init__(self, **fields):
        vals = dict(DEFAULTS)
        for key, v in fields.items():
            key = _snake(key)
            if key not in DEFAULTS:
                raise ValueError(f"model_config: unknown field {key!r}")
            vals[key] = v
        for key, (prefix, names) in ENUMS.items():
            v = vals[key]
            if isinstance(v, int) and not isinstance(v, bool):
                if not 0 <= v < len(names):
                    raise ValueError(f"model_config.{key}: enum number {v} out of range")
                v = names[v]
            v = str(v)
            if v.startswith(prefix):
                v = v[len(prefix):]
            if v not in names:
                raise ValueError(f"model_config.{key}: {vals[key]!r} is not one of {names}")
            vals[key] = v
        vals["head_hidden_dims"] = [int(h) for h in vals["head_hidden_dims"]]
        self.__dict__.update(vals)
        self.validate()

    # Derived quantities ------------------------------------------------------------------
    @property
    def head_widths(self):
        h = self.head_hidden_dims
        if not h:
            return list(DEFAULT_HEAD_HIDDEN_DIMS)
        if h == [0]:
            return []
        return h

    @property
    def sole(self):
        return self.interleaving == "SOLE"

    @property
    def cls_prepend(self):  # CLS prepend and X_sum-conditioned PFFN (non-seq -> seq flow)
        return self.interleaving in ("INT", "N2S")

    @property
    def const_xsum(self):  # PFFN uses a learned constant instead of X_sum
        return self.interleaving in ("S2N", "SEP")

    @property
    def feed_ssum(self):  # S_sum joins the Interaction Arch input (seq -> non-seq flow)
        return self.interleaving in ("INT", "S2N")

    @property
    def extra_cross(self):
        return self.final_summary == "EXTRA_CROSS"

    @property
    def n_x(self):
        d_tok = 1 if self.num_dense_features > 0 else 0
        return d_tok + self.num_sparse_features + (self.num_sequences if self.sole else 0)

    @property
    def n_s(self):
        if self.sole:
            return 0
        return ((self.num_cls_tokens if self.cls_prepend else 0) + self.num_pma_tokens
                + self.num_recent_tokens)

    @property
    def m_tokens(self):
        return self.n_x + (self.n_s if self.feed_ssum else 0)

    @property
    def head_in(self):
        return (self.num_cls_tokens + self.n_s) * self.embedding_dim

    def x_summary_used(self, l):
        """Whether cross arch l computes X_sum (and so owns x_lce / x_gate)."""
        L = self.num_layers
        if l == L:
            return self.extra_cross
        return self.cls_prepend or (not self.extra_cross and l == L - 1)

    def s_summary_used(self, l):
        """Whether cross arch l computes S_sum (and so owns pma / s_gate)."""
        L = self.num_layers
        if self.sole:
            return False
        if l == L:
            return self.extra_cross
        return self.feed_ssum or (not self.extra_cross and l == L - 1)

    def validate(self):
        c = self
        d = c.embedding_dim

        def need(ok, msg):
            if not ok:
                raise ValueError(f"model_config: {msg}")

        need(c.architecture == "INTERFORMER",
             f"architecture {c.architecture}: this reference implements the InterFormer only")
        need(d >= 2, f"embedding_dim={d} must be >= 2")
        need(c.num_dense_features >= 0 and c.num_sparse_features >= 0, "feature counts >= 0")
        need(c.num_sequences >= 1, "num_sequences must be >= 1")
        need(c.n_x >= 1, "need at least one non-sequence token (dense or sparse)")
        need(c.num_layers >= 1, "num_layers must be >= 1")
        need(c.num_heads >= 1 and d % c.num_heads == 0,
             f"embedding_dim={d} not divisible by num_heads={c.num_heads}")
        need(not c.use_rope or (d // c.num_heads) % 2 == 0, "use_rope needs an even head_dim")
        need(c.num_cls_tokens >= 1 and c.num_pma_tokens >= 1, "num_cls/pma_tokens >= 1")
        need(c.num_recent_tokens >= 0, "num_recent_tokens >= 0")
        need(c.m_tokens >= 2, "the interaction arch needs M >= 2 tokens")
        need(c.dhen_layers >= 1 and c.dcn_layers >= 1 and c.dcn_rank >= 1, "dhen/dcn sizes >= 1")
        need(c.masknet_expansion >= 1, "masknet_expansion >= 1")
        need(c.gating_hidden_dim >= 0 and c.interaction_mlp_hidden_dim >= 0, "hidden dims >= 0")
        need(c.pffn_hypernet_hidden_dim >= 1, "pffn_hypernet_hidden_dim >= 1")
        need(0.0 <= c.head_dropout < 1.0, "head_dropout in [0, 1)")
        need(all(h >= 1 for h in c.head_widths), "head_hidden_dims entries >= 1 (or [0])")

    def to_dict(self):
        return {k: self.__dict__[k] for k in DEFAULTS}

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)


def config_from_json(text_or_dict):
    d = json.loads(text_or_dict) if isinstance(text_or_dict, str) else dict(text_or_dict)
    return ModelConfig(**d)


# ---------------------------------------------------------------------------------------------
# Building blocks. Each nn.Module attribute name is one component of the parameter names.

class TokenLinear(nn.Module):
    """Linear map on the token axis, no bias: Y[b,j,:] = sum_i W[j,i] X[b,i,:]; W [out, in]."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))

    def forward(self, x):  # [B, n_in, d] -> [B, n_out, d]
        return torch.einsum("ji,bid->bjd", self.weight, x)


class Gating(nn.Module):
    """Self-gating (spec §3.1). GLU: Z*sigmoid(g(Z)); LITERAL: act(Z*g(Z)). Per token, [B,N,d]."""

    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.embedding_dim, cfg.gating_hidden_dim
        self.form, self.act = cfg.gating_form, cfg.gating_literal_activation
        if h > 0:
            self.fc1 = nn.Linear(d, h)
            self.fc2 = nn.Linear(h, d)
        else:
            self.fc1 = nn.Linear(d, d)
            self.fc2 = None

    def forward(self, z):
        g = self.fc1(z)
        if self.fc2 is not None:
            g = self.fc2(F.silu(g))
        if self.form == "GLU":
            return z * torch.sigmoid(g)
        y = z * g
        if self.act == "SIGMOID":
            return torch.sigmoid(y)
        if self.act == "TANH":
            return torch.tanh(y)
        return y


class AttnProj(nn.Module):
    """The q, k, v, o projections of a multi-head attention, each Linear(d->d) with bias."""

    def __init__(self, d):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))


def split_heads(x, h):  # [B, T, d] -> [B, H, T, d/H]; head i owns columns [i*hd, (i+1)*hd)
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2)


def merge_heads(x):  # [B, H, T, hd] -> [B, T, H*hd]
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


def masked_attention(q, k, v, key_mask):
    """softmax(q k^T / sqrt(hd)) v over valid keys only; a query whose keys are all masked
    gets output 0. q [B,H,Tq,hd], k/v [B,H,Tk,hd], key_mask [B,Tk] bool (True = valid)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B,H,Tq,Tk]
    valid = key_mask[:, None, None, :]
    s = s.masked_fill(~valid, float("-inf"))
    smax = s.amax(dim=-1, keepdim=True)
    smax = torch.where(torch.isfinite(smax), smax, torch.zeros_like(smax)).detach()
    p = torch.exp(s - smax)  # exactly 0 at masked keys
    denom = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.matmul(p, v)


def rope_tables(t, hd, base, dtype, device):
    """cos, sin [T, hd/2]: angle[p, i] = p * base^(-2i/hd), computed in float64, then cast."""
    i = torch.arange(hd // 2, dtype=torch.float64)
    inv = torch.pow(torch.tensor(float(base), dtype=torch.float64), -2.0 * i / hd)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).to(dtype=dtype, device=device), torch.sin(ang).to(dtype=dtype,
                                                                          device=device)


def apply_rope(x, cos, sin):
    """Interleaved RoPE on [B,H,T,hd]: pair (2i, 2i+1) rotated by angle[p, i]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).flatten(-2)


class PMA(nn.Module):
    """Pooling by multi-head attention: learned queries [n_pma, d] attend over S (no RoPE,
    no residual, no LN). Output [B, n_pma, d]."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg.embedding_dim
        self.h = cfg.num_heads
        self.query = nn.Parameter(torch.empty(cfg.num_pma_tokens, d))
        self.attn = AttnProj(d)

    def forward(self, s, key_mask):
        b = s.shape[0]
        q = self.attn.q(self.query)[None].expand(b, -1, -1)  # same queries for every row
        o = masked_attention(split_heads(q, self.h), split_heads(self.attn.k(s), self.h),
                             split_heads(self.attn.v(s), self.h), key_mask)
        return self.attn.o(merge_heads(o))


class CrossArch(nn.Module):
    """Cross arch l: X_sum = x_gate(x_lce(X)) [B,n_cls,d];
    S_sum = s_gate([S[:, :n_cls] (if CLS) || PMA(S) || recent(S)]) [B,n_s,d].
    Only the parts whose summaries are consumed exist (ModelConfig.x/s_summary_used)."""

    def __init__(self, cfg, has_x, has_s):
        super().__init__()
        self.cfg = cfg
        if has_x:
            self.x_lce = TokenLinear(cfg.n_x, cfg.num_cls_tokens)
            self.x_gate = Gating(cfg)
        if has_s:
            self.pma = PMA(cfg)
            self.s_gate = Gating(cfg)

    def x_summary(self, x):
        return self.x_gate(self.x_lce(x))

    def s_summary(self, s, key_mask):
        cfg = self.cfg
        parts = []
        if cfg.cls_prepend:
            parts.append(s[:, :cfg.num_cls_tokens])
        parts.append(self.pma(s, key_mask))
        kr = cfg.num_recent_tokens
        if kr > 0:
            recent = s[:, s.shape[1] - kr:]
            if cfg.recent_zero_padding:
                recent = recent * key_mask[:, s.shape[1] - kr:, None].to(s.dtype)
            parts.append(recent)
        return self.s_gate(torch.cat(parts, dim=1))


class DcnCross(nn.Module):
    def __init__(self, md, r):
        super().__init__()
        self.down = nn.Linear(md, r, bias=False)
        self.up = nn.Linear(r, md)


class DCN(nn.Module):
    """Low-rank DCN: z0 = flatten(Z); x <- z0 * up(down(x)) + x, dcn_layers times; out(x)."""

    def __init__(self, cfg, mtok):
        super().__init__()
        md = mtok * cfg.embedding_dim
        self.cross = nn.ModuleList(DcnCross(md, cfg.dcn_rank) for _ in range(cfg.dcn_layers))
        self.out = nn.Linear(md, md)

    def forward(self, z):
        b = z.shape[0]
        z0 = z.reshape(b, -1)
        x = z0
        for c in self.cross:
            x = z0 * c.up(c.down(x)) + x
        return self.out(x).reshape(z.shape)


class DhenLayer(nn.Module):
    """Y = LayerNorm_d(sum of modules(Z) + Z); modules from interaction_backbone."""

    def __init__(self, cfg, mtok):
        super().__init__()
        d = cfg.embedding_dim
        bb = cfg.interaction_backbone
        self.mtok = mtok
        if bb in ("DHEN", "DOT"):
            self.dot = nn.Linear(mtok * (mtok - 1) // 2, mtok * d)
        if bb in ("DHEN", "DCN"):
            self.dcn = DCN(cfg, mtok)
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        iu = torch.triu_indices(mtok, mtok, offset=1)  # strict upper triangle, row-major
        self.register_buffer("iu0", iu[0], persistent=False)
        self.register_buffer("iu1", iu[1], persistent=False)

    def forward(self, z):
        acc = z
        if hasattr(self, "dot"):
            g = torch.matmul(z, z.transpose(1, 2))  # [B, M, M]
            acc = acc + self.dot(g[:, self.iu0, self.iu1]).reshape(z.shape)
        if hasattr(self, "dcn"):
            acc = acc + self.dcn(z)
        return self.norm(acc)


class TokenMLP(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


class InteractionArch(nn.Module):
    """Z [B,M,d] -> DHEN layers -> token_mix (M -> N_x) -> per-token MLP -> X_new [B,N_x,d]."""

    def __init__(self, cfg):
        super().__init__()
        mtok, d = cfg.m_tokens, cfg.embedding_dim
        self.dhen = nn.ModuleList(DhenLayer(cfg, mtok) for _ in range(cfg.dhen_layers))
        self.token_mix = TokenLinear(mtok, cfg.n_x)
        self.mlp = TokenMLP(d, cfg.interaction_mlp_hidden_dim or d)

    def forward(self, z):
        for layer in self.dhen:
            z = layer(z)
        return self.mlp(self.token_mix(z))


class LowRankPffn(nn.Module):
    """P = (U Wp^T) Xs: Wp [n_cls, d]; U [B,T',d], Xs [B,n_cls,d] -> [B,T',d]."""

    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.num_cls_tokens, cfg.embedding_dim))

    def forward(self, xs, u):
        c = torch.matmul(u, self.weight.t())  # [B,T',n_cls]
        return torch.matmul(c, xs)


class HypernetPffn(nn.Module):
    """Wf = reshape(fc2(SiLU(fc1(flatten(Xs))))) [B,d,d]; P[b,t,i] = sum_j Wf[b,i,j] U[b,t,j]."""

    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.embedding_dim, cfg.pffn_hypernet_hidden_dim
        self.fc1 = nn.Linear(cfg.num_cls_tokens * d, h)
        self.fc2 = nn.Linear(h, d * d)

    def forward(self, xs, u):
        b, _, d = u.shape
        wf = self.fc2(F.silu(self.fc1(xs.reshape(b, -1)))).reshape(b, d, d)
        return torch.matmul(u, wf.transpose(1, 2))


class SequenceArch(nn.Module):
    """PFFN + RoPE MHA over S [B,T',d] conditioned on Xs [B,n_cls,d]."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg.embedding_dim
        self.cfg = cfg
        self.pffn = LowRankPffn(cfg) if cfg.pffn_form == "LOW_RANK" else HypernetPffn(cfg)
        self.attn = AttnProj(d)
        if cfg.sequence_residual == "PRE_LN":
            self.pffn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
            self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        if cfg.const_xsum:
            self.const_xsum = nn.Parameter(torch.empty(cfg.num_cls_tokens, d))

    def mha(self, x, key_mask):
        cfg, h = self.cfg, self.cfg.num_heads
        q = split_heads(self.attn.q(x), h)
        k = split_heads(self.attn.k(x), h)
        v = split_heads(self.attn.v(x), h)
        if cfg.use_rope:
            cos, sin = rope_tables(x.shape[1], q.shape[-1], cfg.rope_base, x.dtype, x.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return self.attn.o(merge_heads(masked_attention(q, k, v, key_mask)))

    def forward(self, s, xs, key_mask):
        if self.cfg.sequence_residual == "PRE_LN":
            s1 = s + self.pffn(xs, self.pffn_norm(s))
            return s1 + self.mha(self.attn_norm(s1), key_mask)
        return self.mha(self.pffn(xs, s), key_mask)


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.interaction = InteractionArch(cfg)
        if not cfg.sole:
            self.sequence = SequenceArch(cfg)


class MaskNet(nn.Module):
    """S = lce(S_cat * mask), mask = [sigmoid](mask2(act(mask1(S_cat)))), per time step."""

    def __init__(self, cfg):
        super().__init__()
        kd = cfg.num_sequences * cfg.embedding_dim
        self.cfg = cfg
        self.mask1 = nn.Linear(kd, kd * cfg.masknet_expansion)
        self.mask2 = nn.Linear(kd * cfg.masknet_expansion, kd)
        self.lce = nn.Linear(kd, cfg.embedding_dim)

    def forward(self, s_cat):  # [B,T,kd] -> [B,T,d]
        hdn = self.mask1(s_cat)
        hdn = F.relu(hdn) if self.cfg.masknet_activation == "RELU" else F.silu(hdn)
        mask = self.mask2(hdn)
        if self.cfg.masknet_sigmoid_mask:
            mask = torch.sigmoid(mask)
        return self.lce(s_cat * mask)


class Head(nn.Module):
    """fc0..fc{n-1} (Linear + SiLU [+ dropout in train mode]) then out: Linear(-> 1)."""

    def __init__(self, cfg):
        super().__init__()
        self.p = cfg.head_dropout
        self.widths = cfg.head_widths
        w_in = cfg.head_in
        for i, w in enumerate(self.widths):
            setattr(self, f"fc{i}", nn.Linear(w_in, w))
            w_in = w
        self.out = nn.Linear(w_in, 1)

    def forward(self, h):
        for i in range(len(self.widths)):
            h = F.silu(getattr(self, f"fc{i}")(h))
            if self.p > 0:
                h = F.dropout(h, self.p, self.training)
        return self.out(h).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The model.

class InterFormerDense(nn.Module):
    """The dense InterFormer: embedded inputs -> logits [B]. See docs/model.md."""

    def __init__(self, cfg):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            cfg = config_from_json(cfg)
        self.cfg = cfg
        d, m, L = cfg.embedding_dim, cfg.num_dense_features, cfg.num_layers
        if m > 0:
            self.dense_proj = nn.Linear(m, d)
        if not cfg.sole:
            self.masknet = MaskNet(cfg)
        n_cross = L + 1 if cfg.extra_cross else L
        self.cross = nn.ModuleList(
            CrossArch(cfg, cfg.x_summary_used(l), cfg.s_summary_used(l)) for l in range(n_cross))
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(L))
        self.head = Head(cfg)
        init_parameters(self, seed=0)

    def dense_forward(self, dense, sparse, seqs, seq_mask):
        """dense [B,m] (ignored if m = 0), sparse [B,n,d], seqs k x [B,T,d], seq_mask [B,T]
        (nonzero = real token). Returns logits [B]."""
        cfg = self.cfg
        km = seq_mask.bool()
        b = sparse.shape[0]
        toks = []
        if cfg.num_dense_features > 0:
            toks.append(self.dense_proj(dense)[:, None])  # token 0
        toks.append(sparse)
        if cfg.sole:  # masked mean of each raw sequence -> k extra tokens
            w = km.to(sparse.dtype)
            cnt = w.sum(dim=1).clamp(min=1.0)[:, None]
            toks += [((sq * w[..., None]).sum(dim=1) / cnt)[:, None] for sq in seqs]
        x = torch.cat(toks, dim=1)  # [B, N_x, d]

        s = None
        if not cfg.sole:
            s = self.masknet(torch.cat(list(seqs), dim=-1))  # [B, T, d]
        xsum0 = None
        if cfg.cls_prepend:
            xsum0 = self.cross[0].x_summary(x)  # [B, n_cls, d]
            s = torch.cat([xsum0, s], dim=1)  # [B, T', d]
            km = torch.cat([torch.ones(b, cfg.num_cls_tokens, dtype=torch.bool,
                                       device=km.device), km], dim=1)

        xsum = ssum = None
        for l, layer in enumerate(self.layers):
            # Cross arch l on the layer-l inputs (both arches then read these; spec A12).
            xsum = ssum = None
            if cfg.x_summary_used(l):
                xsum = xsum0 if (l == 0 and xsum0 is not None) else self.cross[l].x_summary(x)
            if cfg.s_summary_used(l):
                ssum = self.cross[l].s_summary(s, km)
            z = torch.cat([x, ssum], dim=1) if cfg.feed_ssum else x  # [B, M, d]
            x_new = layer.interaction(z)  # [B, N_x, d]
            if not cfg.sole:
                if cfg.const_xsum:
                    ctx = layer.sequence.const_xsum[None].expand(b, -1, -1)
                else:
                    ctx = xsum
                s = layer.sequence(s, ctx, km)  # [B, T', d]
            x = x_new

        if cfg.extra_cross:
            L = cfg.num_layers
            xsum = self.cross[L].x_summary(x)
            ssum = None if cfg.sole else self.cross[L].s_summary(s, km)
        parts = [xsum.reshape(b, -1)]
        if not cfg.sole:
            parts.append(ssum.reshape(b, -1))
        return self.head(torch.cat(parts, dim=1))

    forward = dense_forward


def bce_loss(logits, label):
    return F.binary_cross_entropy_with_logits(logits, label, reduction="mean")


# ---------------------------------------------------------------------------------------------
# Full model with embedding tables (for checkpoint-export tests; deliberately simple).

class FeatureSpec:
    """Which table each feature reads.

    spec = {"tables": {"<table>": rows, ...},
            "sparse":    [{"name": str, "table": str, "pooling": "SUM" | "MEAN"}, ...],  # n
            "sequences": [{"name": str, "table": str}, ...]}                              # k
    Table names must not contain '.'. Every table has dim d = embedding_dim.
    """

    def __init__(self, spec):
        self.tables = dict(spec["tables"])
        self.sparse = list(spec.get("sparse", []))
        self.sequences = list(spec["sequences"])
        for t in self.tables:
            if "." in t:
                raise ValueError(f"table name {t!r} contains '.'")
        for f in self.sparse + self.sequences:
            if f["table"] not in self.tables:
                raise ValueError(f"feature {f['name']!r}: unknown table {f['table']!r}")
        for f in self.sparse:
            if f.get("pooling", "SUM") not in ("SUM", "MEAN"):
                raise ValueError(f"feature {f['name']!r}: pooling must be SUM or MEAN")


class EmbeddingTable(nn.Module):
    def __init__(self, rows, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, dim))


class InterFormerFull(InterFormerDense):
    """Dense model + tables `embedding.<table>.weight` [rows, d].

    Pooled sparse feature i: ids [B, P_i] int64, -1 = empty slot; SUM = sum of the valid rows,
    MEAN = that sum / number of valid ids (0 when none). Sequence feature j: ids [B, T] int64,
    -1 = padding (gathers a zero vector); seq_mask = (seq_ids[0] >= 0).
    """

    def __init__(self, cfg, features):
        super().__init__(cfg)
        self.features = features if isinstance(features, FeatureSpec) else FeatureSpec(features)
        c = self.cfg
        if len(self.features.sparse) != c.num_sparse_features:
            raise ValueError("feature spec: number of sparse features != num_sparse_features")
        if len(self.features.sequences) != c.num_sequences:
            raise ValueError("feature spec: number of sequences != num_sequences")
        self.embedding = nn.ModuleDict(
            {t: EmbeddingTable(rows, c.embedding_dim) for t, rows in self.features.tables.items()})
        gen = torch.Generator().manual_seed(1)
        for t in self.embedding.values():
            with torch.no_grad():
                t.weight.normal_(0.0, 0.01, generator=gen)

    def _lookup(self, table, ids):  # ids [...] int64 with -1 = none -> [..., d], zeros at -1
        w = self.embedding[table].weight
        valid = (ids >= 0)
        out = F.embedding(ids.clamp(min=0), w)
        return out * valid[..., None].to(w.dtype), valid

    def forward(self, dense, sparse_ids, seq_ids):
        fs = self.features
        pooled = []
        for f, ids in zip(fs.sparse, sparse_ids):
            e, valid = self._lookup(f["table"], ids)  # [B, P, d]
            v = e.sum(dim=1)
            if f.get("pooling", "SUM") == "MEAN":
                v = v / valid.sum(dim=1).clamp(min=1)[:, None].to(v.dtype)
            pooled.append(v)
        b = seq_ids[0].shape[0]
        w = next(iter(self.embedding.values())).weight
        sparse = (torch.stack(pooled, dim=1) if pooled
                  else torch.zeros(b, 0, self.cfg.embedding_dim, dtype=w.dtype))
        seqs = [self._lookup(f["table"], ids)[0] for f, ids in zip(fs.sequences, seq_ids)]
        seq_mask = seq_ids[0] >= 0
        return self.dense_forward(dense, sparse, seqs, seq_mask)


# ---------------------------------------------------------------------------------------------
# Initialisation (docs/model.md §Init). Loom draws from Philox in C++; this uses torch's RNG
# with the same distributions.

def _init_rule(name, p, cfg):
    """-> (kind, a): 'zeros' | 'ones' | ('normal', std) | ('uniform', bound)."""
    if name.startswith("embedding."):
        return ("normal", 0.01)
    leaf = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    if parent in ("norm", "pffn_norm", "attn_norm"):
        return ("ones", None) if leaf == "weight" else ("zeros", None)
    if leaf == "bias":
        return ("zeros", None)
    if leaf in ("query", "const_xsum"):
        return ("normal", 0.02)
    if name.endswith("sequence.pffn.fc2.weight"):  # hypernet output: keep Wf u at O(|u|)
        return ("uniform", 1.0 / math.sqrt(p.shape[1] * cfg.embedding_dim))
    return ("uniform", 1.0 / math.sqrt(p.shape[1]))  # every [out, in] weight


def init_parameters(model, seed=0, perturb=False):
    """Contract init; perturb=True then adds noise to biases (N(0,0.1)) and LayerNorm params
    (gamma 1+N(0,0.1), beta N(0,0.1)) so parity tests exercise every parameter."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    with torch.no_grad():
        for name, p in model.named_parameters():
            kind, a = _init_rule(name, p, cfg)
            if kind == "zeros":
                p.zero_()
            elif kind == "ones":
                p.fill_(1.0)
            elif kind == "normal":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * a)
            else:
                p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * a)
            if perturb and kind in ("zeros", "ones"):
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.1)


def init_rules(model):
    """name -> human-readable init rule (for docs and debugging)."""
    out = {}
    for name, p in model.named_parameters():
        kind, a = _init_rule(name, p, model.cfg)
        out[name] = kind if a is None else f"{kind}({a:.6g})"
    return out


# ---------------------------------------------------------------------------------------------
# Forward + backward driver used by check_parity.py and bench_torch.py.

def load_state(model, weights):
    """Copy numpy/torch tensors name -> value into the model; every parameter must be present
    with the exact shape, and no unknown names are allowed."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    extra = sorted(set(weights) - set(params))
    if missing or extra:
        raise ValueError(f"weights do not match the config: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''}, unexpected {extra[:8]}"
                         f"{'...' if len(extra) > 8 else ''}")
    with torch.no_grad():
        for n, p in params.items():
            w = torch.as_tensor(weights[n])
            if tuple(w.shape) != tuple(p.shape):
                raise ValueError(f"weight {n}: shape {list(w.shape)} != expected {list(p.shape)}")
            p.copy_(w.to(p.dtype))


def batch_tensors(batch, cfg, dtype):
    """Batch dict (numpy) -> (dense, sparse, seqs, seq_mask, label) torch tensors of `dtype`,
    with requires_grad on the float inputs."""
    def t(x):
        return torch.as_tensor(x).to(dtype).clone().requires_grad_(True)

    sparse = t(batch["sparse"])
    b = sparse.shape[0]
    if "dense" in batch:
        dense = t(batch["dense"])
    else:
        dense = t(torch.zeros(b, cfg.num_dense_features))
    seqs = [t(batch[f"seq.{j}"]) for j in range(cfg.num_sequences)]
    seq_mask = torch.as_tensor(batch["seq_mask"]).bool()
    label = torch.as_tensor(batch["label"]).to(dtype)
    return dense, sparse, seqs, seq_mask, label


def check_batch_shapes(batch, cfg):
    d, m, n, k = (cfg.embedding_dim, cfg.num_dense_features, cfg.num_sparse_features,
                  cfg.num_sequences)
    sp = batch["sparse"].shape
    if len(sp) != 3 or sp[1:] != (n, d):
        raise ValueError(f"batch 'sparse' shape {list(sp)} != [B, n={n}, d={d}]")
    b = sp[0]
    if m > 0 and batch["dense"].shape != (b, m):
        raise ValueError(f"batch 'dense' shape {list(batch['dense'].shape)} != [{b}, {m}]")
    t = batch["seq_mask"].shape[1]
    for j in range(k):
        if batch[f"seq.{j}"].shape != (b, t, d):
            raise ValueError(f"batch 'seq.{j}' shape {list(batch[f'seq.{j}'].shape)} != "
                             f"[{b}, {t}, {d}]")
    if batch["label"].shape != (b,):
        raise ValueError(f"batch 'label' shape {list(batch['label'].shape)} != [{b}]")
    if t + (cfg.num_cls_tokens if cfg.cls_prepend else 0) < cfg.num_recent_tokens:
        raise ValueError("sequence too short for num_recent_tokens")


def run_reference(cfg, weights, batch, dtype):
    """Forward + backward of mean BCE loss. Returns numpy float64 dict in Loom's output
    format: logits [B], loss [], grad.<param>, grad.input.sparse, grad.input.seq.<j>,
    grad.input.dense (m > 0)."""
    model = InterFormerDense(cfg).to(dtype)
    model.eval()  # dropout off (parity runs use head_dropout = 0 anyway)
    load_state(model, weights)
    dense, sparse, seqs, seq_mask, label = batch_tensors(batch, cfg, dtype)
    logits = model(dense, sparse, seqs, seq_mask)
    loss = bce_loss(logits, label)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach()}
    for n, p in model.named_parameters():
        out[f"grad.{n}"] = p.grad if p.grad is not None else torch.zeros_like(p)
    out["grad.input.sparse"] = sparse.grad if sparse.grad is not None else torch.zeros_like(sparse)
    for j, sq in enumerate(seqs):
        out[f"grad.input.seq.{j}"] = sq.grad if sq.grad is not None else torch.zeros_like(sq)
    if cfg.num_dense_features > 0:
        out["grad.input.dense"] = dense.grad
    return {k: v.detach().to(torch.float64).numpy() for k, v in out.items()}
