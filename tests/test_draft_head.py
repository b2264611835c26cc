"""The draft head (models/head.py) on the native backend, with an untrained (random) head: speculation with it
is lossless whatever it drafts; its native forward is the training math (distill/head_torch.py); its file is
checked before use; the store lists and verifies it. Training itself: test_distill.py."""
import subprocess
import sys

import numpy as np
import pytest

from ryzanstein import Engine
from ryzanstein.errors import ModelNotFound, RyzansteinError

PROMPTS = ["Write a Python function that reverses a singly linked list, with a docstring.",
           "List three differences between TCP and UDP.",
           "Translate into French: the library opens at nine and closes at six."]


@pytest.fixture(scope="module")
def target(smol_gguf):
    from ryzanstein.models import load_model

    return load_model("smollm2-135m", backend="native", threads=2, n_ctx=1024)


@pytest.fixture(scope="module")
def head_file(target, tmp_path_factory):
    from ryzanstein.distill.fit import write_untrained_head

    return write_untrained_head(target, tmp_path_factory.mktemp("head") / "head.gguf", draft_vocab=2048, seed=3)


def _head(target, head_file):
    from ryzanstein.models.head import DraftHead

    return DraftHead(head_file, target)


def test_capture_hands_back_hidden_states_without_changing_logits(target):
    ids = target.tokenizer.encode(PROMPTS[0])
    target.capture([])
    target.reset()
    plain = np.array(target.forward(ids))
    assert target.capture([2, 15, 27])
    target.reset()
    assert np.array_equal(np.array(target.forward(ids)), plain)
    whole = target.hidden_states(0, len(ids)).copy()
    assert whole.shape == (len(ids), 3 * target._arch.dim) and np.isfinite(whole).all()
    target.reset()
    target.forward(ids[:7])
    target.forward(ids[7:])  # in pieces: the same bits (batch-invariant)
    assert np.array_equal(target.hidden_states(0, len(ids)), whole)
    with pytest.raises(RyzansteinError):
        target.capture([target.info.n_layers - 1])  # the last layer computes only the logits' rows
    target.capture([])


@pytest.mark.parametrize("draft", ["head", "head+ngram"])
def test_greedy_with_an_untrained_head_equals_plain(target, head_file, draft):
    from ryzanstein.speculative.proposers import HeadProposer, HybridProposer, NgramProposer

    target.capture([])
    plain = Engine.from_models(target, None)
    ref = [plain.generate(p, max_new_tokens=40, temperature=0).tokens for p in PROMPTS]
    proposer = HeadProposer(_head(target, head_file), target)
    if draft == "head+ngram":
        proposer = HybridProposer(proposer, NgramProposer())
    eng = Engine.from_models(target, proposer)
    for k in (1, 4):
        assert [eng.generate(p, max_new_tokens=40, temperature=0, k=k).tokens for p in PROMPTS] == ref
    target.capture([])


def test_auto_plans_the_combined_drafters_apart(target, head_file):
    """Under auto a weak head does not cost prompt lookup its rounds: on text that copies the prompt, head+ngram
    verifies the lookup's drafts as ngram alone does (priced as one drafter, the pair got the untrained head's
    plan, plain steps, and left the matches unused), and its output is still plain's."""
    from ryzanstein.speculative.proposers import HeadProposer, HybridProposer, NgramProposer

    items = ["apples", "rivets", "copper wire", "two lamps", "a ladder", "green paint", "nails", "a hammer",
             "glue", "sandpaper", "a drill", "screws"]
    prompt = "Copy this list exactly, comma separated, and nothing else: " + ", ".join(items)
    target.capture([])
    ref = Engine.from_models(target, None).generate(prompt, max_new_tokens=48, temperature=0)
    lookup = Engine.from_models(target, NgramProposer()).generate(prompt, max_new_tokens=48, temperature=0)
    hybrid = HybridProposer(HeadProposer(_head(target, head_file), target), NgramProposer())
    eng = Engine.from_models(target, hybrid)
    out = eng.generate(prompt, max_new_tokens=48, temperature=0)
    assert out.tokens == ref.tokens == lookup.tokens
    assert lookup.stats.num_accepted >= 10, lookup.stats  # the text is grounded: lookup alone pays here
    assert hybrid.lookup_rounds > 0
    assert out.stats.num_accepted >= lookup.stats.num_accepted // 2, (out.stats, lookup.stats)
    target.capture([])


