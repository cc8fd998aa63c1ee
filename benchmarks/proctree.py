"""Run a command and measure its wall time and the peak resident memory of its whole process tree."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    timed_out: bool
    log_path: Path

    @property
    def peak_gib(self) -> float:
        return self.peak_rss_bytes / 2**30


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss(root: int) -> int:
    kids = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
        stack.extend(kids.get(pid, []))
    return total


def run_measured(cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None,
                 timeout_s: float | None = None, address_space_limit: int | None = None,
                 interval_s: float = 0.1) -> Measured:
    """Run cmd (stdout+stderr to log_path); sample the tree's RSS every interval_s."""
    def limit():
        os.setsid()
        if address_space_limit:
            resource.setrlimit(resource.RLIMIT_AS, (address_space_limit, address_space_limit))

    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=limit)  # noqa: PLW1509 (sets the rlimit before exec)
        stop = threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss(proc.pid))
                stop.wait(interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, 9)
            proc.wait()
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    return Measured(proc.returncode, wall, peak, timed_out, log_path)
