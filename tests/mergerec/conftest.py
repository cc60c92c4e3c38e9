"""A tiny local HF checkpoint (random 2-block BERT with the real MiniLM WordPiece tokenizer)."""

import shutil

import pytest

from jaxrec.models import text


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    try:
        minilm = text.minilm_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cfg = text.tiny_config(
        "bert",
        vocab_size=30522,
        intermediate_size=32,
        max_position_embeddings=128,
        layer_norm_eps=1e-12,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    encoder = text.init_encoder(cfg, 0)
    from flax import nnx

    text.to_hf(nnx.split(encoder, nnx.Param, ...)[1], cfg, folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, folder / name)
    return folder
