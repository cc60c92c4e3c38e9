"""A deterministic toy text encoder for the learned-merge tests (test_learn.py and, in every
launched process, test_multiprocess_learn.py): mean-pooled embeddings, two tanh layers, an
L2-normalised output, and inverted dropout 0.1 on the pooled input as its train mode."""

import jax
import jax.numpy as jnp
import numpy as np

V, H = 23, 8  # vocabulary, hidden size


def toy_params(seed):
    r = np.random.default_rng(seed)
    return {
        "emb": jnp.asarray(r.normal(size=(V, H)), jnp.float32),
        "layers": [
            {"w": jnp.asarray(np.eye(H) + 0.3 * r.normal(size=(H, H)), jnp.float32)}
            for _ in range(2)
        ],
    }


def encode(params, batch, dropout_key=None):
    x = params["emb"][batch["input_ids"]].mean(1)
    if dropout_key is not None:  # a toy train mode: inverted dropout 0.1 on the pooled input
        keep = jax.random.bernoulli(dropout_key, 0.9, x.shape)
        x = jnp.where(keep, x / 0.9, 0.0)
    for layer in params["layers"]:
        x = jnp.tanh(x @ layer["w"])
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
