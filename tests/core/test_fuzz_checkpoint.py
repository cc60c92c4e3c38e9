"""Params files: damaged files name the file, fuzzed bytes raise only CheckpointError, atomic writes
never leave a partial file or destroy the previous one."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec import checkpoint
from jaxrec.checkpoint import CheckpointError

PARAMS = {"emb": {"embedding": np.arange(12, dtype=np.float32).reshape(4, 3)}, "b": np.ones(2)}


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    path = checkpoint.save_params(tmp_path_factory.mktemp("p") / "p.safetensors", PARAMS)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncate_header", "truncate_data", "garbage", "empty"])
def test_damaged_params_file_names_the_file(tmp_path, good_bytes, damage):
    raw = {
        "truncate_header": good_bytes[:20],
        "truncate_data": good_bytes[:-7],
        "garbage": b"\x00\x01not a safetensors file at all" * 3,
        "empty": b"",
    }[damage]
    path = tmp_path / f"{damage}.safetensors"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=f"{damage}.safetensors: not a readable params file"):
        checkpoint.load_params(path)
    with pytest.raises(CheckpointError, match=f"{damage}.safetensors"):
        checkpoint.load_params(path, target=PARAMS)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=4),
    tail=st.binary(max_size=16),
)
def test_fuzzed_params_file_loads_or_raises_checkpoint_error(
    tmp_path, good_bytes, cut, flips, tail
):
    raw = bytearray(good_bytes[: len(good_bytes) - cut % len(good_bytes)] + tail)
    for pos, xor in flips:
        if raw:
            raw[pos % len(raw)] ^= xor
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(raw))
    try:
        flat = checkpoint.load_params(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return
    assert all(isinstance(v, jnp.ndarray) for v in flat.values())  # loaded: arrays only


def test_atomic_write_keeps_the_previous_file_on_a_failed_write(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    checkpoint.atomic_write(path, '{"ndcg": 1}')
    assert path.read_text() == '{"ndcg": 1}'
    with pytest.raises(RuntimeError):  # a writer that dies mid-file
        with checkpoint.atomic_path(path) as tmp:
            tmp.write_text('{"nd')
            raise RuntimeError("killed")
    assert path.read_text() == '{"ndcg": 1}'
    assert sorted(os.listdir(path.parent)) == ["metrics.json"]  # no temporary left behind
    checkpoint.atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    """A SIGKILL mid-write leaves ``.<name>.<pid>.<random>.tmp``; the next write of the same file
    removes it when that pid is gone, and leaves a live writer's (and other files') alone."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    path = tmp_path / "results.csv"
    stale = tmp_path / f".results.csv.{dead_pid}.0badc0de.tmp"
    live = tmp_path / f".results.csv.{os.getpid()}.feedbeef.tmp"
    other = tmp_path / f".metrics.json.{dead_pid}.0badc0de.tmp"
    for f in (stale, live, other):
        f.write_text("partial")
    checkpoint.atomic_write(path, "a,b\n")
    assert path.read_text() == "a,b\n"
    assert not stale.exists() and live.exists() and other.exists()


def test_save_params_failure_keeps_the_last_good_file(tmp_path):
    path = checkpoint.save_params(tmp_path / "p.safetensors", PARAMS)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - an unstorable leaf fails inside the writer
        checkpoint.save_params(path, {"x": np.array(["not", "numeric"])})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.safetensors"]
    np.testing.assert_array_equal(
        checkpoint.load_params(path)["emb/embedding"], PARAMS["emb"]["embedding"]
    )


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
