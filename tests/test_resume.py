"""Nothing lost: a SIGKILLed trial and a SIGKILLed driver both finish with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from t2s_ray.checkpoint import CheckpointDamaged, list_checkpoints, read_checkpoint
from t2s_ray.sweep import run_sweep
from t2s_ray.t2s.sweep import BundledSweepSpec
from tests.faults import ENV as FAULTS
from tests.faults import fault_env
from tests.helpers import (
    descendants,
    once_per_run,
    one_trial_sweep,
    run_process_tree,
    s3_client,
    shared_tmp,
    tiny_overrides,
    wait_for,
    wait_for_trials_to_end,
)

pytestmark = pytest.mark.slow

REPO_PATH = str(Path(__file__).parents[1])

# Long enough (40 steps) that a kill lands between the first checkpoint and the end.
OVERRIDES = tiny_overrides(
    "data.height=32",
    "data.width=32",
    "data.train_clips=32",
    "training.batch_size=4",
    "training.steps=40",
    "training.report_every=5",
    "training.checkpoint_every=5",
    "training.keep_checkpoints=3",
    "eval.back_translator=none",  # checkpoints and weights are the subject: no back-translation metrics
)


def _spec(root: Path, name: str, sets: tuple[str, ...], **kw) -> BundledSweepSpec:
    return BundledSweepSpec(
        ablations=("baseline",),
        scale="smoke",
        gpus=0,
        cpus_per_trial=0.5,
        storage=root,
        name=name,
        quiet=True,
        overrides=sets,
        **kw,
    )


def _trial_dir(exp: Path, ablation="baseline") -> Path:
    found = sorted(exp.glob(f"{ablation}_seed0_*"))
    assert found, f"no {ablation} trial in {exp}"
    return found[-1]


def _rows(trial: Path) -> list[dict]:
    text = (trial / "result.json").read_text() if (trial / "result.json").exists() else ""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return rows


def _valid_steps(trial: Path) -> list[int]:
    """The steps of the trial's checkpoints that load (one being copied at a kill does not)."""
    steps = []
    for c in list_checkpoints(trial):
        try:
            steps.append(read_checkpoint(c)[0]["progress"]["step"])
        except CheckpointDamaged:
            pass
    return steps


