"""`scripts/gpu-check --smoke`: the GPU check's code path on the CPU (tiny base, tiny size), and
the no-GPU peak-memory estimate checked against a real CPU training step."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from lamp_cli.bench.memory import estimate_training_memory
from lamp_cli.testing import TINY_UNET_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_writes_every_item(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_base_dir: Path):
    out = tmp_path / "check.json"
    main = runpy.run_path(str(ROOT / "scripts" / "gpu-check"))["main"]
    assert main(["--smoke", "--base", str(tiny_base_dir), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    items = report["items"]
    assert set(items) == {"video fp32", "train bf16 ckpt on", "train bf16 ckpt off", "bench unet", "memory estimates"}
    assert not [name for name, r in items.items() if "error" in r]
    assert items["video fp32"]["video_s"] > 0 and items["video fp32"]["steps"] == 2
    assert items["train bf16 ckpt on"]["gradient_checkpointing"] is True
    assert items["train bf16 ckpt off"]["mixed_precision"] == "bf16"
    unet = items["bench unet"]
    assert unet["lamp_flop_ratio"] > 1 and unet["animatediff_flop_ratio"] > 1 and unet["lamp_time_ratio"] > 0
    est = items["memory estimates"]
    # checkpointing keeps fewer activations: its estimated peak is the lower one
    assert est["train bf16 ckpt on"]["peak_bytes"] < est["train bf16 ckpt off"]["peak_bytes"]
    table = capsys.readouterr().out
    assert "bench unet" in table and str(out) in table


def test_memory_estimate_matches_a_real_cpu_step():
    # Estimated growth over weights (activations, gradients, AdamW state) vs the real process's
    # peak RSS growth in a fresh process: the estimate counts tensors only (no allocator or
    # oneDNN scratch), so it may be lower, by at most 35 %, and never more than 10 % higher.
    size = {"frames": 8, "width": 256, "height": 256}
    est = estimate_training_memory(TINY_UNET_CONFIG, **size, mixed_precision="no", gradient_checkpointing=False)
    code = (
        "import json, torch; torch.set_num_threads(1)\n"
        "from lamp_cli.bench.memory import measure_training_rss\n"
        "from lamp_cli.testing import TINY_UNET_CONFIG\n"
        f"print(json.dumps(measure_training_rss(TINY_UNET_CONFIG, **{size!r})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    real = json.loads(run.stdout.strip().splitlines()[-1])["step_growth_bytes"]
    estimated = est["peak_bytes"] - est["weights_and_inputs_bytes"]
    assert estimated > 50 * 2**20  # a size where activations dominate
    assert 0.65 * real <= estimated <= 1.10 * real, (estimated, real)
