"""`ryzanstein distill` on SmolLM2, end to end on real weights and real text, in a couple of minutes: a short run
beats an untrained head and the trivial drafter on held-out text; an interrupted and resumed run ends with the
same head as an uninterrupted one; what it writes is checked and usable; bad input is one line."""
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ryzanstein.distill import fit, train  # noqa: E402
from ryzanstein.distill.train import DistillConfig, Run  # noqa: E402
from ryzanstein.errors import RyzansteinError  # noqa: E402


def _cfg(tmp, **kw):
    base = dict(model="smollm2-135m", tokens=24_000, epochs=4, max_doc_tokens=256, held_out_tokens=2048,
                batch_tokens=256, work_dir=tmp / "run", out=tmp / "head.gguf", threads=2)
    base.update(kw)
    return DistillConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short distill: its run folder, report and the untrained head's held-out accuracy."""
    from ryzanstein.cli.distill import distill

    tmp = tmp_path_factory.mktemp("distill")
    cfg = _cfg(tmp)
    report = distill(cfg)
    run = Run(DistillConfig(**{**cfg.__dict__, "resume": True}))
    untrained = fit.Trainer(run)
    return tmp, cfg, report, untrained.evaluate(), untrained.bigram_accuracy()


def test_a_short_distill_beats_an_untrained_head_and_the_trivial_drafter(trained):
    tmp, cfg, report, untrained, bigram = trained
    acc = report["held_out_accuracy"]
    assert report["feature_tokens"] >= cfg.tokens // cfg.epochs
    assert report["trained_positions"] >= cfg.tokens
    assert acc[0] > untrained[0] + 0.10, (acc, untrained)
    assert acc[0] > bigram + 0.03, (acc, bigram)
    assert all(a > u for a, u in zip(acc, untrained))
    assert json.loads((cfg.work_dir / "report.json").read_text())["held_out_accuracy"] == acc


def test_the_head_it_writes_drafts_tokens_the_target_accepts(trained):
    from ryzanstein import Engine
    from ryzanstein.models import load_model
    from ryzanstein.models.head import DraftHead
    from ryzanstein.speculative.proposers import HeadProposer

    tmp, cfg, *_ = trained
    target = load_model("smollm2-135m", backend="native", threads=2, n_ctx=1024)
    plain = Engine.from_models(target, None).generate("Write a short story about a robot.", max_new_tokens=48,
                                                      temperature=0)
    eng = Engine.from_models(target, HeadProposer(DraftHead(cfg.out, target), target))
    spec = eng.generate("Write a short story about a robot.", max_new_tokens=48, temperature=0, k=3)
    assert spec.tokens == plain.tokens
    assert spec.stats.num_accepted > 0


def test_an_interrupted_and_resumed_run_ends_with_the_same_head(trained, tmp_path, monkeypatch):
    """Training from the same features: once straight through, once stopped by Ctrl-C after a few steps (a
    checkpoint is written on the way out) and resumed."""
    import shutil

    tmp, cfg, *_ = trained
    small = dict(tokens=3000, epochs=1)

    def run_in(folder):
        shutil.copytree(cfg.work_dir / "features", folder / "run" / "features")
        shutil.copy(cfg.work_dir / "plan.json", folder / "run" / "plan.json")
        return Run(_cfg(folder, resume=True, **small))

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = fit.Trainer(run_in(tmp_path / "a"))
    straight.fit(3000, lambda: float("inf"))
    stopped_run = run_in(tmp_path / "b")
    stopped = fit.Trainer(stopped_run)
    real_step, calls = stopped.opt.step, []

    def step_then_interrupt(*a, **k):  # Ctrl-C arrives during the third step
        real_step(*a, **k)
        calls.append(1)
        if len(calls) == 3:
            stopped.stop_requested = True

    monkeypatch.setattr(stopped.opt, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        stopped.fit(3000, lambda: float("inf"))
    assert (stopped_run.dir / "checkpoint.pt").exists()
    resumed = fit.Trainer(run_in_existing(stopped_run))
    assert resumed.load() and resumed.p.step == 3
    resumed.fit(3000, lambda: float("inf"))
    for (name, a), (_, b) in zip(straight.head.state_dict().items(), resumed.head.state_dict().items()):
        assert torch.equal(a, b), name


def run_in_existing(run):
    return Run(DistillConfig(**{**run.cfg.__dict__, "resume": True}))


def test_an_earlier_run_is_not_overwritten_without_resume(trained):
    tmp, cfg, *_ = trained
    with pytest.raises(RyzansteinError) as e:
        Run(_cfg(tmp))
    assert "--resume" in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_feature_shard_is_one_line(trained, tmp_path):
    import shutil

    tmp, cfg, *_ = trained
    shutil.copytree(cfg.work_dir, tmp_path / "run")
    shard = sorted((tmp_path / "run" / "features").glob("train-*"))[0]
    (shard / "feats.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(RyzansteinError) as e:
        fit.Trainer(Run(_cfg(tmp_path, resume=True)))
    assert "damaged" in str(e.value) and "\n" not in str(e.value)


def test_the_command_line_refuses_a_run_without_a_budget():
    out = subprocess.run([sys.executable, "-m", "ryzanstein.cli", "distill", "--model", "smollm2-135m"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--minutes" in out.stderr
