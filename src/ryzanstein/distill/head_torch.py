"""The draft head in torch, for training: the same arithmetic as the native head (models/head.py), unrolled
over several drafting steps the way it drafts (EAGLE-3's "training-time test").

Step 1 at row i reads the target's hidden states at i and the token x_{i+1}; step j > 1 at row i reads the
head's own output of step j - 1 at row i and the token x_{i+j}, at position i + j - 1, and attends to step 1's
keys up to row i plus its own chain (steps 2..j at row i): exactly the KV cache the head has when it drafts
its j-th token after the target confirmed row i. Every step predicts the target's distribution at row i + j.

The token embedding, the output rows and the final norm are the target's, frozen: with few training tokens
the head learns only what it must (what the next hidden state is), in the target's own output space.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.head import HeadSpec


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rope_tables(n: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim / 2) for positions 0..n-1, as the native kernels compute them (in double)."""
    half = head_dim // 2
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    inv = torch.pow(torch.tensor(base, dtype=torch.float64), -2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    ang = pos * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, heads, head_dim): pairs (j, j + half) rotated (NeoX order, the head's)."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1)


class TorchHead(nn.Module):
    def __init__(self, spec: HeadSpec, embedding: torch.Tensor, output: torch.Tensor, out_norm: torch.Tensor,
                 seed: int = 0) -> None:
        super().__init__()
        self.spec = spec
        d, qd, kvd = spec.dim, spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim
        g = torch.Generator().manual_seed(seed)

        def lin(rows: int, cols: int, scale: float = 1.0) -> nn.Parameter:
            return nn.Parameter(torch.randn(rows, cols, generator=g) * (scale / math.sqrt(cols)))

        self.fuse = lin(d, len(spec.layers) * d)
        self.mix = lin(d, 2 * d)
        self.wq, self.wk, self.wv = lin(qd, d), lin(kvd, d), lin(kvd, d)
        # the residual branches' last matrices start at zero: the layer starts as the identity on its input
        self.wo = lin(d, qd, 0.0)
        self.wgate, self.wup = lin(spec.ffn, d), lin(spec.ffn, d)
        self.wdown = lin(d, spec.ffn, 0.0)
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.ffn_norm = nn.Parameter(torch.ones(d))
        # frozen, the target's: buffers (not trained, not in the optimizer)
        self.register_buffer("embedding", embedding, persistent=False)  # (target vocab, d), any float dtype
        self.register_buffer("output", output, persistent=False)  # (draft vocab, d) float32
        self.register_buffer("out_norm", out_norm, persistent=False)  # (d,)
        # 1 / the typical size of each normalized feature dimension (set from the training features): a few
        # dimensions of a residual stream are orders of magnitude larger than the rest, and Adam moves every
        # weight alike, so the fusing matrix learns on inputs of one scale; folded into `fuse` on export
        self.register_buffer("feat_scale", torch.ones(len(spec.layers) * d))

    def trained(self) -> dict[str, nn.Parameter]:
        return dict(self.named_parameters())

    def _attend(self, q: torch.Tensor, k1: torch.Tensor, v1: torch.Tensor, chain: list[tuple[torch.Tensor, torch.Tensor]]
                ) -> torch.Tensor:
        """q (T, H, hd) of one step; step 1's keys/values (T, Hkv, hd) causally, the chain's at the same row."""
        s = self.spec
        rep = s.n_head // s.n_head_kv
        scale = 1.0 / math.sqrt(s.head_dim)
        T = q.shape[0]
        qh = q.transpose(0, 1)  # (H, T, hd)
        k1h = k1.repeat_interleave(rep, dim=1).transpose(0, 1)  # (H, T, hd)
        v1h = v1.repeat_interleave(rep, dim=1).transpose(0, 1)
        scores = torch.matmul(qh, k1h.transpose(1, 2)) * scale  # (H, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        extra = [(qh * kc.repeat_interleave(rep, dim=1).transpose(0, 1)).sum(-1, keepdim=True) * scale
                 for kc, _ in chain]  # (H, T, 1) each
        allsc = torch.cat([scores, *extra], dim=-1) if extra else scores
        p = torch.softmax(allsc.float(), dim=-1).to(q.dtype)
        out = torch.matmul(p[..., :T], v1h)  # (H, T, hd)
        for c, (_, vc) in enumerate(chain):
            out = out + p[..., T + c:T + c + 1] * vc.repeat_interleave(rep, dim=1).transpose(0, 1)
        return out.transpose(0, 1).reshape(T, -1)

    def forward(self, feats: torch.Tensor, nxt: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """feats (T, layers * d): the target's hidden states at rows 0..T-1 of a document x_0..x_{T-1};
        nxt (T - 1,): nxt[i] = x_{i+1}. Returns per step j = 1..steps the head's outputs (T - j, d) at rows
        i = 0..T-j-1, whose logits predict the target's distribution at row i + j."""
        s = self.spec
        eps = s.eps
        T = feats.shape[0]
        d, L = s.dim, len(s.layers)
        f = rms(feats.float().view(T, L, d), eps).view(T, L * d) * self.feat_scale
        g = f @ self.fuse.t()
        cos, sin = rope_tables(T + steps, s.head_dim, s.rope_base)
        outs = []
        k1 = v1 = None
        chain: list[tuple[torch.Tensor, torch.Tensor]] = []
        for j in range(1, steps + 1):
            n = T - j  # rows i = 0..n-1 whose step-j prediction (row i + j) is inside the document
            if n <= 0:
                break
            g = g[:n]
            e = self.embedding[nxt[j - 1:j - 1 + n]].float()  # x_{i+j}
            x = torch.cat([rms(e, eps), rms(g, eps)], dim=-1) @ self.mix.t()
            xn = rms(x, eps) * self.attn_norm
            q = (xn @ self.wq.t()).view(n, s.n_head, s.head_dim)
            k = (xn @ self.wk.t()).view(n, s.n_head_kv, s.head_dim)
            v = (xn @ self.wv.t()).view(n, s.n_head_kv, s.head_dim)
            c, sn = cos[j - 1:j - 1 + n], sin[j - 1:j - 1 + n]  # position i + j - 1
            q, k = apply_rope(q, c, sn), apply_rope(k, c, sn)
            if j == 1:
                k1, v1 = k, v
                att = self._attend(q, k1, v1, [])
            else:
                chain = [(kc[:n], vc[:n]) for kc, vc in chain] + [(k, v)]
                att = self._attend(q, k1[:n], v1[:n], chain)
            h = x + att @ self.wo.t()
            hn = rms(h, eps) * self.ffn_norm
            h = h + (F.silu(hn @ self.wgate.t()) * (hn @ self.wup.t())) @ self.wdown.t()
            outs.append(h)
            g = h
        return outs

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return (rms(h, self.spec.eps) * self.out_norm) @ self.output.t()

    def export(self) -> tuple[dict, dict]:
        """The matrices and vectors in the head file's names, float32 numpy."""
        t = lambda p: p.detach().float().cpu().numpy()  # noqa: E731
        mats = {"fuse": t(self.fuse * self.feat_scale), "mix": t(self.mix), "blk.0.attn_q": t(self.wq), "blk.0.attn_k": t(self.wk),
                "blk.0.attn_v": t(self.wv), "blk.0.attn_output": t(self.wo), "blk.0.ffn_gate": t(self.wgate),
                "blk.0.ffn_up": t(self.wup), "blk.0.ffn_down": t(self.wdown)}
        vecs = {"blk.0.attn_norm": t(self.attn_norm), "blk.0.ffn_norm": t(self.ffn_norm),
                "output_norm": self.out_norm.float().cpu().numpy()}
        return mats, vecs
