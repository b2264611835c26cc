"""Training the head on the cached features (torch, CPU), with exact resume, and writing it out.

The only module besides head_torch.py that imports torch: a core install never loads it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import RyzansteinError
from ..models.gguf_file import GGUFFile
from ..models import store
from ..models.head import HeadSpec, default_layers, write_head
from ..models.native import _ext
from .head_torch import TorchHead, rms
from .train import STEP_WEIGHTS, Run, doc_index, load_shards

EVAL_EVERY_S = 300.0
NEGATIVES = 1024  # random draft ids beside the document's candidates in a training softmax
WARMUP_STEPS = 20


@dataclasses.dataclass
class Progress:
    epoch: int = 0
    index: int = 0  # documents of this epoch's order done
    step: int = 0  # optimizer steps
    tokens: int = 0  # training positions done (all epochs)
    total: int = 0  # training positions planned (fixed once known)
    loss: float = float("nan")
    held_out: list | None = None  # accuracy per drafting step at the last evaluation
    history: list = dataclasses.field(default_factory=list)  # [positions trained, accuracy per step] per evaluation


def _frozen(run: Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """The target's token embedding, its output rows of the draft vocabulary (dequantized) and final norm."""
    t = run.target
    a = t._arch
    emb = np.empty((a.vocab, a.dim), np.float32)
    t.tensors["token_embd"].dequantize(emb)
    out_t = t.tensors.get("output", t.tensors["token_embd"])
    d2t = np.asarray(run.plan["d2t"], dtype=np.int64)
    if out_t is t.tensors["token_embd"]:
        rows = emb[d2t]
    else:
        full = np.empty((a.vocab, a.dim), np.float32)
        out_t.dequantize(full)
        rows = full[d2t]
        del full
    norm = output_norm(t.info.path)
    return torch.from_numpy(emb), torch.from_numpy(np.ascontiguousarray(rows)), torch.from_numpy(norm), d2t


