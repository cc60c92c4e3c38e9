"""Naive numpy references of the shared MDMT layers (loops, no batching tricks), used by the model
tests: field embeddings, the stacked MLP with training-mode BatchNorm, and the domain selection."""

import numpy as np


def np_bn(x, scale, bias, eps=1e-5):
    """Training-mode BatchNorm over the batch axis."""
    mean, var = x.mean(0), x.var(0)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_mlp(x, p, num, activate_last=True, batch_norm=True, shared_input=True):
    """Loop over the ``num`` nets and layers of a ``layers.MLP`` (params ``p`` as a pure dict).

    x: [B, in] (shared by all nets) or [B, num, in] -> [B, num, out].
    """
    outs = []
    n_layers = len(p["linears"])
    for n in range(num):
        h = x if shared_input else x[:, n]
        for i in range(n_layers):
            lin = p["linears"][i]
            h = h @ np.asarray(lin["kernel"][n]) + np.asarray(lin["bias"][n])
            if i == n_layers - 1 and not activate_last:
                break
            if batch_norm:
                d = h.shape[1]
                sl = slice(n * d, (n + 1) * d)
                scale, bias = (np.asarray(p["norms"][i][k])[sl] for k in ("scale", "bias"))
                h = np_bn(h, scale, bias)
            h = np.maximum(h, 0.0)
        outs.append(h)
    return np.stack(outs, 1)


def np_embed(p, batch, sparse_vocab):
    """``(e_ui, e_id)`` of ``layers.FieldEmbedding``: one table lookup per field, then dense."""
    table = np.asarray(p["embedding"]["table"])
    offsets = np.cumsum((0,) + tuple(sparse_vocab[:-1]))
    e = [table[batch["sparse"][:, f] + offsets[f]] for f in range(len(offsets))]
    e_ui = np.concatenate(e + [batch["dense"]], 1)
    return e_ui, np.asarray(p["embedding"]["domain_table"])[batch["domain"]]


def np_select(logits_btd, domain):
    """Each sample's own domain's outputs, by a loop over the batch."""
    return np.stack([logits_btd[i, :, domain[i]] for i in range(len(domain))])
