"""The Ray dashboard of a running sweep: on loopback, token-protected, listing the live trial actors."""

import json
import os
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import descendants, one_trial_sweep, tiny_overrides, wait_for

pytestmark = pytest.mark.slow

OVERRIDES = tiny_overrides(
    "data.height=32",
    "data.width=32",
    "data.train_clips=32",
    "training.batch_size=4",
    "training.steps=400",  # alive through the checks, however slow the machine: stopped by Ctrl+C after them
    "training.report_every=20",
    "training.checkpoint_every=200",
    "eval.back_translator=none",  # the monitoring is the subject: no back-translation metrics
    drop=("training.warmup_steps",),
)


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""  # not listening yet


def test_dashboard_during_a_sweep_is_local_and_needs_the_token(tmp_path, data_cache):
    cmd = one_trial_sweep(tmp_path, "dash", (*OVERRIDES, f"data.cache_dir={data_cache}"), dashboard=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:

        def dashboard_url():
            return next((m.group(1) for line in lines if (m := re.search(r"Ray dashboard: (http://\S+)", line))), None)

        url = wait_for(dashboard_url, 120, "the URL", interval_s=0.2)
        assert url.startswith("http://127.0.0.1:")
        token_line = next(
            line for line in lines[lines.index(next(x for x in lines if url in x)) :] if "token auth" in line
        )
        token_file = Path(re.search(r"the token is in (\S+);", token_line).group(1))
        token = token_file.read_text().strip()
        wait_for(lambda: _get(url + "/api/gcs_healthz")[0] == 200, 60, "the dashboard", interval_s=0.2)
        status, body = _get(url + "/api/version", token)
        assert status == 200 and json.loads(body)["ray_version"]
        assert _get(url + "/api/version")[0] == 401
        assert _get(url + "/api/v0/actors")[0] == 401

        def trial_actors():
            status, body = _get(url + "/api/v0/actors", token)
            actors = json.loads(body)["data"]["result"]["result"] if status == 200 else []
            return [a for a in actors if a["class_name"].endswith("ImplicitFunc") and a["state"] == "ALIVE"]

        try:
            assert wait_for(trial_actors, 60, "a live trial actor", interval_s=0.2)
        except AssertionError:
            print(_get(url + "/api/v0/actors", token)[1][:3000])
            print("".join(lines[-40:]))
            raise
        # the checks are done: Ctrl+C instead of waiting for the 400 steps (a sweep so stopped still summarises)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(300) == 130, "".join(lines[-30:])
        reader.join(10)
        assert any("tensorboard --logdir" in line for line in lines), "".join(lines[-30:])
    finally:
        for pid in descendants(proc.pid) | {proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
