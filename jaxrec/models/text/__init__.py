"""Text encoders for text-based sequential recommendation (BLaIR / RecFormer backbones).

Usage::

    from jaxrec.models import text
    encoder, tokenizer = text.from_pretrained(path)        # any local HF folder, offline
    hidden_blh = encoder.encode_hidden(input_ids, attention_mask)
    user_bh = text.pool(hidden_blh)                        # CLS, L2-normalised

``path`` is a folder holding ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``) and
the tokenizer files, e.g. a ``save_pretrained`` output or a copied hub snapshot of
``hyp1231/blair-roberta-base`` (RoBERTa), a RecFormer checkpoint (Longformer config with
``max_item_embeddings``) or ``text.minilm_path()`` (all-MiniLM-L6-v2, BERT).

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
    "to_hf",
    "tokenize",
]
