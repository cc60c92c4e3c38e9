"""The reference's protocol around the learned merging: item text rule and input caps, eval-mode
item encoding, and which task vectors each learned variant scales (the variant pairing)."""

import json
import tarfile

import jax
import numpy as np
import pytest

from jaxrec import data
from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import Backbone, BackboneConfig


def _reference_text(record, tokenizer, n=32):
    """The reference code's item string, written out here from its description."""
    return " ".join(
        f"{k}: {tokenizer.convert_tokens_to_string(tokenizer.tokenize(v)[:n])}"
        for k, v in record.items()
    )


@pytest.fixture(scope="module")
def beauty(shared_data):
    path = shared_data / "amazon" / "Beauty.tar.gz"
    if not path.is_file():
        pytest.skip(f"release archive {path} is absent")
    with tarfile.open(path) as tar:
        member = next(m for m in tar if m.name.endswith("meta_data.json"))
        meta = json.load(tar.extractfile(member))
    return data.load_domain(path), meta


def test_reference_item_text_on_a_real_release_item(beauty, tiny_checkpoint):
    dom, meta = beauty
    ref = Backbone(BackboneConfig(path=str(tiny_checkpoint), max_item_tokens=0, max_user_tokens=0))
    assert ref.max_item_tokens == 128  # 0 = the backbone's maximum (this checkpoint: 128)
    tok = ref.tokenizer
    # long metadata: among the 200 items with the most text, the longest reference input
    score = [min(len(t), 200) + len(b) + len(c) for t, b, c in zip(*dom.item_attrs.values())]
    top = np.argsort(score)[::-1][:200]
    sizes = [len(tok(_reference_text(meta[dom.item_keys[j]], tok))["input_ids"]) for j in top]
    i = int(top[int(np.argmax(sizes))])
    record = meta[dom.item_keys[i]]
    expected = _reference_text(record, tok)
    assert list(record) == ["title", "brand", "category"]  # every key, in the file's order
    assert ref.item_string(dom, i) == expected
    j = int(np.argmax([len(t) for t in dom.item_attrs["title"]]))  # hundreds of characters
    assert len(tok.tokenize(meta[dom.item_keys[j]]["title"])) > 32  # the value is really cut
    assert ref.item_string(dom, j) == _reference_text(meta[dom.item_keys[j]], tok)
    title = ref.item_string(dom, j).partition("title: ")[2].partition(" brand: ")[0]
    assert len(tok.tokenize(title)) == 32
    ids = tok(expected)["input_ids"]
    assert len(ids) > 64  # the old 64-token cap would cut this item's text
    row = ref.item_tokens(dom, [i])
    assert int(row["attention_mask"][0].sum()) == len(ids)  # nothing cut at the backbone max
    np.testing.assert_array_equal(row["input_ids"][0, : len(ids)], ids)
    # the fixed-field rule with a 64-token cap, as before
    old = Backbone(
        BackboneConfig(
            path=str(tiny_checkpoint), item_text="fields", max_item_tokens=64, max_user_tokens=0
        )
    )
    assert old.item_string(dom, i).startswith("title: ")
    assert int(old.item_tokens(dom, [i])["attention_mask"][0].sum()) == 64


def test_item_tables_are_encoded_in_eval_mode_and_padding_is_trimmed(tiny_checkpoint):
    bb = Backbone(BackboneConfig(path=str(tiny_checkpoint), max_item_tokens=0, max_user_tokens=0))
    dom = data.synthetic_domains(1, num_items=12, num_users=10, seed=2)[0]
    tokens = bb.item_tokens(dom)
    assert tokens["input_ids"].shape == (12, 128)
    assert tokens["attention_mask"].sum(1).max() <= 32  # short items: mostly padding
    encode = jax.jit(bb.encode)
    full = np.asarray(encode(bb.params, tokens))  # eval mode, untrimmed
    table = np.asarray(bb.embed(bb.params, tokens, batch_size=8))
    np.testing.assert_allclose(table, full, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(table, np.asarray(bb.embed(bb.params, tokens, batch_size=8)))
    train = np.asarray(encode(bb.params, tokens, dropout_key=jax.random.key(0, impl="rbg")))
    assert np.abs(train - full).max() > 1e-3  # the backbone has dropout; embed() leaves it off


def test_embed_batches_rows_by_length_and_keeps_their_order(tiny_checkpoint):
    bb = Backbone(BackboneConfig(path=str(tiny_checkpoint), max_item_tokens=0, max_user_tokens=0))
    rng = np.random.default_rng(0)
    n, width = 11, 96
    lengths = rng.permutation([90, 70, 40, 3, 5, 8, 12, 20, 25, 30, 2])  # two rows need > 64
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(5, 100, size=(n, width)), 0).astype(np.int32)
    tokens = {"input_ids": ids, "attention_mask": mask}
    seen = []
    real = bb._embed_jit
    bb._embed_jit = lambda params, chunk: (
        seen.append(chunk["input_ids"].shape) or real(params, chunk)
    )
    table = np.asarray(bb.embed(bb.params, tokens, batch_size=4))
    # sorted by length: 2..8 | 12..30 fit in 32 tokens; only the last batch (40, 70, 90) is wide
    assert seen == [(4, 32), (4, 32), (4, 96)]
    # every row in one batch at the full width, in the input order (padding does not change a
    # row's output: tests/models/text/test_encoder.py)
    whole = np.asarray(jax.jit(bb.encode)(bb.params, tokens))
    np.testing.assert_allclose(table, whole, rtol=1e-5, atol=1e-5)
    assert np.abs(whole[:, None] - whole[None]).max(-1)[~np.eye(n, dtype=bool)].min() > 1e-3


def _cfg(path, **kw):
    return pipeline.MergeRecConfig(
        data=pipeline.DataConfig(num_domains=2, num_items=20, num_users=20, seed=1),
        backbone=BackboneConfig(path=str(path), max_item_tokens=32, max_user_tokens=48),
        finetune=finetune.FinetuneConfig(batch_size=8, max_epochs=1),
        learn=learn.LearnConfig(steps=3, batch_size=8),
        **kw,
    )


def test_variant_pairing_and_its_override(tiny_checkpoint, tmp_path):
    paired = pipeline.Experiment(_cfg(tiny_checkpoint), tmp_path / "paired")
    assert paired.cfg.learn_init == "paired"
    expect = {"domain": ("task_arithmetic", 0.2), "layer": ("ties", 1.0)}
    for run in paired.learned_runs():
        source, init = expect[run.granularity]
        assert paired._learn_source(run) == source
        assert paired._learn_cfg(run, init=None).init == init
        key = paired._result_key(run)
        assert key["learn_init"] == source and key["learn"]["init"] == init
        assert ("ties" in key) == (source == "ties")
    assert {r.granularity for r in paired.learned_runs()} == {"domain", "layer"}
    # the override: every variant from folded TIES at the TIES scale
    kw = dict(learn_init="ties", merge_hparams=("ties:density=0.2,scale=0.7",))
    ties = pipeline.Experiment(_cfg(tiny_checkpoint, **kw), tmp_path / "ties")
    for run in ties.learned_runs():
        assert ties._learn_source(run) == "ties"
        assert ties._learn_cfg(run, init=None).init == 0.7
        assert ties._result_key(run)["ties"]["scale"] == 0.7
    ta = pipeline.Experiment(_cfg(tiny_checkpoint, learn_init="task_arithmetic"), tmp_path / "ta")
    assert {ta._learn_cfg(r, init=None).init for r in ta.learned_runs()} == {0.2}
