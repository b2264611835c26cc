"""`ryzanstein distill`: train a draft head for a model on this CPU (distill/), then `--draft head` uses it."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import LoadConfig
from ..distill.train import DistillConfig, Run
from ..errors import MissingExtra


MODEL_DEFAULT = LoadConfig.model  # the embedded default


def add_parser(sub) -> None:
    d = sub.add_parser("distill", help="train a draft head for a model on this CPU (then: --draft head)",
                       description="Train a draft head on the target's own hidden states and predictions "
                                   "(self-distillation over ShareGPT chats and the Python standard library), "
                                   "checkpointed and resumable; the head goes into the model store.")
    d.add_argument("--model", default=MODEL_DEFAULT, help=f"the target (default: {MODEL_DEFAULT})")
    d.add_argument("--minutes", type=float, default=None, help="wall-time budget for features and training")
    d.add_argument("--tokens", type=int, default=None, help="training positions (all epochs); the features "
                   "extracted are this over --epochs")
    d.add_argument("--epochs", type=float, default=2.0, help="passes over the extracted features (default: 2)")
    d.add_argument("--resume", action="store_true", help="continue the run that stopped (Ctrl-C, a crash)")
    d.add_argument("--steps", type=int, default=3, help="drafting steps unrolled in training (default: 3)")
    d.add_argument("--draft-vocab", type=int, default=None, help="ids the head scores (default: those covering "
                   "97%% of the training text, at most 32768)")
    d.add_argument("--ffn", type=int, default=None, help="the head's MLP width (default: twice the model's width)")
    d.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    d.add_argument("--seed", type=int, default=0, help="data order and initialisation (default: 0)")
    d.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    d.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints (default: 5)")
    d.add_argument("--out", default=None, help="where to write the head (default: the model store)")
    d.add_argument("--work-dir", default=None, help="features and checkpoints (default: in the model store)")
    d.set_defaults(func=cmd_distill)


def cmd_distill(a: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401 - training needs it; the rest of Ryzanstein does not
    except ImportError:
        raise MissingExtra("distill trains with torch: pip install 'ryzanstein[distill]' (or ./install.sh)") from None
    cfg = DistillConfig(model=a.model, minutes=a.minutes, tokens=a.tokens, epochs=a.epochs, resume=a.resume,
                        seed=a.seed, steps=a.steps, ffn=a.ffn, draft_vocab=a.draft_vocab, lr=a.lr,
                        threads=a.threads, checkpoint_minutes=a.checkpoint_minutes,
                        work_dir=Path(a.work_dir) if a.work_dir else None, out=Path(a.out) if a.out else None)
    try:
        report = distill(cfg)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with the same command and --resume",
              file=sys.stderr)
        return 130
    print(json.dumps(report, indent=1))
    return 0


def distill(cfg, log=sys.stderr) -> dict:
    """The whole run: plan, features, training, head; a report (also written to the run folder)."""
    from ..distill.fit import Trainer, calibrate  # imports torch: only for a run

    t0 = time.monotonic()
    run = Run(cfg, log)
    if cfg.tokens is not None:
        want = int(cfg.tokens / cfg.epochs)
        feature_ok = lambda n, rate: n < want  # noqa: E731
    else:
        train_rate = calibrate(run)
        run.say(f"training runs at ~{train_rate:.0f} positions/s here")

        def feature_ok(n: int, rate: float) -> bool:
            if n < 2048 or rate <= 0:
                return run.minutes_left() > 0.5
            # features of n tokens cost n / rate now and epochs * n / train_rate in training
            spent = (time.monotonic() - run.t_start) / 60
            total = spent + (cfg.epochs * n / train_rate) / 60
            return total < cfg.minutes * 0.95
    state = run.extract(feature_ok)
    run.say(f"features: {state['train_tokens']} training tokens")
    trainer = Trainer(run)
    if cfg.resume:
        trainer.load()
    p = trainer.fit(cfg.tokens, run.minutes_left)
    trainer.write()
    report = {"model": run.target.info.name, "head": str(run.out), "feature_tokens": state["train_tokens"],
              "trained_positions": p.tokens, "epochs": round(p.tokens / max(1, state["train_tokens"]), 2),
              "steps": p.step, "held_out_accuracy": p.held_out, "history": p.history,
              "draft_vocab": run.plan["draft_vocab"], "coverage": run.plan["coverage"],
              "layers": run.plan["layers"], "ffn": run.plan["ffn"], "minutes": round((time.monotonic() - t0) / 60, 1),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    (run.dir / "report.json").write_text(json.dumps(report, indent=1))
    run.say(f"head written to {run.out}; use it with --draft head (or head+ngram)")
    return report
