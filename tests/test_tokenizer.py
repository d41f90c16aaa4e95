"""The trained Tekken-style tokenizer: real Tekken control ids, exact round trips, determinism, literal '<s>'."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers

from minimistral.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    SPECIAL_TOKENS,
    TEKKEN_PATTERN,
    bytes_per_token,
    load_tokenizer,
    read_tokenizer_json,
    train_tokenizer,
)

CORPUS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\r\n",
    "Question: Tom has 3 apples and buys 12 more. How many apples?\nSolution: 3 + 12 = 15\nAnswer: 15",
    "Café, naïve, façade; Ünïcödé — “quotes” and ‘apostrophes’…\tTabbed\tcolumns\n",
    "日本語のテキスト、中文文本，한국어 텍스트. Emoji: 🙂🚀👩‍🔬 🇫🇷",
    "def f(x):\n    return x ** 2  # code, with    spaces\n",
] * 20
VOCAB = 512


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=VOCAB)


def random_text(rng: random.Random, max_len: int = 40) -> str:
    """A string of random code points, biased towards the hard cases (controls, marks, CJK, emoji, astral)."""
    ranges = [
        (0x00, 0x1F),  # controls, NUL, \t, \n, \r
        (0x20, 0x7E),  # ASCII
        (0x80, 0x24F),  # Latin-1 and Latin extended
        (0x300, 0x36F),  # combining marks
        (0x4E00, 0x9FFF),  # CJK
        (0xFE00, 0xFFFF),  # variation selectors, BOM, specials, noncharacters
        (0x1F300, 0x1FAFF),  # emoji
        (0x10000, 0x10FFFF),  # any astral code point
        (0x0, 0xD7FF),  # anything below the surrogates
    ]
    out = []
    for _ in range(rng.randrange(max_len + 1)):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def test_special_tokens_are_tekkens_first_32(tok):
    mistral_common = pytest.importorskip("mistral_common")
    from mistral_common.tokens.tokenizers import tekken

    path = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    real = tekken.Tekkenizer.from_file(path)
    assert len(SPECIAL_TOKENS) == 32
    assert [real.id_to_piece(i) for i in range(32)] == list(SPECIAL_TOKENS)
    assert (real.bos_id, real.eos_id) == (BOS_ID, EOS_ID)
    assert json.loads(path.read_text())["config"]["pattern"] == TEKKEN_PATTERN
    assert [tok.token_to_id(s) for s in SPECIAL_TOKENS] == list(range(32))


def test_vocabulary_holds_every_byte(tok):
    assert tok.get_vocab_size() == VOCAB
    vocab = tok.get_vocab()
    assert all(symbol in vocab for symbol in pre_tokenizers.ByteLevel.alphabet())  # 256 byte symbols
    assert min(vocab[s] for s in pre_tokenizers.ByteLevel.alphabet()) == 32  # right after the specials


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "  leading and trailing  ",
        "\n",
        "\r\n\r\n",
        "\r",
        "\t\tx\t",
        "\x00",
        "a\x00b\x00\x00",
        "e\u0301 a\u0308\u0304",  # combining marks
        "👨‍👩‍👧‍👦 🇯🇵 ✋🏽",  # ZWJ sequence, flag, skin tone
        "\ufeffBOM first",
        "\U0010ffff\U00010000",
        "x" * 5000,
        "1234567890 3.14159 -42",
        "mixed 中文 and English, ελληνικά, עברית, العربية",
    ],
)
def test_round_trip_edge_cases(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
    assert min(ids, default=99) >= len(SPECIAL_TOKENS)


def test_round_trip_random_unicode(tok):
    rng = random.Random(0)
    for _ in range(2000):
        text = random_text(rng)
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text, repr(text)


def test_literal_special_strings_are_plain_text(tok, tmp_path):
    text = "<s>[INST] hi [/INST]</s><pad>[IMG]"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert min(ids) >= len(SPECIAL_TOKENS)  # no control id can come from text
    assert tok.decode(ids) == text
    tok.save(str(tmp_path / "tokenizer.json"))  # the policy survives saving and loading
    wrapped = load_tokenizer(tmp_path)
    assert wrapped.encode(text)[0] == BOS_ID and min(wrapped.encode(text)[1:]) >= len(SPECIAL_TOKENS)
    assert min(read_tokenizer_json(tmp_path / "tokenizer.json").encode(text).ids) >= len(SPECIAL_TOKENS)


def test_load_tokenizer_reads_a_trained_tokenizer(tok, tmp_path):
    tok.save(str(tmp_path / "tokenizer.json"))
    wrapped = load_tokenizer(tmp_path)
    assert (wrapped.bos_id, wrapped.eos_id) == (1, 2)
    ids = wrapped.encode("Whether 'tis nobler")
    assert ids[0] == 1
    assert wrapped.decode(ids) == "Whether 'tis nobler"  # BOS is dropped on decode
    rng = random.Random(1)
    for _ in range(200):
        text = random_text(rng)
        assert wrapped.decode(wrapped.encode(text)) == text


def test_training_is_deterministic(tok):
    assert train_tokenizer(CORPUS, vocab_size=VOCAB).to_str() == tok.to_str()
    assert train_tokenizer(CORPUS[:3], vocab_size=VOCAB).to_str() != tok.to_str()


def test_training_learns_merges(tok):
    ids = tok.encode("To be, or not to be, that is the question", add_special_tokens=False).ids
    assert len(ids) < 15  # far fewer than its 41 bytes


def test_vocab_too_small_is_an_error():
    with pytest.raises(ValueError, match="special tokens"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_bytes_per_token(tok, tmp_path):
    bpt = bytes_per_token(tok, CORPUS[:5])
    assert 1.0 < bpt < 10.0
    tok.save(str(tmp_path / "tokenizer.json"))
    assert bytes_per_token(load_tokenizer(tmp_path), CORPUS[:5]) == pytest.approx(bpt)
    assert bytes_per_token(tok, ["\x00" * 10]) == pytest.approx(10 / len(tok.encode("\x00" * 10).ids))
