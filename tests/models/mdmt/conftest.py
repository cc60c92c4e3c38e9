"""Shared fixtures of the MDMT model tests."""

import jax
import pytest


@pytest.fixture
def trainer_compile():
    """Cheaper compiles for tests that build a Trainer (settings restored afterwards): the
    ``rbg`` PRNG (XLA:CPU compiles the jitted threefry-based initialisers of ``init_state``
    about 3x slower) and ``jax_disable_most_optimizations`` (about a third less compile time for
    a train step; these tests check mechanics -- finite losses, which parameters move, trace
    counts, prediction shapes -- that XLA's optimisation passes do not change)."""
    old_impl = jax.config.jax_default_prng_impl
    old_opt = jax.config.read("jax_disable_most_optimizations")  # a flag: no attribute
    jax.config.update("jax_default_prng_impl", "rbg")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_default_prng_impl", old_impl)
    jax.config.update("jax_disable_most_optimizations", old_opt)
