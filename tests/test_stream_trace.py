"""How each streamed token came, as `Generation.pieces()` hands it out (what `ryzanstein chat --show-speculation`
and the chat page colour): the kinds agree with the decode loop's own stats, tracing changes no output, and
TextStream maps every character to the token that completed it, multi-byte characters split over tokens included.
SmolLM2-135M on the native backend, 1 thread, greedy."""
from collections import Counter

import pytest

from ryzanstein.engine import Engine
from ryzanstein.models import load_model
from ryzanstein.models.textstream import TextStream
from ryzanstein.speculative.proposers import NgramProposer
from ryzanstein.speculative.round import TOKEN_KINDS, token_kinds

COPY = ("Repeat this list exactly, twice:\nalpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu\n"
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu")


@pytest.fixture(scope="module")
def native_smol():
    m = load_model("smollm2-135m", backend="native", threads=1, n_ctx=1024)
    yield m
    m.close()


def test_token_kinds_table():
    assert token_kinds(0, 0, 1) == ["step"]
    assert token_kinds(4, 4, 5) == ["accepted"] * 4 + ["bonus"]
    assert token_kinds(4, 1, 2) == ["accepted", "recovered"]
    assert token_kinds(3, 0, 1) == ["recovered"]
    assert token_kinds(4, 3, 2) == ["accepted", "accepted"]  # a stop id among the accepted drafts cut the round


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_every_character_belongs_to_the_token_that_completed_it(native_smol, chunk):
    tok = native_smol.tokenizer
    text = "Snow ❄️ falls on Zürich; 東京 is far — naïve café 🎉🎉 done."
    ids = tok.encode(text, add_special=False)
    stream, plain = TextStream(tok, positions=True), TextStream(tok)
    out = plain_out = ""
    for i in range(0, len(ids), chunk):
        out += stream.add(ids[i:i + chunk])
        plain_out += plain.add(ids[i:i + chunk])
    out, plain_out = out + stream.finish(), plain_out + plain.finish()
    assert out == plain_out == stream.text and len(stream.char_ids) == len(out)
    assert stream.char_ids == sorted(stream.char_ids)
    # the characters owned by tokens 0..j are exactly the whole characters those tokens spell
    for j in range(len(ids)):
        upto = tok.decode(ids[:j + 1]).rstrip("\ufffd")
        owned = sum(1 for o in stream.char_ids if o <= j)
        assert out[:owned] == upto, (j, out[:owned], upto)


def test_pieces_agree_with_the_stats_and_change_no_output(native_smol):
    engine = Engine.from_models(native_smol, NgramProposer(1, 4))
    kw = dict(max_new_tokens=60, temperature=0.0, k=4, ignore_eos=True)
    plain = engine.generate(COPY, **kw)
    gen = engine.stream(COPY, **kw)
    pieces = list(gen.pieces())
    r, s = gen.result, gen.result.stats
    assert r.text == plain.text and r.tokens == plain.tokens  # tracing changes nothing
    assert "".join(p.text for p in pieces) == r.text
    for p in pieces:
        assert "".join(t for t, _ in p.spans) == p.text and all(k in TOKEN_KINDS for _, k in p.spans)
    rounds = [x for p in pieces for x in p.rounds]
    assert len(rounds) == s.rounds and [x.drafted for x in rounds] == s.k_per_round
    assert [x.k for x in rounds] == s.k_chosen and sum(x.accepted for x in rounds) == s.num_accepted
    assert s.num_accepted > 10  # the copy prompt is looked up: drafts were accepted
    # one span per token (every token of this text spells something), kinds as the rounds say
    kinds = Counter(k for p in pieces for _, k in p.spans)
    assert sum(kinds.values()) == r.num_tokens
    assert kinds["accepted"] == s.num_accepted
    assert kinds["bonus"] == sum(x.drafted > 0 and x.accepted == x.drafted for x in rounds)
    assert kinds["recovered"] == sum(x.drafted > 0 and x.accepted < x.drafted for x in rounds)
    assert kinds["step"] == 1 + sum(x.drafted == 0 for x in rounds)  # the prefill's token, plain steps


def test_a_stop_string_cuts_the_spans_with_the_text(native_smol):
    engine = Engine.from_models(native_smol, NgramProposer(1, 4))
    gen = engine.stream(COPY, max_new_tokens=60, temperature=0.0, k=4, stop=["epsilon"])
    pieces = list(gen.pieces())
    assert gen.result.finish_reason == "stop" and "epsilon" not in gen.result.text
    assert "".join(t for p in pieces for t, _ in p.spans) == gen.result.text
