"""scripts/sdxl_memory.py (the SDXL peak-memory table, measured on a GPU) runs its code on the CPU with --tiny: each
case trains in its own process through the trainer's functions and lands in the table, an option the machine cannot
run lands as its error."""
import json
import math
import subprocess
import sys
from pathlib import Path

from trainrun import env

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sdxl_memory.py"


def test_sdxl_memory_script_on_the_tiny_model(tmp_path):
    cases = ["full, AdamW", "full, 8-bit AdamW, gradient checkpointing", "LoRA r64, AdamW, gradient checkpointing"]
    r = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path), "--cases", *cases],
                       env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {x["case"]: x for x in json.loads((tmp_path / "sdxl_cpu_tiny.json").read_text())["rows"]}
    assert list(rows) == cases
    full, eight, lora = (rows[c] for c in cases)
    assert full["trainable_params"] == full["params"] > lora["trainable_params"] > 0
    for row in (full, lora):
        assert "error" not in row and len(row["losses"]) == 3 and all(math.isfinite(v) for v in row["losses"])
    assert "bitsandbytes" in eight["error"] and "losses" not in eight
    md = (tmp_path / "sdxl_cpu_tiny.md").read_text()
    assert all(f"| {c} |" in md for c in cases) and "tiny SDXL-like" in md


def test_sdxl_memory_script_refuses_what_it_cannot_measure(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--cases", "full, SGD"], env=env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "unknown case" in r.stderr
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], env=env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "no CUDA GPU" in r.stderr and not list(tmp_path.iterdir())