class Trainer:
    def __init__(self, run: Run) -> None:
        self.run = run
        cfg = run.cfg
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(run.target.info.threads)
        emb, out, norm, self.d2t = _frozen(run)
        self.t2d = torch.full((emb.shape[0],), -1, dtype=torch.long)
        self.t2d[torch.from_numpy(self.d2t)] = torch.arange(len(self.d2t))
        self.head = TorchHead(run.spec(), emb, out, norm, seed=cfg.seed)
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        self.train = load_shards(run.shards("train"))
        self.held = load_shards(run.shards("held_out"))
        if not self.train:
            raise RyzansteinError("no training features were extracted: give a larger budget (--minutes/--tokens)")
        self.head.feat_scale.copy_(feature_scale(self.train, run.spec()))
        self.docs = doc_index(self.train, run.cfg.window)
        self.held_docs = doc_index(self.held)
        self.p = Progress()
        self.ckpt = run.dir / "checkpoint.pt"

    # ---- data ------------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(self.run.cfg.seed * 1000 + epoch).permutation(len(self.docs))

    def _doc(self, shards, ref):
        i, a, b = ref
        s = shards[i]
        return (torch.from_numpy(np.asarray(s["feats"][a:b], dtype=np.float32)),
                torch.from_numpy(np.asarray(s["tokens"][a:b], dtype=np.int64)),
                torch.from_numpy(np.asarray(s["top_ids"][a:b], dtype=np.int64)),
                torch.from_numpy(np.asarray(s["top_p"][a:b], dtype=np.float32)))

    def doc_loss(self, ref, shards, train: bool = True):
        """Loss (summed over positions and steps, weighted) and per step (correct, counted) for one document."""
        feats, toks, top_ids, top_p = self._doc(shards, ref)
        steps = self.run.cfg.steps
        outs = self.head(feats, toks[1:], steps)
        total = torch.zeros(())
        stats = []
        tids = self.t2d[top_ids]  # (T, TOP_K) draft ids, -1 outside the draft vocabulary
        if train:  # the softmax over the ids the target considers in this document and NEGATIVES random others
            g = torch.Generator().manual_seed(self.run.cfg.seed * 1_000_003 + ref[0] * 65_537 + ref[1])
            cand = torch.unique(torch.cat([tids[tids >= 0], torch.randint(0, len(self.d2t), (NEGATIVES,), generator=g)]))
            where = torch.full((len(self.d2t),), -1, dtype=torch.long)
            where[cand] = torch.arange(len(cand))
            rows = self.head.output[cand]
        for j, h in enumerate(outs, start=1):
            n = h.shape[0]
            tid, p = tids[j:j + n], top_p[j:j + n] * (tids[j:j + n] >= 0)
            if train:
                logits = (rms(h, self.head.spec.eps) * self.head.out_norm) @ rows.t()
                col = where[tid.clamp(min=0)].clamp(min=0)  # p is 0 where tid is -1
            else:
                logits = self.head.logits(h)
                col = tid.clamp(min=0)
            logp = torch.log_softmax(logits.float(), dim=-1)
            total = total - STEP_WEIGHTS[j - 1] * (p * logp.gather(1, col)).sum()
            if not train:
                pred = torch.from_numpy(self.d2t)[logits.argmax(-1)]
                stats.append((int((pred == top_ids[j:j + n, 0]).sum()), n))
        return total, stats

    # ---- schedule -------------------------------------------------------------------------------------
    def lr(self) -> float:
        p, base = self.p, self.run.cfg.lr
        warm = min(1.0, (p.step + 1) / WARMUP_STEPS)
        frac = min(1.0, p.tokens / max(1, p.total))
        return base * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    # ---- checkpoints ------------------------------------------------------------------------------------
    def save(self) -> None:
        tmp = self.ckpt.with_name(f".{self.ckpt.name}.{os.getpid()}.tmp")
        try:
            torch.save({"head": self.head.state_dict(), "opt": self.opt.state_dict(),
                        "progress": dataclasses.asdict(self.p)}, tmp)
            os.replace(tmp, self.ckpt)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RyzansteinError(f"cannot write the checkpoint {self.ckpt}: {e.strerror or e}; free some disk "
                                  "space and run again with --resume") from None

    def load(self) -> bool:
        if not self.ckpt.exists():
            return False
        try:
            d = torch.load(self.ckpt, weights_only=False)
            self.head.load_state_dict(d["head"], strict=False)
            self.opt.load_state_dict(d["opt"])
            self.p = Progress(**d["progress"])
        except Exception as e:  # noqa: BLE001 - any damage reads as one line
            raise RyzansteinError(f"checkpoint {self.ckpt} is damaged ({type(e).__name__}): delete it to train "
                                  "from the start of this stage") from None
        return True

    # ---- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """Held-out accuracy per drafting step: the head's top id equals the target's top id."""
        counts = np.zeros((self.run.cfg.steps, 2))
        for ref in self.held_docs:
            _, stats = self.doc_loss(ref, self.held, train=False)
            for j, (c, n) in enumerate(stats):
                counts[j] += (c, n)
        return [float(c / n) if n else 0.0 for c, n in counts]

    def bigram_accuracy(self) -> float:
        """Held-out accuracy of the trivial drafter: after token x, the target's most frequent next token after
        x in the training features (what a head must beat to be worth its cost)."""
        V = self.head.embedding.shape[0]
        x = np.concatenate([np.asarray(s["tokens"]) for s in self.train]).astype(np.int64)
        y = np.concatenate([np.asarray(s["top_ids"][:, 0]) for s in self.train]).astype(np.int64)
        order = np.lexsort((y, x))
        x, y = x[order], y[order]
        pair = x * V + y
        starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        counts = np.diff(np.r_[starts, len(pair)])
        best = np.full(V, -1, dtype=np.int64)
        top = np.zeros(V, dtype=np.int64)
        for s0, c in zip(starts, counts):  # pairs sorted by x: keep each x's most frequent y
            if c > top[x[s0]]:
                top[x[s0]], best[x[s0]] = c, y[s0]
        hx = np.concatenate([np.asarray(s["tokens"]) for s in self.held]).astype(np.int64)
        hy = np.concatenate([np.asarray(s["top_ids"][:, 0]) for s in self.held]).astype(np.int64)
        return float((best[hx] == hy).mean()) if len(hx) else 0.0

    # ---- the loop -------------------------------------------------------------------------------------
    def fit(self, plan_total: int | None, minutes_left) -> Progress:
        """Train until p.total positions (plan_total; or, with only a time budget, what the measured rate fits
        in minutes_left(), fixed after the first steps so that a resume follows the same schedule)."""
        p, cfg = self.p, self.run.cfg
        if not p.total and plan_total:
            p.total = plan_total
        bar = tqdm(total=p.total or None, initial=p.tokens, unit="tok", desc="training", file=self.run.log,
                   dynamic_ncols=True, mininterval=2.0)
        t_ckpt = t_eval = time.monotonic()
        t0, tok0 = time.monotonic(), p.tokens
        order = self.order(p.epoch)
        self.stop_requested = False
        previous = _on_interrupt(self)
        try:
            while not p.total or p.tokens < p.total:
                if self.stop_requested:  # Ctrl-C: stop at this step boundary, checkpointed
                    break
                if p.index >= len(order):
                    p.epoch, p.index = p.epoch + 1, 0
                    order = self.order(p.epoch)
                self.opt.zero_grad(set_to_none=True)
                got, loss_sum = 0, 0.0
                while got < cfg.batch_tokens and p.index < len(order):
                    ref = self.docs[order[p.index]]
                    loss, _ = self.doc_loss(ref, self.train, train=True)
                    n = ref[2] - ref[1]
                    (loss / cfg.batch_tokens).backward()
                    loss_sum += float(loss.detach())
                    got += n
                    p.index += 1
                for gr in self.opt.param_groups:
                    gr["lr"] = self.lr()
                torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
                self.opt.step()
                p.step += 1
                p.tokens += got
                p.loss = loss_sum / max(1, got)
                rate = (p.tokens - tok0) / max(1e-9, time.monotonic() - t0)
                if not p.total and p.step >= 5:  # a time budget: fix the total once the rate is known
                    p.total = max(p.tokens + 1, p.tokens + int(rate * 60 * max(0.0, minutes_left() - 0.5)))
                    bar.total = p.total
                bar.update(got)
                acc = "/".join(f"{a:.2f}" for a in p.held_out) if p.held_out else "-"
                bar.set_postfix_str(f"{rate:.0f} tok/s loss {p.loss:.3f} held-out acc {acc}", refresh=False)
                now = time.monotonic()
                if now - t_eval > EVAL_EVERY_S:
                    p.held_out, t_eval = self.evaluate(), now
                    p.history.append([p.tokens, p.held_out])
                if now - t_ckpt > cfg.checkpoint_minutes * 60:
                    self.save()
                    t_ckpt = now
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        bar.close()
        self.save()
        if self.stop_requested:
            raise KeyboardInterrupt
        p.held_out = self.evaluate()
        if not p.history or p.history[-1][0] != p.tokens:
            p.history.append([p.tokens, p.held_out])
        return p

    def write(self) -> None:
        """The trained head into the store (write_head: temporary name, checked, renamed)."""
        run = self.run
        mats, vecs = self.head.export()
        rows, kind = output_rows(run.target.info.path, self.d2t)
        write_head(run.out, run.spec(trained_tokens=self.p.tokens), mats, vecs, self.d2t, rows, kind)


