"""A sweep joining a real two-node Ray cluster (both nodes on loopback), and where trials find their data there."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from t2s_ray.data import DataNotVisible, check_layout, check_visible
from t2s_ray.sweep import SweepError
from t2s_ray.t2s.config import DataConfig
from t2s_ray.t2s.sweep import prepare_cluster_data
from tests.helpers import descendants, set_args, tiny_overrides, wait_for

BIN = Path(sys.executable).parent
# where trials run is the subject: no back-translation metrics
TINY = tiny_overrides(
    "training.warmup_steps=1", "training.checkpoint_every=2", "eval.evaluator_clips=32", "eval.back_translator=none"
)

RAY_START_ON_LOOPBACK = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as scripts
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps a node's servers and address on 127.0.0.1, and makes `ray start --address`
# refuse to add a node; lift only that refusal (the CLI module's view of the flag), not the loopback addresses
view = types.ModuleType(constants.__name__)
view.__dict__.update(vars(constants))
view.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = view
sys.argv[0] = "ray"
sys.exit(scripts.main())
"""
"""`ray start ...` for a second node on this machine, on loopback like the head."""

WAIT_FOR_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
end = time.monotonic() + float(sys.argv[2])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= int(sys.argv[3]) or time.monotonic() > end:
        break
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: n["Resources"] for n in alive}))
"""


# --- the data a trial's node must see (fast) ----------------------------------------------------


def test_a_node_without_the_given_cache_dir_fails_naming_node_path_and_fix(tmp_path):
    missing = tmp_path / "shared" / "t2s-cache"
    cfg = DataConfig(cache_dir=str(missing))
    with pytest.raises(DataNotVisible) as e:
        check_visible(cfg, where="Ray node 4f2a (worker-7)")
    msg = str(e.value)
    assert msg.startswith(f"Ray node 4f2a (worker-7) cannot see {missing} (data.cache_dir)"), msg
    assert "--set data.cache_dir=/shared/" in msg and "every node mounts" in msg
    missing.mkdir(parents=True)
    check_visible(cfg, where="Ray node 4f2a (worker-7)")  # there now: no error


def test_a_node_without_the_dataset_fails_naming_it(tmp_path):
    cfg = DataConfig(spec=f"how2sign:{tmp_path / 'how2sign'}")
    with pytest.raises(
        DataNotVisible,
        match=rf"^Ray node 9c \(gpu-3\) cannot see {tmp_path / 'how2sign'} \(the "
        rf"dataset of data.spec=how2sign:.*every node mounts",
    ):
        check_visible(cfg, where="Ray node 9c (gpu-3)")
    check_visible(DataConfig(), where="Ray node 9c (gpu-3)")  # synthsign, default cache: nothing to see


def test_the_driver_checks_a_dataset_it_can_see_and_notes_one_it_cannot(tmp_path):
    absent = DataConfig(spec=f"how2sign:{tmp_path / 'elsewhere'}")
    assert check_layout(absent) is False
    (tmp_path / "h2s").mkdir()
    with pytest.raises(ValueError, match="no how2sign_realigned_train.csv"):
        check_layout(DataConfig(spec=f"how2sign:{tmp_path / 'h2s'}"))
    said: list[str] = []
    prepare_cluster_data([_Cfg(absent)], said.append)
    assert said[0] == f"data: {tmp_path / 'elsewhere'} is not on this machine; each trial looks for it on its node"
    assert "each node builds or reuses its own cache" in said[1] and "data.cache_dir" in said[1]
    with pytest.raises(SweepError, match="no how2sign_realigned_train.csv"):
        prepare_cluster_data([_Cfg(DataConfig(spec=f"how2sign:{tmp_path / 'h2s'}"))], said.append)


def test_the_driver_creates_a_given_cache_dir_for_the_nodes(tmp_path):
    said: list[str] = []
    shared = tmp_path / "shared" / "cache"
    prepare_cluster_data([_Cfg(DataConfig(cache_dir=str(shared)))] * 2, said.append)
    assert shared.is_dir()
    assert said == [
        f"data: trials build or reuse the cache in {shared} (data.cache_dir) once; every node must see that folder"
    ]


@dataclass(frozen=True)
class _Cfg:
    data: DataConfig


# --- two nodes on loopback (slow) ---------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_args(temp_dir: Path, cpus: int, gpus: int, resource: str) -> list[str]:
    """`ray start` options for one node: its own temp dir, resources, and free loopback ports for its servers."""
    agent, grpc, runtime_env, metrics, manager, objects = _free_ports(6)
    return [
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        str(cpus),
        "--num-gpus",
        str(gpus),
        "--resources",
        json.dumps({resource: 1}),
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
        "--object-store-memory",
        str(100 * 2**20),
        "--dashboard-agent-listen-port",
        str(agent),
        "--dashboard-agent-grpc-port",
        str(grpc),
        "--runtime-env-agent-port",
        str(runtime_env),
        "--metrics-export-port",
        str(metrics),
        "--node-manager-port",
        str(manager),
        "--object-manager-port",
        str(objects),
        "--min-worker-port",
        "0",
        "--max-worker-port",
        "0",
    ]


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop what the test started, by pid: each `ray start` process group and every process below it, SIGKILLed
    at once (a throwaway cluster: a SIGTERM'd `ray start` leaves gcs_server alive ~20 s, which was killed anyway)."""
    below = set().union(*(descendants(p.pid) for p in procs))
    for p in reversed(procs):  # worker first, then head
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in below:  # those that left the group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(timeout=10)


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    nodes: dict[str, dict]
    """Node id -> its resources."""
    caches: dict[str, Path]
    """"head"/"worker" -> the cache folder ($T2S_RAY_CACHE) of that node."""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head with 2 (fake) GPUs and a worker with 1, on 127.0.0.1, with token auth from the environment only."""
    root = tmp_path_factory.mktemp("cluster")
    token = secrets.token_hex(16)
    (root / "auth_token").write_text(token)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "T2S_RAY_CACHE")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_AUTH_TOKEN_PATH=str(root / "auth_token"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    caches = {"head": root / "cache-head", "worker": root / "cache-worker"}
    # Ray's sockets live under --temp-dir and a Unix socket path has at most 107 bytes: pytest's are too long
    ray_tmp = Path(tempfile.mkdtemp(prefix="t2s-", dir="/tmp"))
    procs: list[subprocess.Popen] = []
    try:
        address = ""

        def head() -> list[str]:
            nonlocal address
            port, client_port = _free_ports(2)
            address = f"127.0.0.1:{port}"
            return [
                str(BIN / "ray"),
                "start",
                "--head",
                "--port",
                str(port),
                "--ray-client-server-port",
                str(client_port),
                "--include-dashboard",
                "false",
                *_node_args(ray_tmp / "head", 2, 2, "head_node"),
            ]

        def worker() -> list[str]:
            return [
                sys.executable,
                "-c",
                RAY_START_ON_LOOPBACK,
                "start",
                "--address",
                address,
                *_node_args(ray_tmp / "worker", 1, 1, "worker_node"),
            ]

        for name, argv in (("head", head), ("worker", worker)):
            _start_node(argv, {**env, "T2S_RAY_CACHE": str(caches[name])}, root / f"{name}.log", procs)
        out = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, address, "180", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(nodes) == 2, f"{len(nodes)} alive node(s): {nodes}"
        yield Cluster(address, env, nodes, caches)
    finally:
        _stop(procs)
        shutil.rmtree(ray_tmp, ignore_errors=True)


class _Exited(AssertionError):
    """`ray start` exited before its node was up."""


def _start_node(argv, env: dict[str, str], log: Path, procs: list[subprocess.Popen], attempts: int = 3) -> None:
    """Run `argv()` (a blocking `ray start`) until its node is up; appends the process to `procs`.

    Ray gives a new node's raylet 30 s to register and exits past that, which a loaded 2-core machine can
    exceed: such a start is stopped and tried again, with fresh ports.
    """
    for attempt in range(1, attempts + 1):
        with open(log, "a") as out:
            proc = subprocess.Popen(argv(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        procs.append(proc)
        try:
            # the driver finds raylets on this machine with `ps`: one still registering makes ray.init() time out
            wait_for(partial(_started, proc, log), 180, f"`ray start` (log: {log})", 0.5)
            return
        except _Exited:
            _stop([proc])
            procs.remove(proc)
            if attempt == attempts:
                raise


def _started(proc: subprocess.Popen, log: Path) -> bool:
    """True once `ray start` says its node is up (it then blocks); `_Exited` with its log if it exited."""
    text = log.read_text()
    if proc.poll() is not None:
        raise _Exited(f"`ray start` exited with {proc.returncode}: {text[-2000:]}")
    return "Ray runtime started." in text  # a failed attempt before this one never printed it


@pytest.mark.slow
def test_a_sweep_joining_two_nodes_runs_its_trials_on_both(two_nodes, tmp_path):
    assert sorted(r.get("GPU") for r in two_nodes.nodes.values()) == [1.0, 2.0]
    storage = tmp_path / "shared"
    cmd = [
        str(BIN / "t2s-ray"),
        "sweep",
        "--address",
        two_nodes.address,
        "--storage",
        str(storage),
        "--name",
        "two-nodes",
        "--ablations",
        "baseline",
        "--seeds",
        "3",
        "--scale",
        "smoke",
        "--gpus-per-trial",
        "1",
        "--cpus-per-trial",
        "0.5",
        "--max-failures",
        "0",
        "--quiet",
        *set_args(TINY),
    ]
    t0 = time.monotonic()
    run = subprocess.run(cmd, env=two_nodes.env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "data: each node builds or reuses its own cache" in run.stdout, run.stdout
    exp = storage / "two-nodes"
    trials = sorted(p for p in exp.iterdir() if p.is_dir() and p.name.startswith("baseline_seed"))
    assert len(trials) == 3, trials
    node_ids = set()
    for trial in trials:
        for name in ("result.json", "progress.csv", "params.json"):
            assert (trial / name).is_file(), trial / name
        assert list(trial.glob("checkpoint_*/state.pt")), f"no checkpoint in {trial}"
        for name in ("samples.gif", "samples.npz", "gpu_memory.csv", "t2s_config.json"):  # from either node
            assert (trial / name).is_file(), trial / name
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        assert rows[-1]["final"] == 1 and rows[-1]["step"] == 4, rows[-1]
        node_ids.add(rows[-1]["node/id"])
    assert node_ids == set(two_nodes.nodes), (node_ids, set(two_nodes.nodes))  # both nodes ran trials
    assert (exp / "report.html").is_file()
    assert "(2 Ray nodes)" in (exp / "report.html").read_text()
    for name, cache in two_nodes.caches.items():  # each node built its own data cache and gloss evaluator
        assert list(cache.glob("synthsign/*/train-16.npy")), f"no SynthSign cache on the {name} node: {cache}"
        assert list(cache.glob("evaluator/*/report.json")), f"no gloss evaluator on the {name} node: {cache}"
    print(f"two-node sweep: {wall:.0f} s wall, node ids {sorted(node_ids)}")


@pytest.mark.slow
def test_a_trial_whose_node_cannot_see_the_dataset_names_node_path_and_fix(two_nodes, tmp_path):
    missing = tmp_path / "on-no-node" / "clips.csv"
    cmd = [
        str(BIN / "t2s-ray"),
        "sweep",
        "--address",
        two_nodes.address,
        "--storage",
        str(tmp_path / "shared"),
        "--name",
        "unseen",
        "--ablations",
        "baseline",
        "--seeds",
        "1",
        "--gpus-per-trial",
        "1",
        "--cpus-per-trial",
        "0.5",
        "--max-failures",
        "0",
        "--quiet",
        "--data",
        f"manifest:{missing}",
        *set_args(TINY),
    ]
    run = subprocess.run(cmd, env=two_nodes.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-4000:] + run.stderr[-4000:]
    assert f"data: {missing} is not on this machine; each trial looks for it on its node" in run.stdout, run.stdout
    (error,) = (tmp_path / "shared" / "unseen").glob("baseline_seed0_*/error.txt")
    text = error.read_text()
    node = next(n for n in two_nodes.nodes if f"Ray node {n} (" in text)  # the node it ran on, by id
    assert f"Ray node {node} ({socket.gethostname()}) cannot see {missing} (the dataset of data.spec=manifest:" in text
    assert "put it on a filesystem every node mounts" in text