def test_head_forward_is_batch_invariant_and_rolls_back(target, head_file):
    head = _head(target, head_file)
    ids = target.tokenizer.encode(PROMPTS[0])
    assert len(ids) > 12
    target.capture(head.spec.layers)
    target.reset()
    target.forward(ids)
    feats = target.hidden_states(0, len(ids)).copy()
    nxt = ids[1:] + [ids[0]]
    whole = np.array(head.teacher(nxt, feats).numpy())
    chain = [np.array(head.score([t], last_only=True).numpy()) for t in (5, 6)]
    head.reset()
    head.teacher(nxt[:9], feats[:9])
    assert np.array_equal(np.array(head.teacher(nxt[9:], feats[9:]).numpy()), whole)
    head.truncate(len(ids) - 3)  # roll back and redo: the same bits
    assert np.array_equal(np.array(head.teacher(nxt[-3:], feats[-3:]).numpy()), whole)
    assert all(np.array_equal(np.array(head.score([t], last_only=True).numpy()), c) for t, c in zip((5, 6), chain))
    target.capture([])


def test_native_head_computes_what_training_computes(target, head_file):
    """The torch module distill trains and the native head agree (up to the file's Q8_0 weights), on the first
    drafted token and on the chained ones."""
    torch = pytest.importorskip("torch")
    from ryzanstein.distill.head_torch import TorchHead
    from ryzanstein.models.gguf_file import GGUFFile
    from gguf import quants, GGMLQuantizationType

    head = _head(target, head_file)
    g = GGUFFile(head_file)
    by = {t.name: t for t in g.tensors}

    def mat(name):
        t = by[f"{name}.weight"]
        raw = np.frombuffer(g.data(t), np.uint8)
        shape = (int(t.shape[1]), int(t.shape[0]))
        if t.type == 1:
            return torch.from_numpy(raw.view(np.float16).astype(np.float32).reshape(shape))
        return torch.from_numpy(quants.dequantize(raw.reshape(shape[0], -1), GGMLQuantizationType(t.type))
                                .astype(np.float32).reshape(shape))

    a = target._arch
    emb = np.empty((a.vocab, a.dim), np.float32)
    target.tensors["token_embd"].dequantize(emb)
    vec = lambda n: torch.from_numpy(np.frombuffer(g.data(by[f"{n}.weight"]), np.float32).copy())  # noqa: E731
    th = TorchHead(head.spec, torch.from_numpy(emb), mat("output"), vec("output_norm"))
    with torch.no_grad():
        for name, attr in (("fuse", "fuse"), ("mix", "mix"), ("blk.0.attn_q", "wq"), ("blk.0.attn_k", "wk"),
                           ("blk.0.attn_v", "wv"), ("blk.0.attn_output", "wo"), ("blk.0.ffn_gate", "wgate"),
                           ("blk.0.ffn_up", "wup"), ("blk.0.ffn_down", "wdown")):
            getattr(th, attr).copy_(mat(name))
        th.attn_norm.copy_(vec("blk.0.attn_norm"))
        th.ffn_norm.copy_(vec("blk.0.ffn_norm"))
    ids = target.tokenizer.encode(PROMPTS[2])
    target.capture(head.spec.layers)
    target.reset()
    target.forward(ids)
    feats = target.hidden_states(0, len(ids)).copy()
    target.capture([])
    with torch.no_grad():
        outs = th(torch.from_numpy(feats), torch.tensor(ids[1:]), 3)
        want = [th.logits(h).numpy() for h in outs]
    for i in (4, len(ids) - 4):
        head.reset()
        got = [np.array(head.teacher(ids[1:i + 2], feats[:i + 1]).numpy()[0])]
        got += [np.array(head.score([ids[i + j]], last_only=True).numpy()[0]) for j in (2, 3)]
        for j in range(3):
            assert np.corrcoef(got[j], want[j][i])[0, 1] > 0.999, (i, j)