def output_norm(path) -> np.ndarray:
    """The target GGUF's final norm weights (float32): the head's, frozen."""
    g = GGUFFile(path)
    return np.frombuffer(g.data(next(x for x in g.tensors if x.name == "output_norm.weight")), np.float32).copy()


def output_rows(path, ids: np.ndarray) -> tuple[bytes, int]:
    """The target GGUF's output rows `ids` byte for byte (the tied embedding's where it has no output), and
    their GGML type: the head's output layer is the target's own."""
    g = GGUFFile(path)
    by_name = {t.name: t for t in g.tensors}
    t = by_name.get("output.weight") or by_name["token_embd.weight"]
    cols, rows = int(t.shape[0]), int(t.shape[1])
    row_bytes = _ext().src_row_bytes(t.type, cols)
    raw = np.frombuffer(g.data(t), np.uint8).reshape(rows, row_bytes)
    return raw[ids].tobytes(), int(t.type)


def feature_scale(shards: list[dict], spec, rows: int = 20000) -> torch.Tensor:
    """1 / the RMS of each dimension of the rms-normalized features, over the first `rows` training positions
    (deterministic: the same shards give the same scale)."""
    d, L = spec.dim, len(spec.layers)
    f = torch.from_numpy(np.concatenate([np.asarray(s["feats"][:rows], dtype=np.float32) for s in shards])[:rows])
    f = rms(f.view(-1, L, d), spec.eps).view(-1, L * d)
    return 1.0 / f.pow(2).mean(0).sqrt().clamp(min=1e-3)


