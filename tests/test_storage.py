"""Storage as a URI: parsing and up-front checks, and a sweep into a real S3-compatible server on 127.0.0.1
(moto in server mode) that `analyze` and `resume` read back from the bucket."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from t2s_ray import storage
from t2s_ray.cli import app
from t2s_ray.storage import StorageError
from t2s_ray.t2s.sweep import BundledSweepSpec
from tests.helpers import free_port, run_process_tree, s3_client, s3_keys, tiny_overrides

runner = CliRunner()

TINY = tiny_overrides("training.steps=6", "training.checkpoint_every=3")


# --- parsing and checks (no server) ------------------------------------------------------------


def test_local_paths_and_file_uris_become_absolute_paths_and_other_uris_stay_strings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("results") == tmp_path / "results"
    assert storage.normalize(f"file://{tmp_path}/store/") == tmp_path / "store"
    assert storage.normalize("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert not storage.is_uri("results") and storage.is_uri("gs://b/p") and storage.is_uri("file:///x")
    assert BundledSweepSpec(storage=f"file://{tmp_path}/s", name="n").experiment_dir == tmp_path / "s" / "n"
    spec = BundledSweepSpec(storage="s3://bucket/prefix/", name="n")
    assert spec.storage == "s3://bucket/prefix" and spec.experiment_dir == "s3://bucket/prefix/n"
    # pyarrow's options ride in the query: names go before it
    assert storage.join("s3://b/p?scheme=http", "n", "t2s_sweep.json") == "s3://b/p/n/t2s_sweep.json?scheme=http"


def test_check_writable_leaves_nothing_behind_and_names_an_unwritable_location(tmp_path):
    (tmp_path / "store").mkdir()
    storage.check_writable(f"file://{tmp_path}/store")
    assert list((tmp_path / "store").iterdir()) == []  # the probe was deleted
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=rf"--storage file://{blocker}/sub: "):
        storage.check_writable(f"file://{blocker}/sub")
    assert blocker.read_text() == "not a folder"


def test_an_unsupported_scheme_is_one_clear_line_and_exit_2(tmp_path, monkeypatch):
    with pytest.raises(StorageError, match=r"--storage foo://x/y: the scheme foo:// is not supported"):
        storage.check_writable("foo://x/y")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["sweep", "--gpus", "0", "--storage", "foo://x/y", "--name", "n", "--no-dashboard"])
    assert r.exit_code == 2, r.output
    assert "the scheme foo:// is not supported" in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_endpoint_fails_in_seconds_naming_the_variable(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(
        StorageError,
        match=r"--storage s3://bucket/prefix: nothing answers at the S3 endpoint "
        r"http://127\.0\.0\.1:\d+ \(set by AWS_ENDPOINT_URL\)",
    ):
        storage.check_writable("s3://bucket/prefix")
    assert time.perf_counter() - t0 < storage.CONNECT_TIMEOUT_S + 1
    r = runner.invoke(app, ["analyze", "s3://bucket/prefix/exp"])
    assert r.exit_code == 2 and "nothing answers at the S3 endpoint" in r.output, r.output


def test_local_copy_skips_checkpoints_and_replaces_a_stale_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("T2S_RAY_CACHE", str(tmp_path / "cache"))
    exp = tmp_path / "bucket" / "exp"
    (exp / "trial_1" / "checkpoint_000001").mkdir(parents=True)
    (exp / "trial_1" / "checkpoint_000001" / "state.pt").write_bytes(b"weights")
    (exp / "trial_1" / "result.json").write_text("{}\n")
    (exp / "tuner.pkl").write_bytes(b"pkl")
    uri = f"file://{exp}"
    assert storage.cache_dir("s3://bkt/a/exp") == tmp_path / "cache" / "experiments" / "s3" / "bkt" / "a" / "exp"
    local = storage.local_copy(uri)
    (local / "stale.txt").write_text("deleted at the source")
    local = storage.local_copy(uri)
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert files == ["trial_1/result.json", "tuner.pkl"]
    (local / "report.html").write_text("<html/>")
    assert storage.upload([local / "report.html"], uri) == [f"{uri}/report.html"]
    assert (exp / "report.html").read_text() == "<html/>"
    with pytest.raises(StorageError, match="does not exist"):
        storage.local_copy(f"file://{tmp_path}/nothing-here")


# --- a real S3-compatible server on 127.0.0.1 ---------------------------------------------------


def _cli(args: list[str], env: dict, cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """`t2s-ray ARGS` in a fresh process (so the Ray it starts, and its workers, get `env`); what it leaves running
    is killed by pid."""
    full = {**os.environ, **env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return run_process_tree([sys.executable, "-m", "t2s_ray.cli", *args], timeout_s, env=full, cwd=cwd)


def test_a_missing_bucket_fails_up_front_with_exit_2_and_writes_nothing(s3, tmp_path, monkeypatch):
    import t2s_ray.preflight as pf

    monkeypatch.setattr(pf, "_ray", lambda: "skipped in this test")
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    buckets = s3_client(s3).list_buckets()["Buckets"]
    t0 = time.perf_counter()
    r = runner.invoke(
        app,
        [
            "sweep",
            "--gpus",
            "0",
            "--storage",
            "s3://no-such-bucket/sweeps",
            "--name",
            "n",
            "--no-dashboard",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    assert r.exit_code == 2, r.output
    assert "--storage s3://no-such-bucket/sweeps: the bucket 'no-such-bucket' does not exist; create it" in r.output
    assert time.perf_counter() - t0 < 30
    assert s3_client(s3).list_buckets()["Buckets"] == buckets and list(tmp_path.iterdir()) == []
    r = runner.invoke(app, ["check", "--storage", "s3://no-such-bucket/sweeps", "--data", "nosuchdata"])
    assert "✗ storage" in r.output and "does not exist; create it" in r.output


@pytest.mark.slow
def test_sweep_to_s3_then_analyze_and_resume_from_the_uri(s3, tmp_path, monkeypatch, data_cache):
    s3_client(s3).create_bucket(Bucket="t2s")
    work = tmp_path / "work"
    work.mkdir()
    env = {**s3, "T2S_RAY_CACHE": str(tmp_path / "cache")}  # local copies of experiments (the data: data_cache)
    sweep = [
        "sweep",
        "--gpus",
        "0",
        "--cpus-per-trial",
        "1",
        "--ablations",
        "baseline",
        "--seeds",
        "1",
        "--storage",
        "s3://t2s/sweeps",
        "--name",
        "tiny",
        "--no-dashboard",
        "--quiet",
    ]
    for item in (*TINY, f"data.cache_dir={data_cache}"):
        sweep += ["--set", item]
    r = _cli(sweep, env, work, timeout_s=420)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "uploaded" in r.stdout and "into s3://t2s/sweeps/tiny" in r.stdout, r.stdout[-2000:]

    keys = s3_keys(s3, "t2s", "sweeps/tiny/")
    names = {k.removeprefix("sweeps/tiny/") for k in keys}
    assert {"tuner.pkl", "t2s_sweep.json", "report.html", "comparison_table.csv"} <= names, sorted(names)
    trial = next(n.split("/")[0] for n in names if n.startswith("baseline_seed0_"))
    # written by the driver (result/progress/params), by the trial through Ray (checkpoints) and through
    # Ray's artifact sync from the trial's node (samples, memory CSV)
    for name in ("result.json", "progress.csv", "params.json", "samples.npz", "gpu_memory.csv"):
        assert f"{trial}/{name}" in names, (name, sorted(names))
    assert any(n.startswith(f"{trial}/checkpoint_") and n.endswith("/state.pt") for n in names)

    # analyze from the bucket alone: no local copy, no report in the bucket
    s3_client(s3).delete_object(Bucket="t2s", Key="sweeps/tiny/report.html")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    local = storage.cache_dir("s3://t2s/sweeps/tiny")
    assert local.is_relative_to(tmp_path / "cache") and (local / "report.html").is_file()  # the sweep's copy
    shutil.rmtree(local)
    monkeypatch.chdir(work)
    t0 = time.perf_counter()
    r = runner.invoke(app, ["analyze", "s3://t2s/sweeps/tiny"])
    analyze_s = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    assert f"copied s3://t2s/sweeps/tiny (without checkpoints) to {local}" in r.output
    table = pd.read_csv(local / "comparison_table.csv")
    assert list(table["ablation"]) == ["baseline"] and table.loc[0, "n_seeds"] == 1
    assert table.loc[0, "val_loss_mean"] > 0 and "eval/text_alignment_mean" in table.columns
    assert not list(local.rglob("checkpoint_*"))
    assert "sweeps/tiny/report.html" in s3_keys(s3, "t2s", "sweeps/tiny/")
    html = s3_client(s3).get_object(Bucket="t2s", Key="sweeps/tiny/report.html")["Body"].read().decode()
    assert "data:image/gif;base64," in html and "no samples in" not in html  # samples.npz came from the bucket
    assert not (work / "results").exists() and list(work.iterdir()) == []

    # resume from the URI: the bucket's experiment state and result.json say the trial finished: no Ray, no rerun
    r = _cli(["resume", "s3://t2s/sweeps/tiny", "--quiet", "--no-dashboard"], env, work, timeout_s=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    said = " ".join(r.stdout.split())
    assert "every trial of s3://t2s/sweeps/tiny has finished (1 of 1): nothing to resume, Ray not started" in said
    assert "trials: 1 finished, 0 errored, 0 interrupted or not started (of 1)" in said
    r = runner.invoke(app, ["resume", "s3://t2s/sweeps/nothing-here"])
    assert r.exit_code == 2 and "is not a t2s-ray experiment (no tuner.pkl)" in r.output, r.output
    print(f"analyze from s3: {analyze_s:.1f} s")
