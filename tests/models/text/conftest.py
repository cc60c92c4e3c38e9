"""Shared tiny configs and models for the text-encoder tests."""

import pytest

from jaxrec.models import text


@pytest.fixture(scope="session")
def tiny_encoders():
    """One tiny encoder per model type (shared by all text tests)."""
    return {t: text.init_encoder(text.tiny_config(t), i) for i, t in enumerate(text.MODEL_TYPES)}


@pytest.fixture(scope="session")
def encode_fns(tiny_encoders):
    """Jitted ``(fn, params)`` per model type, so each compiles once per input shape."""
    return {t: text.make_encode_fn(e) for t, e in tiny_encoders.items()}


@pytest.fixture(scope="session")
def minilm_dir():
    try:
        return text.minilm_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    return text.load_tokenizer(minilm_dir)


def _byte_symbols() -> list[str]:
    """GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to chr(256 + n)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(extra)}
    return [table[b] for b in range(256)]


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory):
    """A byte-level BPE (RoBERTa) tokenizer built locally: 256 byte symbols, a few merges."""
    import json

    from transformers import RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("bpe")
    symbols = ["<s>", "<pad>", "</s>", "<unk>", *_byte_symbols()]
    merges = [("t", "i"), ("ti", "t"), ("l", "e"), ("tit", "le"), ("Ġ", "r"), ("Ġr", "e")]
    symbols += ["".join(m) for m in merges]
    symbols.append("<mask>")
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    tok = RobertaTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    return text.load_tokenizer(folder)
