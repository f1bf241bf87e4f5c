"""`seppo bench --quick`: every line of the tiny model runs in its own process and the table shows every goal."""
import json
import subprocess

from trainrun import SEPPO, env


def test_bench_quick_runs_every_line(tmp_path):
    r = subprocess.run([SEPPO, "bench", "--models", "tiny", "--quick", "--out", str(tmp_path)], env=env(
        SEPPO_BENCH_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    from seppo.bench import bench_lines
    data = json.loads((tmp_path / "cpu-quick.json").read_text())
    rows = {row["line"]: row for row in data["rows"]}
    assert list(rows) == [line["name"] for line in bench_lines("tiny")]
    assert rows["seppo batched"]["sampling"] > 0 and rows["dpo"]["sampling"] == 0 and rows["dpo"]["ref_forward"] > 0
    assert rows["dpo lora shared"]["ref"] == "shared" and rows["dpo lora copy"]["ref"] == "copy"
    assert rows["seppo lora shared batched"]["pool_size"] == 4          # θ0 + a snapshot after each of 3 updates
    assert 0 < rows["seppo lora shared batched"]["lora_bytes"] < rows["seppo lora shared batched"]["unet_bytes"]
    assert rows["floor"]["samples_s"] > 0 and set(rows["floor"]["per_batch"]) == {"1", "2", "4"}
    text = (tmp_path / "cpu-quick.md").read_text()
    for goal in ("1 batched sampling", "2 SePPO update", "3 memory", "3 LoRA snapshot"):
        assert f"| {goal} | tiny |" in text, goal
    assert text in r.stdout
