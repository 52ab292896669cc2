"""The search on a cluster started with the real `ray start` CLI, and a worker node killed mid-search.

    python -m pytest tests/tune/test_real_cluster.py      # ~30 s on 2 cores

Two nodes on this machine, each `ray start --block` in its own process group with its own --temp-dir; they share
the host's IP, and a driver on a host with several nodes attaches to the head. The search runs with --address and a
--storage-path both nodes see. Killing the worker's process group takes its raylet and
every trial on it down at once, like a machine that disappears; Tune retries those trials on the head from their
last checkpoint (--max-failures). Only the processes these tests start are stopped (never a global `ray stop`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.tune.conftest import SEARCH_CMD, read_results, search_env, trials_csv, write_space
from tune._table import load_trials

# Node deaths are noticed within ~3 s instead of Ray's default ~30 s (its GCS health check).
FAST_HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                     "RAY_health_check_timeout_ms": "1000"}

NODES_SCRIPT = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.time() + 60
while time.time() < deadline:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) == int(sys.argv[2]):
        break
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: n["ObjectStoreSocketName"] for n in alive}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(temp_dir: Path, head_port: int, head: bool) -> subprocess.Popen:
    """`ray start ... --block` in a new session, so that one killpg stops it and everything it started.

    Fixed default ports (the dashboard agent's 52365) are replaced by free ones: other Ray clusters may run here."""
    args = ["ray", "start", "--block", "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", str(temp_dir),
            "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port())]
    if head:
        args += ["--head", "--port", str(head_port), "--include-dashboard", "false"]
    else:
        args += ["--address", f"127.0.0.1:{head_port}"]
    log = open(temp_dir / "ray_start.log", "w")
    return subprocess.Popen(args, cwd=ROOT, env=search_env(**FAST_HEALTH_CHECK), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen, temp_dir: Path) -> None:
    """SIGKILL the node's process group, then any process still naming its temp dir (e.g. one that set its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    for pid in _pids_mentioning(str(temp_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return [p for p in pids if p != os.getpid()]


def alive_nodes(address: str, count: int) -> dict[str, str]:
    """Node id -> object store socket (which lies under that node's --temp-dir), once `count` nodes are alive."""
    proc = subprocess.run([sys.executable, "-c", NODES_SCRIPT, address, str(count)], cwd=ROOT, env=search_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def real_cluster():
    """A head and a worker node started with `ray start`; yields (address, head dir, worker dir, worker process)."""
    head_dir, worker_dir = (Path(tempfile.mkdtemp(prefix=p, dir="/tmp")) for p in ("rh", "rw"))
    port = free_port()
    head = start_node(head_dir, port, head=True)
    nodes = {}
    try:
        address = f"127.0.0.1:{port}"
        alive_nodes(address, 1)
        worker = start_node(worker_dir, port, head=False)
        nodes = {"head": (head, head_dir), "worker": (worker, worker_dir)}
        yield address, head_dir, worker_dir, worker
    finally:
        for proc, temp_dir in reversed(list(nodes.values()) or [(head, head_dir)]):
            stop(proc, temp_dir)
        for temp_dir in (head_dir, worker_dir):
            assert not _pids_mentioning(str(temp_dir)), f"processes of {temp_dir} outlived the test"
            subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


@pytest.mark.slow  # ~45 s: python -m pytest tests/tune/test_real_cluster.py -m slow
def test_killing_a_worker_node_mid_search_retries_its_trials_on_the_head_from_their_checkpoints(
    real_cluster, demo_nc, tmp_path
):
    address, head_dir, worker_dir, worker = real_cluster
    nodes = alive_nodes(address, 2)
    worker_id = next(node for node, sock in nodes.items() if sock.startswith(str(worker_dir)))
    head_id = next(node for node in nodes if node != worker_id)

    # Four trials of six epochs, about a second each: two run at once, one per node.
    space = write_space(tmp_path / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [48, 64]},
                                                  "batch_size": 2})
    shared = tmp_path / "shared"  # both nodes see it: the storage path of a real cluster would be NFS or S3
    argv = ["--data", demo_nc, "--space", space, "--num-samples", 4, "--max-epochs", 6, "--grace-epochs", 6,
            "--cpus-per-trial", 1, "--storage-path", shared, "--name", "kill", "--seed", 0, "--max-failures", 2,
            "--address", address]
    search = subprocess.Popen([*SEARCH_CMD, *map(str, argv)], cwd=ROOT, env=search_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    experiment = shared / "kill"
    try:
        victim = _wait_for_a_checkpointed_trial_on(worker_id, experiment, deadline=time.time() + 180)
        stop(worker, worker_dir)  # the worker machine disappears
        out, _ = search.communicate(timeout=400)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    assert search.returncode == 0, out[-4000:]

    table = trials_csv(experiment)
    assert len(table) == 4 and set(table["status"]) == {"ok"}, table
    assert set(table["epochs"]) == {6}
    trial_dir = next(Path(d) for d in load_trials(experiment)["trial_dir"] if Path(d).name == victim.name)
    results = read_results(trial_dir)
    before = [r["epoch"] for r in results if r["node_id"] == worker_id]
    after = [r["epoch"] for r in results if r["node_id"] == head_id]
    assert before and after and after[-1] == 6, results
    # Resumed from its checkpoint: the head carried on after an epoch the worker trained, not from epoch 1. (Ray may
    # restore result.json from its last sync, without the worker's last rows: the head can go on past them.)
    print(f"epochs on the worker node {before}, on the head after the kill {after}")
    assert max(before) <= after[0] <= 6 and after[0] > 1, (before, after)
    used = {r["node_id"] for d in load_trials(experiment)["trial_dir"] for r in read_results(d)}
    assert used == {worker_id, head_id}


def _wait_for_a_checkpointed_trial_on(node_id: str, experiment: Path, deadline: float) -> Path:
    """The folder of a trial that has reported (and checkpointed) an epoch on that node and is not finished."""
    while time.time() < deadline:
        for result in experiment.glob("train_trial_*/result.json") if experiment.is_dir() else []:
            rows = read_results(result.parent)
            last = rows[-1] if rows else {}
            if last.get("node_id") == node_id and 1 <= last.get("epoch", 0) < 6 and not last.get("trial_finished"):
                return result.parent
        time.sleep(0.2)
    raise AssertionError(f"no trial reported an epoch on node {node_id} in time")


@pytest.mark.slow  # ~40 s: python -m pytest tests/tune/test_real_cluster.py -m slow
def test_data_parallel_training_spans_both_nodes_and_matches_one_process(real_cluster, demo_nc, tmp_path):
    """Two gloo workers of one CPU each on two nodes of one CPU each: one worker per node, as on two machines.

    `train_convlstm.py --ddp-cpu-workers 2` with RAY_ADDRESS (what the README shows for a cluster) against the same
    config in one process: the same losses, and the checkpoints in --output-dir."""
    address, head_dir, worker_dir, _ = real_cluster
    alive_nodes(address, 2)
    common = ["train_convlstm.py", "--data", demo_nc, "--hidden-channels", 4, "--batch-size", 4,
              "--gradient-accumulation-steps", 2, "--num-epochs", 2, "--device", "cpu", "--num-workers", 0,
              "--seed", 3, "--checkpoint-every", 0]
    env = {**search_env(), "RAY_ADDRESS": address}
    two = subprocess.run([sys.executable, *map(str, common), "--output-dir", str(tmp_path / "two"),
                          "--ddp-cpu-workers", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run([sys.executable, *map(str, common), "--output-dir", str(tmp_path / "one")], cwd=ROOT,
                         env=search_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    from model import checkpoint as ckpt_io

    histories = [ckpt_io.load(tmp_path / d / "last.pt")["history"] for d in ("one", "two")]
    assert [r["epoch"] for r in histories[1]] == [1, 2]
    for a, b in zip(*histories):
        assert (b["train_loss"], b["val_loss"]) == pytest.approx((a["train_loss"], a["val_loss"]), rel=1e-4)
    assert (tmp_path / "two" / "best.pt").is_file()
    for node_dir in (head_dir, worker_dir):  # each node's own logs show a Ray Train worker
        logs = node_dir / "session_latest" / "logs"
        assert any(b"RayTrainWorker" in f.read_bytes() for f in logs.glob("worker-*.out")), node_dir
