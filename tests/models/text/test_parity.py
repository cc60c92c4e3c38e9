"""Parity with transformers' PyTorch models (marker ``parity``) and with golden files (no torch).

Tolerance: 1e-4 max abs on ``last_hidden_state`` (float32 on both sides).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxrec.models import text

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
SENTENCES = [
    "A pair of red trail running shoes with a grippy sole.",
    "title: Stainless kettle brand: Acme category: Kitchen",
    "hello world",
    "The quick brown fox jumps over the lazy dog; the dog does not notice at all.",
]
TOL = 1e-4


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    encoder, tokenizer = text.from_pretrained(minilm_dir)
    fn, params = text.make_encode_fn(encoder)
    return encoder, tokenizer, lambda *a: np.asarray(fn(params, *a))


def _torch_hidden(model, **inputs):
    import torch

    with torch.no_grad():
        out = model(**{k: torch.tensor(np.asarray(v, np.int64)) for k, v in inputs.items()})
    return out.last_hidden_state.numpy()


def _golden(name):
    path = GOLDEN / name
    if not path.is_file():
        pytest.skip(f"{path} missing (run tests/golden/make_text_golden.py)")
    return dict(np.load(path))


def test_minilm_golden_without_torch(minilm):
    """The real all-MiniLM-L6-v2 reproduces PyTorch's hidden states stored in the golden file."""
    encoder, _, encode = minilm
    assert encoder.config.model_type == "bert" and encoder.config.num_layers == 6
    g = _golden("text_minilm.npz")
    got = encode(g["input_ids"], g["attention_mask"], g["token_type_ids"])
    np.testing.assert_allclose(got, g["last_hidden_state"], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["text_roberta_tiny.npz", "text_longformer_tiny.npz"])
def test_tiny_golden_without_torch(name):
    g = _golden(name)
    config = text.config_from_hf(json.loads(str(g["config"])), pooler=True)
    weights = {k[2:]: v for k, v in g.items() if k.startswith("w:")}
    encoder = text.build_encoder(config, text.params_from_hf(weights, config, source=name))
    fn, params = text.make_encode_fn(encoder)
    got = np.asarray(fn(params, g["input_ids"], g["attention_mask"]))
    np.testing.assert_allclose(got, g["last_hidden_state"], atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def minilm_torch(minilm_dir):
    pytest.importorskip("torch")
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(minilm_dir)).eval()


@pytest.mark.parity
@pytest.mark.parametrize("token_type_ids", [False, True], ids=["single", "pair"])
def test_minilm_matches_pytorch(minilm, minilm_torch, token_type_ids):
    """Real sentences through the real model: jaxrec == transformers within 1e-4."""
    _, tokenizer, encode = minilm
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    if token_type_ids:  # a sentence pair exercises the second token type
        batch = tokenizer(SENTENCES, SENTENCES[::-1], padding=True, return_tensors="np")
        assert batch["token_type_ids"].max() == 1
    want = _torch_hidden(minilm_torch, **batch)
    got = encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["roberta", "longformer"])
def test_tiny_transformers_models_round_trip(tmp_path, kind):
    """transformers save_pretrained -> jaxrec from folder -> equal; jaxrec to_hf -> transformers."""
    torch = pytest.importorskip("torch")
    import transformers

    torch.manual_seed(1)
    cfg = dict(
        vocab_size=61,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=42,
        type_vocab_size=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 61, (3, 19))
    mask = np.ones_like(ids)
    ids[1, 11:], mask[1, 11:] = 1, 0
    if kind == "longformer":
        model = transformers.LongformerModel(
            transformers.LongformerConfig(**cfg, attention_window=[4, 8])
        )
        mask[:, 0] = 2
        mask[2, 5] = 2
    else:
        model = transformers.RobertaModel(transformers.RobertaConfig(**cfg))
    model.eval().save_pretrained(tmp_path / "hf")
    encoder = text.load_encoder(tmp_path / "hf")
    assert encoder.config.model_type == kind
    fn, params = text.make_encode_fn(encoder)
    want = _torch_hidden(model, input_ids=ids, attention_mask=mask)
    np.testing.assert_allclose(np.asarray(fn(params, ids, mask)), want, atol=TOL, rtol=0)
    # export back: transformers loads jaxrec's files and reproduces the same hidden states
    text.to_hf(params, encoder.config, tmp_path / "export")
    back = transformers.AutoModel.from_pretrained(str(tmp_path / "export")).eval()
    np.testing.assert_allclose(
        _torch_hidden(back, input_ids=ids, attention_mask=mask), want, atol=1e-6, rtol=0
    )
