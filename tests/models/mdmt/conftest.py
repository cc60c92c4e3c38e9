"""Shared fixtures of the MDMT model tests."""

import jax
import pytest


@pytest.fixture
def rbg_prng():
    """The ``rbg`` PRNG implementation for tests that compile a Trainer (restored afterwards):
    XLA:CPU compiles the jitted threefry-based initialisers of ``init_state`` about 3x slower;
    the mechanics these tests check do not depend on the PRNG."""
    old = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    yield
    jax.config.update("jax_default_prng_impl", old)
