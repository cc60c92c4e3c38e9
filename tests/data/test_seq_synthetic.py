"""Built-in default data: determinism, structure, knobs, and learnable text signal."""

import time

import numpy as np
import pytest

from jaxrec import data, metrics
from jaxrec.data.synthetic_seq import DOMAINS, TOPICS


@pytest.fixture(scope="module")
def domains():
    return data.synthetic_domains()


def test_defaults_are_small_fast_and_deterministic(domains):
    start = time.perf_counter()
    again = data.synthetic_domains()
    assert time.perf_counter() - start < 5.0  # ~0.3 s on an idle core
    assert [d.name for d in domains] == ["Beauty", "Sports", "Toys"]
    for a, b in zip(domains, again):
        assert (a.num_users, a.num_items) == (400, 300)
        np.testing.assert_array_equal(a.train_items, b.train_items)
        assert a.item_attrs["title"].tolist() == b.item_attrs["title"].tolist()
        assert 5 <= a.train_lengths.min() + 2 and a.train_lengths.max() + 2 <= 20
    other = data.synthetic_domains(seed=1)
    assert not np.array_equal(other[0].train_items, domains[0].train_items)


def test_text_structure_and_shared_vocabulary(domains):
    shared = {w for words in TOPICS.values() for w in words}
    item_keys = [set(d.item_keys.tolist()) for d in domains]
    assert not item_keys[0] & item_keys[1] and not item_keys[1] & item_keys[2]
    used = []
    for dom in domains:
        text = dom.item_text(7)
        assert set(text) == {"title", "brand", "category"}
        assert text["title"].startswith(text["brand"])
        assert text["category"].split()[0] == dom.name
        categories = {c.removeprefix(dom.name + " ") for c in dom.item_attrs["category"]}
        assert categories <= set(DOMAINS[dom.name])
        used.append({w for t in dom.item_attrs["title"] for w in t.split()} & shared)
        for u in range(dom.num_users):  # no repeated items in a user's sequence
            seq = [*dom.train_seq(u), dom.val[u], dom.test[u]]
            assert len(set(seq)) == len(seq)
    assert len(used[0] & used[1] & used[2]) > 20  # topic words appear in every domain


def topic_features(dom):
    """Item -> shared-topic vector read from the title words only (what a text model can learn)."""
    word_topic = {w: k for k, words in enumerate(TOPICS.values()) for w in words}
    x = np.zeros((dom.num_items, len(TOPICS)), np.float32)
    for i, title in enumerate(dom.item_attrs["title"]):
        topics = [word_topic[w] for w in title.split() if w in word_topic]
        x[i, topics[0]] += 0.8
        x[i, topics[1:2]] += 0.2
    return x


def test_text_carries_signal_in_every_domain(domains):
    """One word->topic reader (shared vocabulary) works in every domain: Recall@10 of a
    history-title model is several times popularity's and chance's."""
    for dom in domains:
        test = dom.test_examples()
        items = topic_features(dom)
        users = np.stack([items[h].mean(0) for h in test.histories])
        pop = np.log1p(dom.item_popularity).astype(np.float32)
        scores = (
            12.0 * users @ items.T + 0.3 * pop
        )  # popularity breaks ties between same-topic items
        text_recall = metrics.ranking(scores, test.targets, (10,))["recall@10"]
        pop_scores = np.tile(pop + np.arange(dom.num_items) * 1e-5, (dom.num_users, 1))
        pop_recall = metrics.ranking(pop_scores, test.targets, (10,))["recall@10"]
        assert text_recall > 2.5 * max(pop_recall, 10 / dom.num_items), (dom.name, text_recall)


def test_knobs_and_errors():
    doms = data.synthetic_domains(
        2, 40, 30, seed=3, num_topics=4, min_len=3, max_len=6, domain_names=("Kitchen", "Garden")
    )
    assert [(d.name, d.num_items, d.num_users) for d in doms] == [
        ("Kitchen", 40, 30),
        ("Garden", 40, 30),
    ]
    assert max(d.train_lengths.max() for d in doms) <= 4
    for kwargs, match in [
        ({"num_domains": 7}, "distinct domain names"),
        ({"domain_names": ("Beauty", "Beauty", "Toys")}, "distinct domain names"),
        ({"num_topics": 9}, "num_topics"),
        ({"min_len": 2}, "min_len"),
        ({"noise": 1.5}, "noise"),
    ]:
        with pytest.raises(ValueError, match=match):
            data.synthetic_domains(**kwargs)
