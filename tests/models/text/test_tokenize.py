"""Recommendation-text tokenisation (BLaIR strings, RecFormer streams) with WordPiece and BPE."""

import numpy as np
import pytest

from jaxrec.models.text import tokenize as tk

ITEMS = {
    7: {"title": "Red trail running shoes", "brand": "Acme", "category": "Sports"},
    8: {"title": "Blue kettle", "brand": "", "category": "Kitchen"},
    9: {"title": "Garden hose", "brand": "Hosely", "category": "Garden"},
}


@pytest.fixture(params=["wordpiece", "bpe"])
def tokenizer(request):
    name = "minilm_tokenizer" if request.param == "wordpiece" else "bpe_tokenizer"
    return request.getfixturevalue(name)


def test_item_text_format(tokenizer):
    assert tk.item_text(ITEMS[8], tokenizer) == "title: Blue kettle brand:  category: Kitchen"
    assert "brand: " in tk.item_text({"title": "x"}, tokenizer)


def test_item_value_cut_to_32_tokens(tokenizer):
    long_title = " ".join(f"word{i}" for i in range(60))
    s = tk.item_text({"title": long_title, "brand": "b", "category": "c"}, tokenizer)
    title_part = s.split(" brand: ")[0].removeprefix("title: ")
    assert len(tokenizer.tokenize(title_part)) == 32
    assert long_title.startswith(title_part.lower()) or long_title.startswith(title_part)


def test_user_text_most_recent_first_with_lookup(tokenizer):
    by_id = tk.user_text([7, 8, 9], tokenizer, lookup=ITEMS)
    by_dict = tk.user_text([ITEMS[7], ITEMS[8], ITEMS[9]], tokenizer)
    by_call = tk.user_text([7, 8, 9], tokenizer, lookup=ITEMS.__getitem__)
    assert by_id == by_dict == by_call
    parts = by_id.split("; ")
    assert parts == [tk.item_text(ITEMS[i], tokenizer) for i in (9, 8, 7)]
    with pytest.raises(TypeError, match="no lookup"):
        tk.user_text([7], tokenizer)


def test_blair_users_truncate_oldest_and_bucket(tokenizer):
    history = [ITEMS[7], ITEMS[8]] * 20 + [ITEMS[9]]  # most recent: 9
    batch = tk.blair_users([history, [ITEMS[8]]], tokenizer, max_len=64)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 64) and ids.dtype == np.int32
    assert mask[0].sum() == 64 and 0 < mask[1].sum() < 64
    full = tokenizer(tk.user_text(history, tokenizer))["input_ids"]
    np.testing.assert_array_equal(ids[0, :63], full[:63])  # kept the start = most recent items
    assert (ids[1, mask[1] == 0] == tokenizer.pad_token_id).all()
    short = tk.blair_items([ITEMS[7], ITEMS[8]], tokenizer)
    assert short["input_ids"].shape[1] in tk.BUCKETS


def test_recformer_stream_layout(tokenizer):
    ids, types, pos = tk.recformer_tokens([7, 9], tokenizer, lookup=ITEMS, attributes=("title",))
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    assert ids[0] == cls and types[0] == tk.TYPE_CLS and pos[0] == 0
    key_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("title"))
    v9 = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Garden hose"))
    v7 = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Red trail running shoes"))
    assert ids[1:] == key_ids + v9 + key_ids + v7  # most recent (9) first
    n9 = len(key_ids) + len(v9)
    assert pos[1:] == [1] * n9 + [2] * (len(key_ids) + len(v7))
    assert types[1:] == [1] * len(key_ids) + [2] * len(v9) + [1] * len(key_ids) + [2] * len(v7)


def test_recformer_batch_padding_and_limits(tokenizer):
    histories = [[7, 8, 9] * 30, [8]]
    batch = tk.recformer_batch(histories, tokenizer, lookup=ITEMS, max_len=128, max_items=50)
    ids, mask, types, pos = (
        batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "item_position_ids")
    )
    assert ids.shape == (2, 128) and all(a.dtype == np.int32 for a in batch.values())
    assert (mask[:, 0] == 2).all() and mask[0].sum() == 128 + 1
    pad = mask == 0
    assert (types[pad] == tk.TYPE_PAD).all() and (pos[pad] == 0).all()
    assert (ids[pad] == tokenizer.pad_token_id).all()
    assert pos[0].max() <= 50 and pos[0, 1] == 1 and pos[1].max() == 1
    many = tk.recformer_batch(
        [[7] * 60], tokenizer, lookup=ITEMS, max_len=4096, max_items=50, buckets=(64, 4096)
    )
    assert many["item_position_ids"].max() == 50
    items = tk.recformer_items([ITEMS[7], ITEMS[8]], tokenizer)
    assert items["input_ids"].shape[1] == 64 and items["item_position_ids"].max() == 1


def test_bucket_length():
    assert tk.bucket_length(33, (32, 64)) == 64
    with pytest.raises(ValueError, match="exceeds the largest bucket 64"):
        tk.bucket_length(65, (32, 64))
