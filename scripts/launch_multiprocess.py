"""Start one command as N cooperating JAX processes on this machine (multi-process, for real).

Each copy gets ``JAX_COORDINATOR_ADDRESS`` (localhost and a free port), ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID``; a script that calls :func:`jaxrec.sharding.maybe_initialize_distributed`
first (``scripts/train_mdmt.py``, ``scripts/run_mergerec.py``) then runs as process i of N over the
global device mesh. With ``--cpu-devices D`` each process is a CPU-only JAX with D fake devices
and gloo collectives: the same code path as N hosts of D accelerators each.

Usage::

    python scripts/launch_multiprocess.py --processes 2 --cpu-devices 4 -- \\
        python scripts/train_mdmt.py --config configs/mdmt/saf.py:tiny --workdir runs/saf_2p

Every process's output is printed with a ``[pN]`` prefix; if one process fails the others are
stopped. The exit status is the first non-zero one (0 when all succeed). On TPU VM slices and
GPU clusters use the cluster's launcher instead (see the README, "Multi-host").
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(process_id: int, num_processes: int, port: int, cpu_devices: int) -> dict:
    env = dict(os.environ)
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(num_processes),
        JAX_PROCESS_ID=str(process_id),
    )
    if cpu_devices:
        flags = " ".join(
            f
            for f in env.get("XLA_FLAGS", "").split()
            if "xla_force_host_platform_device_count" not in f
        )
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cpu_devices}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def launch(
    command: list[str],
    processes: int,
    cpu_devices: int = 0,
    port: int = 0,
    timeout: float | None = None,
    prefix_output: bool = True,
) -> int:
    """Runs ``command`` as ``processes`` JAX processes; returns the first non-zero exit status."""
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if not command:
        raise ValueError("no command given (write it after --)")
    port = port or free_port()
    procs = [
        subprocess.Popen(
            command,
            env=child_env(i, processes, port, cpu_devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]

    def relay(i, p):
        for line in p.stdout:
            sys.stdout.write(f"[p{i}] {line}" if prefix_output else line)
            sys.stdout.flush()

    threads = [
        threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(procs)
    ]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            late = deadline is not None and time.monotonic() > deadline
            if failed or late:
                status = failed[0] if failed else 124
                break
            time.sleep(0.2)
    finally:
        for p in procs:  # stop the others (ours, by pid) when one failed or time ran out
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in threads:
            t.join(timeout=5)
    return status or next((p.returncode for p in procs if p.returncode), 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--processes", type=int, default=2, help="number of JAX processes")
    ap.add_argument(
        "--cpu-devices", type=int, default=0,
        help="CPU-only processes with this many fake devices each (0: the machine's devices)",
    )  # fmt: skip
    ap.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before all are stopped")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return launch(command, args.processes, args.cpu_devices, args.port, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
