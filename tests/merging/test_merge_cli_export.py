"""Exporting jaxrec encoder params (MergeRec backbones) as an HF folder: name mapping round trip,
the folder loads in transformers and computes what the jaxrec encoder computes."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from jaxrec.models.text import convert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=24,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).eval().save_pretrained(root / "base")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(25)]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(root / "vocab.txt")).save_pretrained(root / "base")
    return root / "base"


def test_hf_names_round_trip(tiny_bert):
    """HF -> jaxrec -> HF gives the checkpoint's tensors back, bit for bit (buffers aside)."""
    enc = convert.load_encoder(tiny_bert)
    hf_tensors = load_file(tiny_bert / "model.safetensors")
    back = convert.params_to_hf(nnx.state(enc, nnx.Param), enc.config)
    expected = {k: v for k, v in hf_tensors.items() if k not in convert._BUFFERS}
    assert set(back) == set(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    again = convert.params_from_hf(back, enc.config)
    want = nnx.to_pure_dict(nnx.state(enc, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, want))


def test_export_hf_loads_in_transformers(tiny_bert, tmp_path):
    enc = convert.load_encoder(tiny_bert)
    params = nnx.to_pure_dict(nnx.state(enc, nnx.Param))
    rng = np.random.default_rng(0)
    merged = jax.tree.map(lambda x: np.asarray(x) + rng.normal(0, 0.05, x.shape), params)
    merged = jax.tree.map(lambda x: x.astype(np.float32), merged)
    out = convert.export_hf(merged, tiny_bert, tmp_path / "exported", max_shard_size="8KB")
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    model = transformers.AutoModel.from_pretrained(str(out)).eval()
    transformers.AutoTokenizer.from_pretrained(str(out))
    ids = np.array([[2, 7, 9, 11, 3, 0]])
    mask = np.array([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    reloaded = convert.load_encoder(out)
    got = reloaded.encode_hidden(ids, mask)
    np.testing.assert_allclose(
        np.asarray(got)[0, :5], want.last_hidden_state.numpy()[0, :5], atol=2e-5
    )
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(reloaded, nnx.Param))),
        merged,
    )
    assert (out / "config.json").read_text() == (tiny_bert / "config.json").read_text()
