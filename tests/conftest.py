"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

# Each pytest-xdist process (and what it starts: CLI runs, drivers, Ray's workers) gets its share of the cores
# for torch's threads, set before torch is imported. torch's default, a thread per core in every process, has
# two processes on two cores spin four threads against each other: two 300-step overfits at once took 65 s
# each at 2 threads and 15 s at 1 (alone: 13 s at 2 threads, 15 s at 1).
if os.environ.get("PYTEST_XDIST_WORKER"):  # (the controller process trains nothing)
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

from tests.helpers import SWEEP_RUN, once_per_run, shared_tmp  # noqa: E402  (imports torch)


@pytest.fixture(scope="session")
def text_encoder():
    """The bundled all-MiniLM-L6-v2, frozen; loaded once per session (~3 s). Do not mutate it."""
    from t2s_ray.t2s.models.text_encoder import TextEncoder

    return TextEncoder()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers) the slow tests go first, so that the long ones start early
    and the fast ones fill the gaps at the end."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not item.get_closest_marker("slow"))  # stable: file order within each part


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One `data.cache_dir` for the session: a data config's clips, gloss evaluator and caption encodings are built
    once, by the first test that needs them, and reused by every later test of the same config (the cache is
    content-keyed and written under file locks, as on a cluster). Under pytest-xdist the workers share it."""
    return shared_tmp(tmp_path_factory, "data-cache")


@pytest.fixture(scope="session")
def fake_gpu_ray():
    """A fresh local Ray (loopback only) with 3 fake GPUs, shared by the tests that need one."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(fake_gpu_ray) -> str:
    """The address of `fake_gpu_ray`, for a driver a test starts in a subprocess where starting Ray is not the
    subject: it joins this Ray in ~0.1 s instead of starting its own (~5 s and ~8 CPU-s on 2 cores). Its trials
    run in this process's Ray: after killing such a driver, `wait_for_trials_to_end` before resuming;
    `tests.drivers.joined_runtime_env` hands the driver's environment to its workers."""
    return fake_gpu_ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def finished_sweep_root(tmp_path_factory):
    """The folder of `finished_sweep`: results/, and the trackers' wandb-dir/ and mlruns/."""
    return shared_tmp(tmp_path_factory, "finished")


@pytest.fixture(scope="session")
def finished_sweep(fake_gpu_ray, finished_sweep_root, data_cache):
    """One finished sweep for every test that only reads a finished experiment (its folder, Ray's tools, the
    analysis, TensorBoard, W&B and MLflow): baseline, text_finetuned and no_ema, separate training, 1 seed, on 3
    fake GPUs, logged to W&B (offline) and MLflow (a local file store) too. Under pytest-xdist the first worker
    that needs it runs it and the others wait for it and read the same folder (each has its own Ray, which Ray's
    tools in the tests use)."""
    from t2s_ray.sweep.run import SweepOutcome

    opted_in = "MLFLOW_ALLOW_FILE_STORE" in os.environ

    def build(root: Path) -> dict:
        outcome = _run_finished_sweep(root, data_cache)
        return {**vars(outcome), "experiment_dir": str(outcome.experiment_dir)}

    body = once_per_run(finished_sweep_root, build)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # as the MLflow callback did where the sweep ran
    yield SweepOutcome(**{**body, "experiment_dir": Path(body["experiment_dir"])})
    if not opted_in:  # the MLflow callback opted in to MLflow 3's file store for the sweep; the read-backs need it too
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _run_finished_sweep(root: Path, data_cache: Path):
    from t2s_ray.sweep import run_sweep
    from t2s_ray.t2s.sweep import BundledSweepSpec

    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")  # nothing leaves the machine
        env.setenv("WANDB_SILENT", "true")
        env.setenv("WANDB_DIR", str(root / "wandb-dir"))
        env.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
        env.delenv("WANDB_PROJECT", raising=False)
        # --cpus-per-trial auto on a head with 2 CPUs and 3 GPUs: 0.66 CPU each, so the three GPU trials run at
        # once (1 CPU each would leave a GPU idle); separate training, so that three trials exist
        spec = BundledSweepSpec(
            seeds=1,
            scale="smoke",
            overrides=(*SWEEP_RUN, f"data.cache_dir={data_cache}"),
            gpus=3,
            gpus_per_trial=1,
            cpus_per_trial=None,
            storage=root / "results",
            name="fake3",
            quiet=True,
            share_training=False,
            log_to=("wandb", "mlflow"),
        )
        said = []
        outcome = run_sweep(spec, say=said.append)
    assert spec.cpus_per_trial == 0.66 and any("--cpus-per-trial auto: 0.66" in line for line in said), said
    return outcome


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto in server mode on a free loopback port; yields the environment that points pyarrow (and Ray's
    workers, which inherit it) at it. Stopped by pid."""
    import subprocess
    import sys

    from tests.helpers import accepts, free_port, wait_for

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: accepts(port), 30, f"moto on 127.0.0.1:{port} (log: {log})", interval_s=0.2)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
