"""Test set-up: 8 fake CPU devices (must happen before jax is imported) and shared fixtures."""

import contextlib
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # One persistent XLA compilation cache per test run, shared through the environment by the
    # xdist workers and by the subprocesses the command-line, kill and multi-process tests start
    # (each of which would otherwise compile the same programs again). The key covers the program,
    # the compile options and XLA_FLAGS, so a cached executable is the one a compile would give.
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="jaxrec-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# Cheaper XLA compiles where the tests check mechanics, not XLA's optimised numerics: the ``rbg``
# PRNG (XLA:CPU compiles the jitted threefry-based initialisers of ``init_state`` about 3x slower)
# and ``jax_disable_most_optimizations`` (a third to a half less compile time for a train step).
# As jax config names (this process) and as the environment variables jax reads at import (the
# command-line runs a test starts).
CHEAP_COMPILES = {"jax_default_prng_impl": "rbg", "jax_disable_most_optimizations": True}
CHEAP_COMPILE_ENV = {k.upper(): str(v).lower() for k, v in CHEAP_COMPILES.items()}


@contextlib.contextmanager
def _cheap_compiles():
    """:data:`CHEAP_COMPILES` in this process (settings restored afterwards), for tests that build
    an MDMT Trainer: they compare two computations compiled under the same settings or check
    mechanics (finite losses, which parameters move, trace counts, shapes, files, resume) that
    XLA's optimisation passes do not change."""
    import jax

    # a state with a context manager is an attribute; a plain flag only reads
    old = {k: getattr(jax.config, k) if hasattr(jax.config, k) else jax.config.read(k)
           for k in CHEAP_COMPILES}  # fmt: skip
    try:
        for k, v in CHEAP_COMPILES.items():
            jax.config.update(k, v)
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)


@pytest.fixture(scope="module")
def cheap_compile_subprocesses():
    """:data:`CHEAP_COMPILE_ENV` for the processes a module's tests start (this process keeps its
    settings: jax read them at import). For kill/resume and multi-process tests, which compare
    runs that all compile under these settings, bit for bit or to a stated tolerance."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in CHEAP_COMPILE_ENV.items():
            mp.setenv(k, v)
        yield


@pytest.fixture
def trainer_compile():
    """:func:`_cheap_compiles` for one test."""
    with _cheap_compiles():
        yield


@pytest.fixture(scope="module")
def trainer_compile_module():
    """:func:`_cheap_compiles` for a whole module (``pytestmark = usefixtures(...)``)."""
    with _cheap_compiles():
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder beside the project (CI has it; a new user may not)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mergerec_cli_reference(tiny_checkpoint, tmp_path_factory):
    """The tiny MergeRec pipeline run once, uninterrupted, through the real command line
    (``jaxrec mergerec run``, one CPU device): ``(argv without --workdir, workdir)``.

    Shared by the end-to-end assertions (tests/mergerec/test_pipeline.py) and, as the reference
    outputs, by the kill tests (tests/mergerec/test_cli_kill_mergerec.py). ``tiny_checkpoint``
    comes from tests/mergerec/conftest.py, so only tests under tests/mergerec can use it.
    """
    import subprocess
    import sys

    sets = {
        "backbone.path": str(tiny_checkpoint),
        "backbone.max_item_tokens": "32",
        "backbone.max_user_tokens": "48",
        "backbone.encode_batch_size": "32",
        "data.num_domains": "2",
        "data.num_items": "30",
        "data.num_users": "40",
        "data.seed": "1",
        "finetune.batch_size": "16",
        "finetune.lr": "3e-3",
        "finetune.warmup_steps": "1",
        "finetune.patience": "1",
        "finetune.dropout": "false",
        "learn.steps": "3",
        "learn.checkpoint_every": "1",
        "learn.batch_size": "8",
        "learn.dropout": "false",
        "seeds": "0,1",
        "mesh_data": "1",
        "lambdas": "10",
    }
    argv = ["mergerec", "run", "--config", "configs/mergerec/main.py:tiny"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    workdir = tmp_path_factory.mktemp("mergerec_cli") / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **CHEAP_COMPILE_ENV)  # as the kill tests' runs
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's plain run
    out = subprocess.run(
        [sys.executable, "-m", "jaxrec.cli", *argv, "--workdir", str(workdir)],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "outputs:" in out.stdout and "| fine-tuned |" in out.stdout, out.stdout[-2000:]
    return argv, workdir
