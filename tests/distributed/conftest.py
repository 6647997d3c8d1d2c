"""Helpers for the distributed tests: launching `wvl` under torchrun (gloo, CPU) and comparing results."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def torchrun(args: list[str], nproc: int = 2, script: Path | None = None, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """``torchrun --standalone --nproc_per_node=<nproc> -m learning.cli <args>`` (or ``script <args>``) on CPU (gloo).
    Returns the finished process (stdout + stderr in .stdout) and its wall time in s."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += [str(script)] if script else ["-m", "learning.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WVL_LOG_LEVEL": "INFO"}
    env.pop("WVL_DEBUG", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def torchrun_nodes(args: list[str], nodes: int = 2, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """``wvl <args>`` as ``nodes`` torchrun agents of one process each on this machine, rendezvous at 127.0.0.1 (what
    the 2-node README command does across machines). Returns each node's finished process."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WVL_LOG_LEVEL": "INFO"}
    env.pop("WVL_DEBUG", None)
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1",
                               f"--node_rank={n}", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "learning.cli", *args],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in range(nodes)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    return out


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-6000:]


def assert_close_states(a: dict, b: dict, atol: float, what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: different keys"
    for k in a:
        diff = (a[k].float() - b[k].float()).abs().max().item() if a[k].numel() else 0.0
        assert diff <= atol, f"{what}[{k}]: max |difference| {diff:.3g} > {atol}"
