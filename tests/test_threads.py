"""The C++ core's one thread pool and its budget (decode, tokenize and search share both)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mmserve import _C


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_the_budget_follows_the_cpu_affinity():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
            "from mmserve import _C; print(_C.detected_cpus(), _C.thread_budget())")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def test_the_environment_and_the_setter_override_the_budget():
    result = run_python("from mmserve import _C; print(_C.thread_budget())", MMSERVE_NATIVE_THREADS="3")
    assert result.stdout.strip() == "3", result.stderr
    before = _C.thread_budget()
    try:
        _C.set_thread_budget(1)
        assert _C.thread_budget() == 1
    finally:
        _C.set_thread_budget(0)
    assert _C.thread_budget() == before
    with pytest.raises(ValueError):
        _C.set_thread_budget(-1)


@pytest.mark.parametrize("text, cpus", [("max 100000", 0), ("100000 100000", 1), ("150000 100000", 2),
                                        ("50000 100000", 1), ("400000 100000\n", 4), ("", 0), ("junk", 0)])
def test_cgroup_quota_in_cpus(text, cpus):
    assert _C.cpus_from_cgroup_max(text) == cpus


def test_results_do_not_depend_on_the_budget(gallery):
    images = [p.read_bytes() for p in gallery] * 3
    database = np.random.default_rng(1).standard_normal((5000, 64)).astype(np.float32)
    queries = database[:7] + 0.01
    outcomes = []
    try:
        for budget in (1, 2, 5):
            _C.set_thread_budget(budget)
            pixels, errors = _C.preprocess_batch(images + [b"not an image"], 48, 48)
            top = _C.top_k(queries, database, 10)
            outcomes.append((pixels, errors, top))
    finally:
        _C.set_thread_budget(0)
    first = outcomes[0]
    for pixels, errors, (scores, indices) in outcomes[1:]:
        assert np.array_equal(pixels, first[0]) and errors == first[1]
        assert np.array_equal(scores, first[2][0]) and np.array_equal(indices, first[2][1])


def test_a_worker_that_cannot_start_is_an_exception_not_an_abort():
    """No address space left for a thread's stack: RuntimeError on the calling thread."""
    code = """
import resource
import numpy as np
from mmserve import _C
database = np.ones((200_000, 64), np.float32)
queries = np.ones((8, 64), np.float32)
size = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))
resource.setrlimit(resource.RLIMIT_AS, (size + (4 << 20), resource.RLIM_INFINITY))
try:
    _C.top_k(queries, database, 5, threads=2)
except RuntimeError as error:
    print('RuntimeError', error)
"""
    result = run_python(code, OPENBLAS_NUM_THREADS="1", MMSERVE_NATIVE_THREADS="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("RuntimeError cannot start a worker thread"), (result.stdout, result.stderr)


def test_a_forked_child_gets_a_pool_of_its_own():
    """Threads do not survive fork: a child that computes in parallel must not wait for its parent's workers."""
    code = """
import os, sys
import numpy as np
from mmserve import _C
database = np.random.default_rng(0).standard_normal((200_000, 64)).astype(np.float32)
queries = database[:8]
expected = _C.top_k(queries, database, 5, threads=2)
pid = os.fork()
if pid == 0:
    scores, indices = _C.top_k(queries, database, 5, threads=2)
    os._exit(0 if np.array_equal(indices, expected[1]) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "0", (result.stdout, result.stderr)
