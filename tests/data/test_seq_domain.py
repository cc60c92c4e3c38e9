"""Domain data model: splits, interaction pipeline (de-dup, k-core, chronology), validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import data
from jaxrec.data import subsample_users, synthetic_domains
from jaxrec.data.domain import k_core


@pytest.fixture(scope="module")
def toy():
    seqs = [[0, 1, 2, 3, 4], [5, 4, 3], list(range(60)) + [61, 62]]
    keys = [f"i{i}" for i in range(63)]
    attrs = {"title": [f"item {i}" for i in range(63)], "brand": ["b"] * 63}
    return data.from_sequences("toy", seqs, keys, attrs), seqs


def test_sizes_and_text(toy):
    dom, seqs = toy
    assert (dom.name, dom.num_users, dom.num_items) == ("toy", 3, 63)
    assert dom.num_interactions == sum(len(s) for s in seqs)
    assert dom.item_text(4) == {"title": "item 4", "brand": "b"}
    with pytest.raises(IndexError, match="item id 63"):
        dom.item_text(63)
    np.testing.assert_array_equal(dom.train_seq(1), [5])
    assert dom.val[2] == 61 and dom.test[2] == 62
    assert dom.item_popularity[4] == 1 and dom.item_popularity.sum() == dom.train_items.size


def test_splits_follow_the_reference_protocol(toy):
    dom, seqs = toy
    for max_history in (50, 3):
        ft, va, te = (dom.split(s, max_history) for s in ("finetune", "val", "test"))
        # fine-tuning: train seq minus its last item -> last train item; users with < 2 train items
        # (user 1 has one) have no example
        np.testing.assert_array_equal(ft.users, [0, 2])
        np.testing.assert_array_equal(ft.targets, [seqs[0][-3], seqs[2][-3]])
        for ex, hist in zip((ft, va, te), ((seqs[2][:-3]), seqs[2][:-2], seqs[2][:-1])):
            np.testing.assert_array_equal(ex.histories[-1], hist[-max_history:])
        np.testing.assert_array_equal(va.histories[0], seqs[0][:-2][-max_history:])
        np.testing.assert_array_equal(te.histories[1], [5, 4][-max_history:])
        np.testing.assert_array_equal(va.targets, [s[-2] for s in seqs])
        np.testing.assert_array_equal(te.targets, [s[-1] for s in seqs])
        assert te.lengths.max() == min(max_history, 61)
    with pytest.raises(KeyError, match="unknown split"):
        dom.split("train")


def test_domain_is_immutable_and_validated(toy):
    dom, _ = toy
    with pytest.raises(ValueError):
        dom.train_items[0] = 3
    with pytest.raises(ValueError, match="fewer than 3"):
        data.from_sequences("bad", [[1, 2]], ["a", "b", "c"], {})
    with pytest.raises(ValueError, match="val item id 9 outside"):
        data.from_sequences("bad", [[0, 9, 1]], ["a", "b"], {})
    with pytest.raises(ValueError, match="attribute 'title' has 1 rows"):
        data.from_sequences("bad", [[0, 1, 1]], ["a", "b"], {"title": ["x"]})


def test_item_offsets_make_disjoint_global_ids(toy):
    dom, _ = toy
    np.testing.assert_array_equal(data.item_offsets([dom, dom]), [0, 63, 126])


def test_from_interactions_rules():
    # u1: duplicate of (u1, a) later -> earliest kept; ties in time keep file order
    users = ["u2", "u1", "u1", "u1", "u1", "u2", "u2", "u3", "u1"]
    items = ["a", "b", "a", "c", "a", "b", "c", "a", "d"]
    times = [5, 3, 1, 3, 9, 1, 1, 0, 4]
    text = {k: {"title": k.upper()} for k in "abcd"}
    dom = data.from_interactions("t", users, items, times, text, ("title", "brand"), k=1)
    # u3 has one interaction: dropped (leave-one-out needs 3)
    assert list(dom.user_keys) == ["u1", "u2"]
    seq_u1 = [dom.item_keys[i] for i in [*dom.train_seq(0), dom.val[0], dom.test[0]]]
    assert seq_u1 == ["a", "b", "c", "d"]  # a@1, b@3, c@3 (file order), d@4; a@9 de-duplicated
    seq_u2 = [dom.item_keys[i] for i in [*dom.train_seq(1), dom.val[1], dom.test[1]]]
    assert seq_u2 == ["b", "c", "a"]
    assert list(dom.item_keys) == ["a", "b", "c", "d"]  # first appearance, users in key order
    assert dom.item_text(0) == {"title": "A", "brand": ""}
    with pytest.raises(ValueError, match="empty after filtering"):
        data.from_interactions("t", users, items, times, text, ("title",), k=5)
    with pytest.raises(ValueError, match="empty after filtering"):
        data.from_interactions("t", users, items, times, {}, ("title",), k=1, require_text=True)


def k_core_reference(edges, k):
    edges = list(edges)
    while True:
        ucount, icount = {}, {}
        for u, i in edges:
            ucount[u] = ucount.get(u, 0) + 1
            icount[i] = icount.get(i, 0) + 1
        kept = [(u, i) for u, i in edges if ucount[u] >= k and icount[i] >= k]
        if len(kept) == len(edges):
            return kept
        edges = kept


@settings(max_examples=40, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=60),
    k=st.integers(1, 4),
)
def test_k_core_matches_reference(edges, k):
    users, items = np.array(edges).T
    keep = k_core(users, items, k)
    assert [e for e, m in zip(edges, keep) if m] == k_core_reference(edges, k)
    if keep.any():
        assert np.bincount(users[keep]).max() >= k
        assert np.all(np.bincount(users[keep])[np.unique(users[keep])] >= k)
        assert np.all(np.bincount(items[keep])[np.unique(items[keep])] >= k)


def test_data_import_is_light_and_mdmt_lazy():
    import subprocess
    import sys

    code = (
        "import sys, jaxrec.data as d; "
        "assert 'jaxrec.data.mdmt' not in sys.modules and 'jax' not in sys.modules; "
        "assert not hasattr(d, 'no_such_thing')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subsample_users_keeps_whole_sequences_and_only_their_items():
    dom = synthetic_domains(1, num_items=40, num_users=30, seed=3)[0]
    sub = subsample_users(dom, 7, seed=1)
    assert sub.num_users == 7 and sub.num_items < dom.num_items
    assert subsample_users(dom, 7, seed=1).user_keys.tolist() == sub.user_keys.tolist()
    used = set()
    for u_new, key in enumerate(sub.user_keys):
        u = dom.user_keys.tolist().index(key)
        old = [dom.item_keys[i] for i in (*dom.train_seq(u), dom.val[u], dom.test[u])]
        new = [sub.item_keys[i] for i in (*sub.train_seq(u_new), sub.val[u_new], sub.test[u_new])]
        assert new == old  # same sequence, same item identities
        used.update(new)
    assert set(sub.item_keys.tolist()) == used  # no item nobody interacted with
    first = sub.item_keys[0]
    i_old = dom.item_keys.tolist().index(first)
    assert {a: v[0] for a, v in sub.item_attrs.items()} == {
        a: v[i_old] for a, v in dom.item_attrs.items()
    }
    assert subsample_users(dom, 100) is dom
    with pytest.raises(ValueError, match="num_users"):
        subsample_users(dom, 0)