def _on_interrupt(trainer: Trainer):
    """The first Ctrl-C asks the loop to stop at the next step boundary (so the checkpoint is a state a
    straight run passes through); a second one interrupts at once (the last checkpoint stays valid)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    return signal.signal(signal.SIGINT, handler)


def calibrate(run: Run, length: int = 512, reps: int = 2) -> float:
    """Training positions per second on this machine for this head (random inputs, no features needed yet)."""
    torch.set_num_threads(run.target.info.threads)
    spec = run.spec()
    a = run.target._arch
    g = torch.Generator().manual_seed(0)
    head = TorchHead(spec, torch.randn(a.vocab, a.dim, generator=g) if a.vocab * a.dim < 2e8 else
                     torch.randn(4096, a.dim, generator=g), torch.randn(spec.draft_vocab, a.dim, generator=g),
                     torch.ones(a.dim), seed=0)
    feats = torch.randn(length, len(spec.layers) * a.dim, generator=g)
    nxt = torch.randint(0, head.embedding.shape[0], (length - 1,), generator=g)
    best = float("inf")
    for _ in range(reps):
        t0 = time.monotonic()
        outs = head(feats, nxt, run.cfg.steps)
        loss = sum(torch.log_softmax(head.logits(h), -1)[:, 0].sum() for h in outs)
        loss.backward()
        best = min(best, time.monotonic() - t0)
    return length / best


def write_untrained_head(target, out, *, draft_vocab: int = 4096, ffn: int | None = None, seed: int = 0):
    """A head of random weights for `target` (its draft vocabulary: the first ids and every special id): what
    training starts from. Speculation with it must still be lossless: the tests use it."""
    a = target._arch
    special = target.tokenizer.special_ids(a.vocab)
    n = min(draft_vocab, a.vocab) // 16 * 16
    ids = list(dict.fromkeys([*sorted(special), *range(a.vocab)]))[:n]
    d2t = np.sort(np.asarray(ids, dtype=np.int64))
    spec = HeadSpec(target_sha256=store._verified_sha256(Path(target.info.path)), target_name=target.info.name,
                    layers=default_layers(a.n_layer), dim=a.dim, n_head=a.n_head, n_head_kv=a.n_head_kv,
                    head_dim=a.head_dim, ffn=ffn or 2 * a.dim, eps=a.eps, rope_base=a.rope_base,
                    draft_vocab=len(d2t), target_vocab=a.vocab)
    head = TorchHead(spec, torch.zeros(1, a.dim), torch.zeros(len(d2t), a.dim), torch.ones(a.dim), seed=seed)
    mats, vecs = head.export()
    rows, kind = output_rows(target.info.path, d2t)
    vecs["output_norm"] = output_norm(target.info.path)
    return write_head(Path(out), spec, mats, vecs, d2t, rows, kind)