def _final_weights(trial: Path) -> dict:
    state, _ = read_checkpoint(list_checkpoints(trial)[-1])
    assert state["progress"]["step"] == 40
    return state["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def sets(data_cache) -> tuple[str, ...]:
    """OVERRIDES with the session's data cache."""
    return (*OVERRIDES, f"data.cache_dir={data_cache}")


@pytest.fixture(scope="module")
def reference(fake_gpu_ray, tmp_path_factory, sets):
    """An uninterrupted run of the same (ablation, seed): (the folder the tests' own experiments go in, its final
    weights, its final loss). Run once per test run (the pytest-xdist workers share it)."""

    def build(root: Path) -> dict:
        outcome = run_sweep(_spec(root, "reference", sets))
        assert outcome.num_finished == 1
        return {"final_loss": _rows(_trial_dir(outcome.experiment_dir))[-1]["final_loss"]}

    root = shared_tmp(tmp_path_factory, "resume")
    loss = once_per_run(root, build)["final_loss"]
    return root, _final_weights(_trial_dir(root / "reference")), loss


def test_sigkilled_trial_is_retried_from_its_checkpoint_and_matches(reference, sets):
    root, ref_weights, ref_loss = reference
    exp = root / "killed"
    killed = {}

    def kill_first_attempt():
        def checkpointed_pid():
            trials = list(exp.glob("baseline_seed0_*"))
            if not trials or not list(trials[0].glob("checkpoint_*/meta.json")):
                return None
            rows = _rows(trials[0])
            return rows[-1]["node/pid"] if rows else None

        pid = wait_for(checkpointed_pid, 120, "the trial's first checkpoint")
        killed["step"] = max(r["step"] for r in _rows(_trial_dir(exp)))
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    killer = threading.Thread(target=kill_first_attempt, daemon=True)
    killer.start()
    outcome = run_sweep(_spec(root, "killed", sets, max_failures=2))
    killer.join(5)
    assert "pid" in killed, "the trial finished before it could be killed"
    assert killed["step"] < 40
    assert (outcome.num_finished, outcome.num_errors) == (1, 0)
    trial = _trial_dir(outcome.experiment_dir)
    rows = _rows(trial)
    restarts = [r for r in rows if r.get("iterations_since_restore") == 1]
    assert len(restarts) == 2, "expected one start and one retry"
    assert restarts[1]["step"] > 5, "the retry started over instead of resuming from its checkpoint"
    assert restarts[1]["node/pid"] != killed["pid"]
    _assert_same_weights(_final_weights(trial), ref_weights)
    assert rows[-1]["final_loss"] == ref_loss


def _kill(pids: set[int]) -> None:
    """SIGKILL the processes this test started (a driver's Ray processes), those still alive."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "t2s_ray.cli", *args]


def test_sigkilled_driver_then_resume_finishes_without_losing_progress(reference, sets):
    root, ref_weights, ref_loss = reference
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    driver = subprocess.Popen(
        one_trial_sweep(root, "driver", sets),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    exp = root / "driver"
    try:
        wait_for(
            lambda: list(exp.glob("baseline_seed0_*/checkpoint_*/meta.json")) and _rows(_trial_dir(exp)),
            180,
            "a checkpoint and its report",
        )
        started = descendants(driver.pid)
        step_at_kill = max(r["step"] for r in _rows(_trial_dir(exp)))
        driver.kill()
        driver.wait(10)
    finally:
        _kill(descendants(driver.pid) | locals().get("started", set()))
    assert step_at_kill < 40, "the sweep finished before the driver could be killed"
    checkpointed = max(_valid_steps(_trial_dir(exp)))
    r = run_process_tree(_cli("resume", str(exp), "--quiet", "--no-dashboard"), 300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 finished, 0 errored" in r.stdout and "Ray dashboard" not in r.stdout  # --no-dashboard
    trial = _trial_dir(exp)
    rows = _rows(trial)
    restarts = [row for row in rows if row.get("iterations_since_restore") == 1]
    assert len(restarts) >= 2
    assert restarts[-1]["step"] > checkpointed, "resumed from an older checkpoint than the newest on disk"
    _assert_same_weights(_final_weights(trial), ref_weights)
    assert rows[-1]["final_loss"] == ref_loss


FAKE_GPU_DRIVER = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from tests.drivers import joined_runtime_env
ray.init(address=sys.argv[1], log_to_driver=False, runtime_env=joined_runtime_env())  # the test's Ray: 3 fake GPUs
from pathlib import Path
from t2s_ray.sweep import resume_sweep, run_sweep
from t2s_ray.t2s.sweep import BundledSweepSpec
root, what = Path(sys.argv[2]), sys.argv[3]
overrides = tuple(sys.argv[4:])
if what == "sweep":
    run_sweep(BundledSweepSpec(ablations=("baseline",), seeds=2, scale="smoke", gpus=3, gpus_per_trial=1,
                               cpus_per_trial=0.5, max_concurrent=1, storage=root, name="gpus", quiet=True,
                               overrides=overrides))
else:
    o = resume_sweep(root / "gpus", quiet=True)
    print(f"resumed: {o.num_finished} finished, {o.num_errors} errored")
"""


def test_resume_gives_trials_started_after_it_the_sweeps_gpus(tmp_path, sets, ray_address):
    """Two GPU trials, one at a time; the driver is killed while the second is pending. After `resume` the
    second trial, created by Ray only then, must hold a (fake) GPU like the first, not train on CPU.

    A started trial is told by its folder in storage, which the trial itself creates: the driver writes
    `params.json` and `result.json` into its own staging folder and Ray syncs them into storage with the
    experiment state (every ~10 s), so at the kill the trial's checkpoint can be in storage while neither file
    is. After the resume every trial, that one included, must hold its final result. Both drivers join the test's
    own Ray (`ray_address`), whose 3 fake GPUs the trials share."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": REPO_PATH}
    driver = subprocess.Popen(
        [sys.executable, "-c", FAKE_GPU_DRIVER, ray_address, str(tmp_path), "sweep", *sets],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    exp = tmp_path / "gpus"
    try:
        wait_for(lambda: list(exp.glob("baseline_seed*_*/checkpoint_*/meta.json")), 180, "the first trial's checkpoint")
        started = descendants(driver.pid)
        driver.kill()
        driver.wait(10)
    finally:
        _kill(descendants(driver.pid) | locals().get("started", set()))
    wait_for_trials_to_end()
    assert json.loads((exp / "t2s_sweep.json").read_text())["resources"] == {"cpu": 0.5, "gpu": 1}
    before = {p.name for p in exp.glob("baseline_seed*_*") if p.is_dir()}
    assert len(before) == 1, f"expected only the first trial to have started before the kill: {before}"
    r = run_process_tree([sys.executable, "-c", FAKE_GPU_DRIVER, ray_address, str(tmp_path), "resume"], 400, env=env)
    assert r.returncode == 0 and "resumed: 2 finished, 0 errored" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    late = [p for p in exp.glob("baseline_seed*_*") if p.is_dir() and p.name not in before]
    assert len(late) == 1
    for trial in [exp / name for name in before] + late:  # killed before its first result or not: all there
        assert _rows(trial) and _rows(trial)[-1]["final"] == 1, f"{trial} has no final result"
    final = _rows(late[0])[-1]
    assert final["node/gpu_ids"] != "", final["node/gpu_ids"]  # it held a GPU


def test_ctrl_c_says_what_is_unfinished_exits_130_and_resume_matches(reference, sets, ray_address):
    """SIGINT (Ctrl+C) to a sweep after the first checkpoint: Tune stops and returns normally, and the CLI
    still tells the truth: the trial is counted as interrupted, the resume command is ours, the exit code 130;
    then `t2s-ray resume --address` (on the test's own Ray) finishes it with the uninterrupted run's weights."""
    root, ref_weights, ref_loss = reference
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    driver = subprocess.Popen(
        one_trial_sweep(root, "ctrlc", sets),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    exp = root / "ctrlc"
    try:
        wait_for(lambda: list(exp.glob("baseline_seed0_*/checkpoint_*/meta.json")), 180, "the first checkpoint")
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        _kill(descendants(driver.pid))
    said = " ".join((out + err).split())
    assert driver.returncode == 130, said[-3000:]
    assert "trials: 0 finished, 0 errored, 1 interrupted or not started (of 1)" in said, said[-3000:]
    assert f"continue with: t2s-ray resume {exp}" in said
    wait_for_trials_to_end()
    r = run_process_tree(_cli("resume", str(exp), "--quiet", "--address", ray_address), 300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 finished, 0 errored, 0 interrupted" in " ".join(r.stdout.split())
    assert "Ray dashboard" not in said  # --no-dashboard
    trial = _trial_dir(exp)
    _assert_same_weights(_final_weights(trial), ref_weights)
    assert _rows(trial)[-1]["final_loss"] == ref_loss


# --- a kill while a checkpoint is being copied into storage ------------------------------------------------

FAULT_DRIVER = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from tests.drivers import joined_runtime_env
address, storage, names = sys.argv[1:4]  # address: "local" (a Ray of its own) or the test's Ray to join
local = dict(num_cpus=2, num_gpus=0, include_dashboard=False) if address == "local" else {}
ray.init(address=address, log_to_driver=False, **local,
         runtime_env=joined_runtime_env(worker_process_setup_hook="tests.faults.cut_checkpoint_copy"))
from t2s_ray.sweep import run_sweep
from t2s_ray.t2s.sweep import BundledSweepSpec
for name in names.split(","):  # one sweep after the other on this Ray
    o = run_sweep(BundledSweepSpec(ablations=("baseline",), scale="smoke", gpus=0, cpus_per_trial=0.5,
                                   storage=storage, name=name, quiet=True, max_failures=2,
                                   overrides=tuple(sys.argv[4:])))
    print(f"{name} swept: {o.num_finished} finished, {o.num_errors} errored")
print(f"driver imported torch: {'torch' in sys.modules}")
"""


def _fault_env(*cuts: dict, extra: dict | None = None) -> dict:
    return {
        **os.environ,
        **(extra or {}),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": os.pathsep.join([REPO_PATH, os.environ.get("PYTHONPATH", "")]),
        **fault_env(*cuts),
    }


def _trial_in_storage(storage: str, name: str) -> tuple:
    """(filesystem, the baseline trial's path, names in it) in local or S3 storage."""
    import pyarrow.fs

    fs, exp = pyarrow.fs.FileSystem.from_uri(f"{storage}/{name}")
    (trial,) = [
        i.path
        for i in fs.get_file_info(pyarrow.fs.FileSelector(exp))
        if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("baseline_seed0_")
    ]
    return fs, trial, sorted(i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(trial)))


def _weights_in_storage(fs, trial: str, tmp: Path) -> dict:
    import pyarrow.fs

    local = tmp / "final"
    local.parent.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(trial, str(local), source_filesystem=fs)
    return _final_weights(local)


CUTS = {
    "local": ((0, 0.5), (2, 0.05)),  # the only checkpoint, cut mid-way through state.pt; a later one, cut early
    "s3": ((0, 0.97), (2, 0.5)),  # object storage: every object of the first checkpoint but the tail; a later one
}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_trials_killed_while_their_checkpoint_is_copied_finish_with_the_uninterrupted_weights(
    reference, sets, request, tmp_path, monkeypatch, where, ray_address
):
    """The trial's process dies part-way through Ray's copy of checkpoint `index` into storage, for each cut of
    `CUTS[where]` (one sweep each, one after the other in one driver, on the test's own Ray). The retry sets the
    cut copy aside (never loads it, never deletes it), resumes from the checkpoint before it, or starts over when
    there is none, and ends with the weights and the loss of an uninterrupted run."""
    _, ref_weights, ref_loss = reference
    extra, storage = {}, str(tmp_path / "store")
    if where == "s3":
        extra = request.getfixturevalue("s3")
        for key, value in extra.items():  # pyarrow in this process reads the bucket too
            monkeypatch.setenv(key, value)
        s3_client(extra).create_bucket(Bucket="faults")
        storage = "s3://faults/sweeps"
    cuts = {f"cut{index}": (index, fraction) for index, fraction in CUTS[where]}
    r = run_process_tree(
        [sys.executable, "-c", FAULT_DRIVER, ray_address, storage, ",".join(cuts), *sets],
        600,
        env=_fault_env(
            *(
                {"index": index, "fraction": fraction, "marker": str(tmp_path / f"{name}.marker"), "only": f"/{name}/"}
                for name, (index, fraction) in cuts.items()
            ),
            extra=extra,
        ),
    )
    # the data and the gloss evaluator are cached (by `reference`): a CPU sweep's driver has no use for torch
    assert "driver imported torch: False" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    for name, (index, _) in cuts.items():
        assert (tmp_path / f"{name}.marker").exists(), f"{name}: the copy was never cut: " + r.stderr[-3000:]
        assert r.returncode == 0 and f"{name} swept: 1 finished, 0 errored" in r.stdout, r.stdout[-3000:]
        fs, trial, names = _trial_in_storage(storage, name)
        assert f"checkpoint_{index:06d}.corrupt" in names, (name, names)
        with fs.open_input_stream(f"{trial}/result.json") as f:
            rows = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
        restarts = [row for row in rows if row.get("iterations_since_restore") == 1]
        # the retry's first row is there; the first attempt's may be too (its step-1 report comes before any
        # checkpoint; on a loaded machine the driver's copy in storage may lack it), and nothing restarted a
        # third time
        assert 1 <= len(restarts) <= 2, (name, [r["step"] for r in restarts])
        # checkpoints land every 5 steps: the retry resumes after the last whole one (step 5 * index) and reports
        # 5 steps later, or starts over at step 0 and reports after step 1
        assert restarts[-1]["step"] == (5 * index + 5 if index else 1), (name, restarts[-1]["step"])
        _assert_same_weights(_weights_in_storage(fs, trial, tmp_path / name), ref_weights)
        assert rows[-1]["final_loss"] == ref_loss, name


def test_the_whole_sweep_killed_during_its_first_checkpoint_copy_resumes_to_the_uninterrupted_weights(
    reference, sets, tmp_path
):
    """The issue's case: everything SIGKILLed (driver and workers, as a lost machine) while the trial's only
    checkpoint is half copied. `t2s-ray resume` finishes with exit 0 and the uninterrupted run's weights."""
    _, ref_weights, ref_loss = reference
    env = _fault_env({"index": 0, "fraction": 0.5, "marker": str(tmp_path / "cut.marker"), "then": "hold"})
    driver = subprocess.Popen(
        [sys.executable, "-c", FAULT_DRIVER, "local", str(tmp_path), "lost", *sets],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (tmp_path / "cut.marker").exists(), 240, "the first checkpoint's copy to be cut")
        started = descendants(driver.pid)
        os.killpg(driver.pid, signal.SIGKILL)
        _kill(started)
        driver.wait(10)
    finally:
        _kill(descendants(driver.pid) | locals().get("started", set()))
    exp = tmp_path / "lost"
    trial = _trial_dir(exp)
    assert (trial / "checkpoint_000000" / "state.pt").exists() and not list_checkpoints(trial)  # cut, uncommitted
    resume_env = {k: v for k, v in env.items() if k != FAULTS}
    r = run_process_tree(_cli("resume", str(exp), "--quiet", "--no-dashboard"), 300, env=resume_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 finished, 0 errored" in r.stdout
    assert (trial / "checkpoint_000000.corrupt" / "state.pt").exists()  # set aside, not deleted
    _assert_same_weights(_final_weights(trial), ref_weights)
    assert _rows(trial)[-1]["final_loss"] == ref_loss
