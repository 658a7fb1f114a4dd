"""The cluster manifests and docs/CLUSTERS.md: they parse, and every t2s-ray option they use exists."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml

from t2s_ray.cli import app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CLUSTERS_DOC = ROOT / "docs" / "CLUSTERS.md"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
SBATCH = DEPLOY / "slurm" / "t2s-ray.sbatch"

COMMAND = re.compile(r"\bt2s-ray(?:[ \t]+([a-z][a-z-]*)|\.sbatch)([^\n]*)")
"""`t2s-ray <command> <rest of the line>` once line continuations are joined; the sbatch script's
arguments are sweep options."""
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
COMMENT = re.compile(r"(^|\s)#.*")
SHELL_END = re.compile(r"\s(?:[;|&]|&&|\|\|)")
"""Where a shell command ends on its line."""


def cli_options() -> dict[str, set[str]]:
    """Every subcommand of the real CLI -> the option names it accepts (both forms of a flag, and --help)."""
    group = typer.main.get_command(app)
    return {
        name: {opt for p in cmd.params for opt in [*p.opts, *p.secondary_opts] if opt.startswith("--")} | {"--help"}
        for name, cmd in group.commands.items()
    }


def yaml_strings(node) -> list[str]:
    """Every string in a parsed YAML document (a folded entrypoint becomes one line here)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in yaml_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in yaml_strings(v)]
    return [node] if isinstance(node, str) else []


def commands_in(text: str) -> list[tuple[str, list[str]]]:
    """`(command, [--options])` of each t2s-ray invocation in shell-like text (comments are prose: skipped)."""
    text = COMMENT.sub(r"\1", re.sub(r"\\\n", " ", text))
    found = []
    for m in COMMAND.finditer(text):
        words = _words(SHELL_END.split(m.group(2), maxsplit=1)[0])
        found.append((m.group(1) or "sweep", [w.split("=", 1)[0] for w in words if w.startswith("--")]))
    return found


def _words(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:  # unbalanced quotes (an apostrophe in prose): whitespace finds the options
        return rest.split()


def sources() -> dict[str, str]:
    """Where t2s-ray commands are written for users: the files under deploy/ and docs/CLUSTERS.md; of a
    Markdown file its code (blocks and inline spans), of a YAML file its values."""
    out = {}
    for path in sorted([*(p for p in DEPLOY.rglob("*") if p.is_file()), CLUSTERS_DOC]):
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            text = "\n".join(yaml_strings(yaml.safe_load(text)))
        elif path.suffix == ".md":
            text = "\n".join([*FENCE.findall(text), *INLINE.findall(FENCE.sub("", text))])
        out[str(path.relative_to(ROOT))] = text
    return out


def unknown_options(text: str, options: dict[str, set[str]]) -> list[str]:
    return [
        f"t2s-ray {cmd} {opt}" if cmd in options else f"t2s-ray {cmd} (no such command)"
        for cmd, opts in commands_in(text)
        for opt in (opts if cmd in options else [""])
        if cmd not in options or opt not in options[cmd]
    ]


def test_the_option_check_catches_a_wrong_option_across_a_line_continuation():
    text = 't2s-ray sweep --address head:6379 \\\n    --storgae /shared/r --set "a=b c"  # --nope\nt2s-ray analyze x'
    assert commands_in(text) == [("sweep", ["--address", "--storgae", "--set"]), ("analyze", [])]
    assert unknown_options(text, cli_options()) == ["t2s-ray sweep --storgae"]
    assert unknown_options("t2s-ray sweeps --gpus 1", cli_options()) == ["t2s-ray sweeps (no such command)"]
    # the sbatch script passes its arguments to the sweep; an inline code span ends at its backtick
    assert commands_in("sbatch deploy/slurm/t2s-ray.sbatch --scale full --gpu 2") == [("sweep", ["--scale", "--gpu"])]
    assert commands_in("# the same t2s-ray install everywhere\nt2s-ray resume DIR  # --later") == [("resume", [])]


def test_every_t2s_ray_option_in_the_deploy_files_and_cluster_guide_exists():
    options = cli_options()
    found = {name: commands_in(text) for name, text in sources().items()}
    # the check must have something to check: the sweep as a cluster driver in each place
    for name in ("deploy/slurm/t2s-ray.sbatch", "deploy/kuberay/rayjob.yaml", "docs/CLUSTERS.md"):
        assert any(cmd == "sweep" and "--address" in opts for cmd, opts in found[name]), name
    assert {cmd for cmd, _ in found["docs/CLUSTERS.md"]} >= {"sweep", "resume", "analyze"}
    bad = {name: unknown_options(text, options) for name, text in sources().items()}
    assert not any(bad.values()), bad


def test_every_yaml_under_deploy_parses():
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert RAYJOB in paths
    for path in paths:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _mounts(group: dict) -> set[str]:
    return {m["mountPath"] for c in _containers(group) for m in c.get("volumeMounts", [])}


def test_the_rayjob_joins_its_own_gpu_cluster_and_every_pod_reaches_the_storage():
    job = yaml.safe_load(RAYJOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head, workers = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert _containers(head)
    gpus = [
        int(c["resources"]["limits"]["nvidia.com/gpu"])
        for g in workers
        for c in _containers(g)
        if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
    ]
    assert gpus and min(gpus) >= 1
    containers = [c for g in [head, *workers] for c in _containers(g)]
    assert len({c["image"] for c in containers}) == 1  # one Ray everywhere: one image
    # without --address, t2s-ray would start a separate Ray inside the head pod
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["t2s-ray", "sweep"] and words[words.index("--address") + 1] == "auto"
    storage = words[words.index("--storage") + 1]
    if "://" in storage:  # the driver and every trial need the bucket's credentials
        assert storage.startswith(("s3://", "gs://"))
        secrets = [{e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e} for c in containers]
        assert secrets[0] and all(s == secrets[0] for s in secrets), secrets
    else:  # a shared volume, mounted by every pod
        for group in [head, *workers]:
            assert any(storage.startswith(m.rstrip("/") + "/") for m in _mounts(group)), group.get("groupName")
    # where each pod keeps its data cache is a volume of that pod
    for group in [head, *workers]:
        for c in _containers(group):
            cache = {e["name"]: e.get("value") for e in c.get("env", [])}.get("T2S_RAY_CACHE")
            assert cache is None or cache in _mounts(group), (c["name"], cache)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_sbatch_script_is_valid_bash_that_starts_and_stops_its_own_ray():
    r = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = SBATCH.read_text()
    assert text.startswith("#!/bin/bash\n") and "#SBATCH --nodes=" in text
    assert "ray start --head" in text and "ray start --address" in text and text.count("--block &") == 2
    assert "trap stop_ray EXIT" in text and "ray stop" not in text  # stops only what it started
