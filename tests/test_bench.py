"""`seppo bench --quick`: every line of the tiny model runs in its own process and the table shows every goal."""
import json
import subprocess

from trainrun import SEPPO, env


def test_bench_quick_runs_every_line(tmp_path):
    r = subprocess.run([SEPPO, "bench", "--models", "tiny", "--quick", "--out", str(tmp_path)], env=env(
        SEPPO_BENCH_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    from seppo.experiments.bench import bench_lines
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


FAKE_PEER = '''
import argparse, torch, torchvision.transforms as T
p = argparse.ArgumentParser(); p.add_argument("--max_train_steps", type=int)
args, _ = p.parse_known_args()
assert T.ToTensor()(__import__("PIL.Image").Image.new("RGB", (4, 4))).shape == (3, 4, 4)  # the stand-in, if needed
w = torch.nn.Parameter(torch.ones(2)); opt = torch.optim.AdamW([w])
for _ in range(args.max_train_steps):
    w.sum().backward(); opt.step(); opt.zero_grad()
'''


def test_bench_peer_times_the_script_and_seppo_alike(tmp_path):
    """`seppo bench --peer`: a stand-in for diffusers' script runs for the comparison's --max_train_steps, its optimizer
    steps are timed by the same hook as seppo's two lines, and the table carries goal 4's ratios."""
    script = tmp_path / "train_diffusion_dpo.py"
    script.write_text(FAKE_PEER)
    r = subprocess.run([SEPPO, "bench", "--peer", str(script), "--quick", "--out", str(tmp_path / "out")], env=env(
        SEPPO_BENCH_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    data = json.loads((tmp_path / "out" / "peer-quick.json").read_text())
    rows = {row["line"]: row for row in data["rows"]}
    assert list(rows) == ["diffusers dpo", "seppo dpo", "seppo dpo precomputed"]
    assert all(row["updates"] == 5 and row["s_update"] > 0 for row in rows.values())   # 8 steps: 7 intervals, 2 dropped
    assert "forward_backward" not in rows["diffusers dpo"] and rows["seppo dpo"]["forward_backward"] > 0
    assert rows["seppo dpo precomputed"]["data"] < rows["seppo dpo"]["data"]           # the VAE encode is cached
    text = (tmp_path / "out" / "peer-quick.md").read_text()
    assert "| 4 DPO vs diffusers' script | seppo dpo |" in text and text in r.stdout
    bad = subprocess.run([SEPPO, "bench", "--peer", str(tmp_path / "missing.py"), "--quick"], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "missing.py is not a file" in bad.stderr
