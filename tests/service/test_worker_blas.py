"""Worker processes run numpy's BLAS on one thread unless the environment sets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from celery import signals

from service.broker import BLAS_THREAD_VARIABLES, limit_blas_threads

# in a fresh interpreter: BLAS at two threads first (as on a machine with two or more CPUs),
# then what a worker does at start, then the threads BLAS reports
_PROBE = """
import json
import numpy
from threadpoolctl import threadpool_info, threadpool_limits
threadpool_limits(limits=2, user_api="blas")
from service.broker import limit_blas_threads
applied = limit_blas_threads()
print(json.dumps({"applied": applied, "threads": [i["num_threads"] for i in threadpool_info()
                                                   if i["user_api"] == "blas"]}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_worker_process_runs_blas_on_one_thread():
    probe = _probe()
    assert probe == {"applied": 1, "threads": [1]}


def test_blas_threads_set_in_the_environment_are_left_alone():
    # threadpool_limits(2) in the probe stands for what OPENBLAS_NUM_THREADS=2 sets at load
    probe = _probe(OPENBLAS_NUM_THREADS="2")
    assert probe == {"applied": None, "threads": [2]}


def test_the_limit_runs_in_the_worker_and_in_each_pool_process():
    for signal in (signals.worker_init, signals.worker_process_init):
        assert any(receiver() is limit_blas_threads
                   for _, receiver in signal.receivers), signal