def test_sampling_with_a_head_keeps_the_target_distribution(target, head_file):
    from test_distribution import ALPHA, chi2_pvalue, run
    from ryzanstein.config import SamplingParams
    from ryzanstein.speculative.acceptance_rules import accept_sampling
    from ryzanstein.speculative.proposers import HeadProposer
    from ryzanstein.speculative.sampling import probs_from_logits

    sampling = SamplingParams(temperature=1.0)
    proposer = HeadProposer(_head(target, head_file), target, sampling=sampling, rng=np.random.default_rng(1))
    p_rows, q_rows = [], []
    for i, text in enumerate(("The weather today is", "My favourite colour is", "The cat sat on the")):
        ids = target.tokenizer.encode(text)
        target.reset()
        p_rows.append(np.array(target.forward(ids, last_only=True)[0], dtype=np.float64))
        target.truncate(len(ids) - 1)
        if i < 2:  # the rule reads K = 2 drafts' q and K + 1 rows of p
            q_rows.append(proposer.propose(ids, 1).probs[0].astype(np.float64))
    p = probs_from_logits(np.stack(p_rows), sampling)
    q = np.stack(q_rows)
    assert np.allclose(q.sum(axis=1), 1.0, atol=1e-4)
    first, second = run(accept_sampling, p, q, False, np.random.default_rng(7))
    assert chi2_pvalue(first, p[0]) > ALPHA  # accepted drafts and recovered tokens together
    if len(second) > 2000:  # an untrained head's first draft is seldom accepted
        assert chi2_pvalue(second, p[1]) > ALPHA
    target.capture([])


def test_a_bad_or_foreign_head_file_is_refused_in_one_line(target, head_file, tmp_path):
    from ryzanstein.models.head import DraftHead, HeadError

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(head_file.read_bytes()[:100_000])
    with pytest.raises(RyzansteinError) as e:
        DraftHead(cut, target)
    assert "\n" not in str(e.value) and "distill" in str(e.value)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(RyzansteinError):
        DraftHead(junk, target)
    other = _other_target()
    if other is not None:
        with pytest.raises(HeadError) as e:
            DraftHead(head_file, other)
        assert "does not fit" in str(e.value) and "\n" not in str(e.value)


def _other_target():
    from ryzanstein.models import load_model, store

    if store.path_of("qwen2.5-coder-0.5b") is None:
        return None
    return load_model("qwen2.5-coder-0.5b", backend="native", threads=2, n_ctx=256)


def test_store_lists_verifies_and_uses_the_head(target, head_file, tmp_path, monkeypatch):
    from ryzanstein.engine import load_head
    from ryzanstein.models import store

    monkeypatch.setenv("RYZANSTEIN_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound) as e:
        load_head(target)
    assert "ryzanstein distill --model" in str(e.value)
    dest = store.head_path(target.info.path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(head_file.read_bytes())
    assert load_head(target).spec.draft_vocab == 2048
    env = {"RYZANSTEIN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "ryzanstein.cli"]
    out = subprocess.run(cli + ["models", "list"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and f"head:{dest.parent.name}" in out.stdout and "smollm2-135m" in out.stdout
    ok = subprocess.run(cli + ["models", "verify"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ": ok" in ok.stdout
    dest.write_bytes(head_file.read_bytes()[:5000])
    bad = subprocess.run(cli + ["models", "verify"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "distill" in bad.stderr
