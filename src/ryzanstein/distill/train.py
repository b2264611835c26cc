"""`ryzanstein distill`: make a draft head for a target on this CPU, resumable at every stage.

1. **Plan** (`plan.json`): the head's shape, the target layers it reads, and its draft vocabulary (the ids
   covering COVERAGE of the training text's tokens, at most MAX_DRAFT_VOCAB, plus every special id).
2. **Features** (`features/shard-NNNNN/`): the target reads the training text (data.py: ShareGPT chats in its
   own chat template, the standard library's source; never a bench prompt) on the native backend; each shard
   keeps, per position, the captured hidden states (float16) and the target's top TOP_K next-token ids and
   probabilities: the labels are the target's own predictions, not the text's next token (self-distillation).
   Held-out documents go to shards of their own. Each shard is written under a temporary name and renamed.
3. **Training** (torch, CPU): the head unrolled STEPS drafting steps (head_torch.py) against the target's
   distributions, soft cross-entropy over the draft vocabulary, AdamW, cosine schedule over the planned
   tokens; a checkpoint (`checkpoint.pt`, atomic) every few minutes and on Ctrl-C; `--resume` continues
   from it exactly (the same head as an uninterrupted run).
4. **The head** (models/head.py's GGUF) is written atomically into the store (store.head_path).

All of it lives in `store.home()/distill/<target sha256[:16]>/`, so a run on the same target file resumes
whichever stage it stopped in.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, RyzansteinError
from ..models import load_model, store
from ..models.native import NativeModel
from ..models.head import HeadSpec, default_layers, write_head
from . import data

TOP_K = 8  # target probabilities kept per position
STEPS = 3  # drafting steps unrolled in training
COVERAGE = 0.97  # share of the training text's tokens the draft vocabulary covers
MAX_DRAFT_VOCAB = 32768
MIN_DRAFT_VOCAB = 4096
SHARD_TOKENS = 16384
HELD_OUT_TOKENS = 12288
STEP_WEIGHTS = (1.0, 0.8, 0.64, 0.5, 0.4)
PLAN_VERSION = 1


@dataclasses.dataclass
class DistillConfig:
    model: str
    minutes: float | None = None  # wall budget for features + training
    tokens: int | None = None  # training positions (all epochs); features are tokens / epochs
    epochs: float = 2.0
    resume: bool = False
    seed: int = 0
    steps: int = STEPS
    ffn: int | None = None  # the head's MLP width (default 2 x dim)
    draft_vocab: int | None = None  # default: COVERAGE of the training text
    batch_tokens: int = 256
    lr: float = 2e-3
    max_doc_tokens: int = 1024
    window: int = 256  # training windows of at most this many positions (0: whole documents)
    held_out_tokens: int = HELD_OUT_TOKENS
    checkpoint_minutes: float = 5.0
    threads: int | None = None
    code_share: float = 0.25
    work_dir: Path | None = None  # default: store.home()/distill/<target sha16>
    out: Path | None = None  # the head file; default: store.head_path(target)

    def check(self) -> None:
        if self.minutes is None and self.tokens is None:
            raise ConfigError("give a budget: --minutes N (wall time, features and training) or --tokens N "
                              "(training positions)")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"--minutes {self.minutes}: give a positive number of minutes")
        if self.tokens is not None and self.tokens < 256:
            raise ConfigError(f"--tokens {self.tokens}: give at least 256 training positions")
        if not 1 <= self.steps <= len(STEP_WEIGHTS):
            raise ConfigError(f"--steps {self.steps}: unroll 1..{len(STEP_WEIGHTS)} drafting steps")
        if not self.epochs > 0:
            raise ConfigError(f"--epochs {self.epochs}: give a positive number")
        if self.draft_vocab is not None and not 16 <= self.draft_vocab:
            raise ConfigError(f"--draft-vocab {self.draft_vocab}: give at least 16 ids")


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _disk_error(e: OSError, where: Path) -> RyzansteinError:
    return RyzansteinError(f"cannot write {where}: {e.strerror or e}; free some disk space (or set "
                           "RYZANSTEIN_HOME to a disk with room) and run again with --resume")


class Run:
    """One distillation of one target: its folder, its plan, its progress."""

    def __init__(self, cfg: DistillConfig, log: TextIO = sys.stderr) -> None:
        cfg.check()
        self.cfg, self.log = cfg, log
        self.t_start = time.monotonic()
        self.target = load_model(cfg.model, backend="native", threads=cfg.threads, n_ctx=cfg.max_doc_tokens + 8)
        if not isinstance(self.target, NativeModel):
            raise RyzansteinError("distill reads the target's hidden states on the native backend: use a GGUF model")
        self.sha256 = store._verified_sha256(Path(self.target.info.path))
        self.dir = cfg.work_dir or store.home() / "distill" / self.sha256[:16]
        self.out = cfg.out or store.head_path(self.target.info.path)
        if self.dir.exists() and not cfg.resume and any(self.dir.iterdir()):
            raise ConfigError(f"{self.dir} holds an earlier run for this model: continue it with --resume, or "
                              "delete that folder to start over")
        try:
            (self.dir / "features").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _disk_error(e, self.dir) from None
        self.plan = self._plan()

    # ---- budget -------------------------------------------------------------------------------------------
    def minutes_left(self) -> float:
        if self.cfg.minutes is None:
            return math.inf
        return self.cfg.minutes - (time.monotonic() - self.t_start) / 60

    def say(self, msg: str) -> None:
        print(msg, file=self.log, flush=True)

    # ---- 1. plan --------------------------------------------------------------------------------------------
    def _plan(self) -> dict:
        path = self.dir / "plan.json"
        if path.exists():
            plan = json.loads(path.read_text())
            if plan.get("version") != PLAN_VERSION or plan.get("target_sha256") != self.sha256:
                raise ConfigError(f"{path} is from another version or target: delete {self.dir} to start over")
            return plan
        cfg, arch = self.cfg, self.target._arch
        docs = self._documents("train")
        counts = np.zeros(arch.vocab, dtype=np.int64)
        seen = 0
        for d in docs:  # the draft vocabulary from the first ~400k tokens of training text
            counts += np.bincount(d.tokens, minlength=arch.vocab)[:arch.vocab]
            seen += len(d.tokens)
            if seen >= 400_000:
                break
        order = np.argsort(-counts, kind="stable")
        if cfg.draft_vocab:
            n = cfg.draft_vocab
        else:
            covered = np.cumsum(counts[order]) / max(1, counts.sum())
            n = int(np.searchsorted(covered, COVERAGE) + 1)
            n = min(MAX_DRAFT_VOCAB, max(MIN_DRAFT_VOCAB, -(-n // 1024) * 1024))
        n = min(n, arch.vocab) // 16 * 16
        special = self.target.tokenizer.special_ids(arch.vocab)
        keep = list(dict.fromkeys([*sorted(special), *order.tolist()]))[:n]
        d2t = np.sort(np.asarray(keep, dtype=np.int64))
        coverage = float(counts[d2t].sum() / max(1, counts.sum()))
        ffn = cfg.ffn or 2 * arch.dim
        plan = {"version": PLAN_VERSION, "target_sha256": self.sha256, "target_name": self.target.info.name,
                "layers": list(default_layers(arch.n_layer)), "ffn": int(ffn), "draft_vocab": int(len(d2t)),
                "coverage": coverage, "steps": cfg.steps, "seed": cfg.seed, "max_doc_tokens": cfg.max_doc_tokens,
                "code_share": cfg.code_share, "d2t": d2t.tolist()}
        _atomic_json(path, plan)
        self.say(f"plan: head over layers {plan['layers']} of {arch.n_layer}, MLP {ffn}, draft vocabulary "
                 f"{len(d2t)} ids ({coverage:.1%} of the training text's tokens)")
        return plan

    def spec(self, trained_tokens: int = 0) -> HeadSpec:
        a = self.target._arch
        return HeadSpec(target_sha256=self.sha256, target_name=self.target.info.name,
                        layers=tuple(self.plan["layers"]), dim=a.dim, n_head=a.n_head, n_head_kv=a.n_head_kv,
                        head_dim=a.head_dim, ffn=self.plan["ffn"], eps=a.eps, rope_base=a.rope_base,
                        draft_vocab=self.plan["draft_vocab"], target_vocab=a.vocab, trained_tokens=trained_tokens)

    def _documents(self, split: str):
        self.data_stats = data.DataStats()
        return data.documents(self.target, code_share=self.cfg.code_share, max_tokens=self.cfg.max_doc_tokens,
                              seed=self.cfg.seed, split=split, stats=self.data_stats)

    # ---- 2. features -----------------------------------------------------------------------------------
    def shards(self, split: str) -> list[Path]:
        return sorted(p for p in (self.dir / "features").glob(f"{split}-*") if p.is_dir() and not p.name.endswith(".tmp"))

    def _feature_state(self) -> dict:
        p = self.dir / "features" / "state.json"
        return json.loads(p.read_text()) if p.exists() else {"held_out_done": False, "train_docs": 0,
                                                              "train_tokens": 0, "done": False}

    def extract(self, want_tokens: Callable[[int, float], bool]) -> dict:
        """Run the target over held-out text, then training text while want_tokens(tokens so far, rate) says so."""
        state = self._feature_state()
        target = self.target
        target.capture(self.plan["layers"])
        if not state["held_out_done"]:
            self._extract_split("held_out", 0, lambda n, r: n < self.cfg.held_out_tokens, state)
            state["held_out_done"] = True
            _atomic_json(self.dir / "features" / "state.json", state)
        if not state["done"]:
            self._extract_split("train", state["train_docs"], want_tokens, state)
            state["done"] = True
            _atomic_json(self.dir / "features" / "state.json", state)
        target.capture([])
        return state

    def _extract_split(self, split: str, skip_docs: int, more: Callable[[int, float], bool], state: dict) -> None:
        docs = self._documents(split)
        for _ in range(skip_docs):
            next(docs, None)
        tokens = state["train_tokens"] if split == "train" else 0
        n_docs = skip_docs
        shard = len(self.shards(split))
        buf: list[dict] = []
        buf_tokens = 0
        t0, t_tokens = time.monotonic(), tokens
        bar = tqdm(desc=f"features ({split})", unit="tok", initial=tokens, file=self.log, dynamic_ncols=True,
                   mininterval=2.0)
        rate = 0.0
        for doc in docs:
            if not more(tokens, rate):
                break
            if len(doc.tokens) < 2 + self.cfg.steps:
                n_docs += 1
                continue
            buf.append(self._features_of(doc))
            n_docs += 1
            buf_tokens += len(doc.tokens)
            tokens += len(doc.tokens)
            rate = (tokens - t_tokens) / max(1e-9, time.monotonic() - t0)
            bar.update(len(doc.tokens))
            bar.set_postfix_str(f"{rate:.0f} tok/s", refresh=False)
            if buf_tokens >= SHARD_TOKENS:
                self._write_shard(split, shard, buf)
                shard, buf, buf_tokens = shard + 1, [], 0
                if split == "train":
                    state.update(train_docs=n_docs, train_tokens=tokens)
                    _atomic_json(self.dir / "features" / "state.json", state)
        if buf:
            self._write_shard(split, shard, buf)
            if split == "train":
                state.update(train_docs=n_docs, train_tokens=tokens)
                _atomic_json(self.dir / "features" / "state.json", state)
        bar.close()
        if self.data_stats.dropped_bench:
            self.say(f"dropped {self.data_stats.dropped_bench} documents that contained a bench prompt")

    def _features_of(self, doc) -> dict:
        target = self.target
        ids = [int(t) for t in doc.tokens]
        target.reset()
        top_ids = np.empty((len(ids), TOP_K), np.int32)
        top_p = np.empty((len(ids), TOP_K), np.float16)
        for s in range(0, len(ids), 128):
            part, p = top_k_probs(target.score(ids[s:s + 128]).numpy(), TOP_K)
            top_ids[s:s + len(part)] = part
            top_p[s:s + len(part)] = p
        feats = target.hidden_states(0, len(ids)).astype(np.float16)
        return {"id": doc.id, "tokens": np.asarray(ids, np.int32), "feats": feats, "top_ids": top_ids, "top_p": top_p}

    def _write_shard(self, split: str, index: int, docs: list[dict]) -> None:
        final = self.dir / "features" / f"{split}-{index:05d}"
        tmp = final.with_name(final.name + ".tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            offsets = np.cumsum([0] + [len(d["tokens"]) for d in docs]).astype(np.int64)
            for key in ("tokens", "feats", "top_ids", "top_p"):
                np.save(tmp / f"{key}.npy", np.concatenate([d[key] for d in docs]))
            np.save(tmp / "offsets.npy", offsets)
            (tmp / "ids.json").write_text(json.dumps([d["id"] for d in docs]))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _disk_error(e, final) from None


def top_k_probs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most likely ids, most likely first, and their probabilities under the full softmax. In torch
    (2 threads, vectorized): numpy's partition and exp over 128 x 151,936 logits took 0.46 s, 14% of the
    1.5B's feature pass (the distill docs' profile)."""
    import torch  # distill's extra; this pass runs only inside `ryzanstein distill`

    t = torch.from_numpy(logits)
    vals, ids = torch.topk(t, k, dim=1)
    probs = torch.exp(vals - torch.logsumexp(t, dim=1, keepdim=True))
    return ids.numpy().astype(np.int32), probs.numpy()


def load_shards(paths: list[Path]) -> list[dict]:
    """Memory-mapped shards; a damaged one is one clear error."""
    out = []
    for p in paths:
        try:
            s = {k: np.load(p / f"{k}.npy", mmap_mode="r") for k in ("tokens", "feats", "top_ids", "top_p", "offsets")}
        except (OSError, ValueError) as e:
            raise RyzansteinError(f"feature shard {p} is damaged ({e}): delete it and run again with --resume") from None
        if s["offsets"][-1] != len(s["tokens"]) or len(s["feats"]) != len(s["tokens"]):
            raise RyzansteinError(f"feature shard {p} is damaged (inconsistent lengths): delete it and run again "
                                  "with --resume")
        out.append(s)
    return out


def doc_index(shards: list[dict], window: int = 0) -> list[tuple[int, int, int]]:
    """(shard, start, end) of every document, or of its consecutive windows of at most `window` positions."""
    out = []
    for i, s in enumerate(shards):
        for j in range(len(s["offsets"]) - 1):
            a, b = int(s["offsets"][j]), int(s["offsets"][j + 1])
            step = window or b - a
            out += [(i, x, min(b, x + step)) for x in range(a, b, step) if min(b, x + step) - x >= 8]
    return out
