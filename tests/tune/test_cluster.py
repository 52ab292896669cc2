"""The search on an existing two-node Ray cluster (--address): trials land on both nodes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.tune.conftest import SEARCH_CMD, read_results, search_env, trials_csv, write_space
from tune._table import load_trials

# Two nodes of one CPU each on this machine (loopback); prints the head's address, then holds the cluster until
# its stdin closes. Its Ray files, ray_current_cluster included, go under $RAY_TMPDIR.
CLUSTER_SCRIPT = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


@pytest.fixture
def two_node_cluster():
    temp_dir = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))
    proc = subprocess.Popen(
        [sys.executable, "-c", CLUSTER_SCRIPT], cwd=ROOT, env=search_env(RAY_TMPDIR=str(temp_dir)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        assert address, f"the cluster did not start (exit {proc.poll()})"
        yield address
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_search_with_address_runs_trials_on_both_nodes(two_node_cluster, demo_nc, tmp_path):
    # Two trials of a few seconds each (wide, small batches), launched together: each node has one CPU, so the
    # second cannot wait for the first's node.
    space = write_space(tmp_path / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [48, 64]},
                                                  "batch_size": 2})
    runs = tmp_path / "runs"
    argv = ["--data", demo_nc, "--space", space, "--num-samples", 2, "--max-epochs", 2, "--grace-epochs", 2,
            "--cpus-per-trial", 1, "--storage-path", runs, "--name", "cluster", "--seed", 0,
            "--address", two_node_cluster]
    proc = subprocess.run([*SEARCH_CMD, *map(str, argv)], cwd=ROOT, env=search_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    experiment = runs / "cluster"
    table = trials_csv(experiment)
    assert len(table) == 2 and set(table["status"]) == {"ok"}, table
    nodes = {r["node_id"] for d in load_trials(experiment)["trial_dir"] for r in read_results(d)}
    assert len(nodes) == 2, nodes
