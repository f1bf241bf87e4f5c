"""`seppo reproduce`: the smoke profile end to end through papermill, caching by config hash, failures, dry runs."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from trainrun import fault_env
import yaml

ROOT = Path(__file__).resolve().parents[1]
SEPPO = str(Path(sys.executable).parent / "seppo")


def env(**extra):
    e = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for k in [k for k in e if k.startswith("SEPPO_")]: e.pop(k)
    e.update(extra)
    return e


def reproduce(root, *args, check=True, **extra):
    r = subprocess.run([SEPPO, "reproduce", "--root", str(root), *args], env=env(**extra), capture_output=True,
                       text=True, timeout=1200)
    if check and r.returncode != 0:
        raise AssertionError(f"reproduce {args} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def scratch_root(tmp_path):
    "A project root whose configs can be edited: configs copied, notebooks linked."
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copytree(ROOT / "configs", root / "configs")
    (root / "nbs").symlink_to(ROOT / "nbs")
    return root


def metrics_files(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in (root / "build/smoke/results/runs").rglob("metrics.json")}


def test_smoke_profile_end_to_end_then_cached_then_one_variant(tmp_path):
    root = scratch_root(tmp_path)
    r = reproduce(root, "--profile", "smoke")
    assert "20 run(s) to execute" in r.stdout, r.stdout
    res, figs = root / "build/smoke/results", root / "build/smoke/figures"
    # every table in three formats from one DataFrame, every figure in two
    variants = {"e1_main": ["base", "random_labels", "clean_renders", "sft", "dpo", "seppo"],
                "e2_reference": ["base", "initial", "latest", "random"],
                "e3_aaf": ["base", "sign", "indicator", "aaf_sft", "none"],
                "e4_on_policy": ["base", "random_labels", "sft", "dpo", "seppo"],
                "e5_video": ["base", "sft", "dpo", "seppo"]}
    for exp in variants:
        for split in ("train", "heldout"):
            stem = res / "tables" / f"{exp}_{split}"
            md, csv, tex = (stem.with_suffix(s).read_text() for s in (".md", ".csv", ".tex"))
            df = pd.read_csv(stem.with_suffix(".csv"))
            assert list(df.variant) == variants[exp]
            video = ("direction", "smoothness", "psnr", "ssim", "perceptual", "fvd") if exp == "e5_video" else ("attribute_acc",)
            for col in (f"{split}/oracle_reward", f"{split}/win_rate", f"{split}/fd", f"Δ{split}/oracle_reward",
                        *(f"{split}/{m}" for m in video)):
                assert col in df, (exp, col)
            assert "| variant" in md and "oracle reward" in md and r"\toprule" in tex
    for exp in ("e1_main", "e4_on_policy"):                                 # read against the null control and SFT^w
        df = pd.read_csv(res / "tables" / f"{exp}_train.csv").set_index("variant")
        assert pd.isna(df.loc["sft", "Δtrain/oracle_reward vs sft"])
        assert abs(df.loc["seppo", "Δtrain/oracle_reward vs sft"]
                   - (df.loc["seppo", "train/oracle_reward"] - df.loc["sft", "train/oracle_reward"])) < 1e-4  # one seed
        assert "Δ oracle reward vs random_labels" in (res / "tables" / f"{exp}_train.md").read_text()
    for name in ("e1_main_grid", "e1_main_curve", "e1_main_forest", "e2_reference_curve", "e2_reference_forest",
                 "e3_aaf_aaf", "e3_aaf_grid", "e4_on_policy_forest", "e5_video_grid", "e5_video_forest", "claims_forest"):
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.pdf").is_file(), name
    # the claims table: every claim on both splits, a computed verdict (one seed: no interval, so inconclusive)
    claims = pd.read_csv(res / "tables/claims.csv")
    assert list(claims.id.astype(str).unique()) == ["0", "a", "b1", "b2", "c", "d", "e"] and len(claims) == 14
    assert set(claims.verdict) == {"inconclusive"} and (claims.seeds == 1).all()
    e1 = pd.read_csv(res / "tables/e1_main_train.csv").set_index("variant")["train/oracle_reward"]
    row = claims[(claims.id.astype(str) == "a") & (claims.split == "train")].iloc[0]
    assert abs(row.delta - (e1["seppo"] - e1["sft"])) < 1e-4
    assert "inconclusive at this power" in (res / "tables/claims.md").read_text()
    # records: merged config, environment, metrics with the config hash; identical runs shared
    m = json.loads((res / "runs/e1_main/seppo/seed0/metrics.json").read_text())
    assert len(m["config_hash"]) == 16 and m["metrics"]["train/oracle_reward"] > 0 and m["train"]["updates"] == 4
    assert not (res / "runs/e2_reference/random").exists() and not (res / "runs/e3_aaf/sign").exists()
    # E4 is E1 under its experiment's config block: trained on the base model's own samples, so trained again
    source = lambda exp, v: yaml.safe_load((res / f"runs/{exp}/{v}/seed0/params.yaml").read_text())["world_pairs_source"]
    assert (source("e1_main", "seppo"), source("e4_on_policy", "seppo"), source("e1_main", "clean_renders")) == \
        ("contributors", "base_model", "clean")
    curve = pd.read_csv(res / "runs/e2_reference/latest/seed0/curve.csv")
    assert list(curve["update"]) == [0, 2, 4]
    before = metrics_files(root)
    assert len(before) == 20
    # E5 trains motion modules on the video world's clips and records a strip of 4 frames per grid prompt
    v = yaml.safe_load((res / "runs/e5_video/seppo/seed0/params.yaml").read_text())
    assert (v["data_source"], v["train_scope"], v["data_num_frames"]) == ("world_video", "motion", 4)
    from PIL import Image
    grid = Image.open(res / "runs/e5_video/seppo/seed0/grid.png")
    assert grid.size == (4 * 16 * len(json.loads((res / "runs/e5_video/seppo/seed0/grid.json").read_text())), 16)

    # a second reproduce runs nothing and rewrites no record; its reports write the same bytes (no dates in figures)
    outputs = lambda: {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
                       for d in (figs, res / "tables") for p in sorted(d.rglob("*")) if p.is_file()}
    written = outputs()
    r = reproduce(root, "--profile", "smoke")
    assert "0 run(s) to execute, 20 up to date" in r.stdout, r.stdout
    assert metrics_files(root) == before
    assert len(written) > 40 and outputs() == written, [k for k in written if outputs().get(k) != written[k]][:5]

    # editing one variant re-runs exactly that variant
    f = root / "configs/e3_aaf/none.yaml"
    f.write_text(f.read_text() + "train_lr: 1.0e-4\n")
    r = reproduce(root, "--profile", "smoke", "--no-reports")
    assert "1 run(s) to execute" in r.stdout and "e3_aaf/none/seed0" in r.stdout, r.stdout
    after = metrics_files(root)
    changed = [k for k in after if after[k] != before[k]]
    assert changed == [Path("build/smoke/results/runs/e3_aaf/none/seed0/metrics.json")]
    assert yaml_lr(root / "build/smoke/results/runs/e3_aaf/none/seed0/params.yaml") == 1e-4


def yaml_lr(path):
    return yaml.safe_load(Path(path).read_text())["train_lr"]


def test_a_failing_run_leaves_no_metrics_and_fails_with_the_notebooks_error(tmp_path):
    root = scratch_root(tmp_path)
    (root / "configs/ex").mkdir()
    (root / "configs/ex/experiment.yaml").write_text("variants: [sft]\nbaseline: null\n")
    (root / "configs/ex/sft.yaml").write_text("train_method: sft\n")
    prof = root / "configs/profiles/smoke.yaml"
    raw = yaml.safe_load(prof.read_text())
    raw["experiments"] = ["ex"]
    raw.pop("experiment_config"); raw.pop("skip")                       # its experiments are not run here
    prof.write_text(yaml.safe_dump(raw))
    r = reproduce(root, "--profile", "smoke", check=False, **fault_env("nan_loss@2"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED" in r.stdout and "non-finite loss at update 2" in r.stdout and "seed0.ipynb" in r.stdout, r.stdout
    assert "reports not run" in r.stdout
    assert not (root / "build/smoke/results/runs/ex/sft/seed0/metrics.json").exists()


def test_paper_profile_dry_run_plans_and_names_missing_paths(tmp_path):
    names = ["SD15", "PICKAPIC", "PICKAPIC_VAL", "PARTIPROMPTS", "HPSV2_PROMPTS", "PICKSCORE", "HPSV2", "IMAGEREWARD", "AESTHETIC"]
    paths = {f"SEPPO_{n}": str(tmp_path / n) for n in names}
    for p in paths.values(): Path(p).mkdir()
    r = reproduce(ROOT, "--profile", "paper", "--dry-run", **paths)
    assert "10 distinct runs" in r.stdout and "GPU-hours" in r.stdout, r.stdout
    assert r.stdout.count("same-as") == 4 and "53760" not in r.stdout           # 8 processes x 256 accumulation
    assert not (ROOT / "runs/paper").exists() or not any((ROOT / "runs/paper").iterdir())
    shutil.rmtree(paths["SEPPO_PICKSCORE"])
    r = reproduce(ROOT, "--profile", "paper", "--dry-run", check=False, **paths)
    assert r.returncode == 2 and "eval_scorers 'pickscore'" in r.stderr and "does not exist" in r.stderr, r.stderr
    del paths["SEPPO_SD15"]
    r = reproduce(ROOT, "--profile", "paper", "--dry-run", check=False, **paths)
    assert r.returncode == 2 and "${SEPPO_SD15} is not set" in r.stderr, r.stderr


def test_paper_sdxl_profile_dry_run_plans_and_names_missing_paths(tmp_path):
    import yaml
    names = ["SDXL", "PICKAPIC", "PICKAPIC_VAL", "PARTIPROMPTS", "HPSV2_PROMPTS", "PICKSCORE", "HPSV2", "IMAGEREWARD", "AESTHETIC"]
    paths = {f"SEPPO_{n}": str(tmp_path / n) for n in names}
    for p in paths.values(): Path(p).mkdir()
    r = reproduce(ROOT, "--profile", "paper_sdxl", "--dry-run", **paths)
    assert "10 distinct runs" in r.stdout and r.stdout.count("same-as") == 4, r.stdout
    cfg = yaml.safe_load((ROOT / "configs/profiles/paper_sdxl.yaml").read_text())["config"]
    assert (cfg["data_resolution"], cfg["train_optimizer"], cfg["train_offload"]) == (1024, "adafactor", True)
    del paths["SEPPO_SDXL"]
    r = reproduce(ROOT, "--profile", "paper_sdxl", "--dry-run", check=False, **paths)
    assert r.returncode == 2 and "${SEPPO_SDXL} is not set" in r.stderr, r.stderr


def test_mini_profile_runs_the_worlds_default_config():
    "The committed tables come from the same settings as configs/world/common.yaml (the world's documented defaults)."
    from seppo.core.config import read_yaml
    from seppo.experiments.reproduce import load_profile
    world = read_yaml(ROOT / "configs/world/common.yaml")
    mini = load_profile("mini", ROOT).config
    differ = {k: (v, mini.get(k)) for k, v in world.items() if k != "train_checkpoint_every" and mini.get(k) != v}
    assert not differ, f"configs/profiles/mini.yaml and configs/world/common.yaml disagree: {differ}"


def test_readme_tables_are_the_committed_results():
    "Every table the README quotes is a generated block equal to the committed file it names (`seppo readme`)."
    from seppo.experiments.reproduce import sync_readme
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- generated from ") >= 3, "the README quotes its tables through generated blocks"
    assert sync_readme(ROOT / "README.md", ROOT, check=True) == [], "README tables differ from results/: run `seppo readme`"


def test_paper_video_profile_dry_run_plans_and_names_missing_paths(tmp_path):
    names = ["SD15", "MOTION_ADAPTER", "CHRONOMAGIC", "CHRONOMAGIC_BENCH"]
    paths = {f"SEPPO_{n}": str(tmp_path / n) for n in names}
    for p in paths.values(): Path(p).mkdir()
    for n in ["LPIPS_ALEX", "LPIPS_LIN", "INCEPTION", "I3D"]:
        paths[f"SEPPO_{n}"] = str(tmp_path / f"{n}.pt")
        Path(paths[f"SEPPO_{n}"]).write_bytes(b"weights")
    r = reproduce(ROOT, "--profile", "paper_video", "--dry-run", **paths)
    planned = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("e5_video ")]
    assert planned == ["base", "sft", "seppo"] and "3 distinct runs" in r.stdout, r.stdout   # no losers, no clean clips
    Path(paths["SEPPO_I3D"]).unlink()
    r = reproduce(ROOT, "--profile", "paper_video", "--dry-run", check=False, **paths)
    assert r.returncode == 2 and "eval_video_metrics 'fvd'" in r.stderr and "does not exist" in r.stderr, r.stderr
    shutil.rmtree(paths["SEPPO_MOTION_ADAPTER"])
    r = reproduce(ROOT, "--profile", "paper_video", "--dry-run", check=False, **paths)
    assert r.returncode == 2 and "model_motion_adapter" in r.stderr, r.stderr


def test_experiment_config_layers_over_one_experiment_only(tmp_path):
    from seppo.core.config import ConfigError
    from seppo.experiments.reproduce import load_profile, plan_runs
    prof = load_profile("mini", ROOT)
    runs = plan_runs(prof, ROOT)
    video = [r for r in runs if r.experiment == "e5_video"]
    assert video and all(r.config["data_source"] == "world_video" and r.config["train_scope"] == "motion" for r in video)
    assert all(r.config["data_source"] == "world" and r.config["train_scope"] == "unet" for r in runs if r.experiment != "e5_video")
    from seppo.core.config import read_yaml
    world_video = read_yaml(ROOT / "configs/world/video.yaml")
    differ = {k: v for k, v in world_video.items() if video[0].config[k] != v}
    assert not differ, f"configs/profiles/mini.yaml's e5_video block and configs/world/video.yaml disagree: {differ}"
    root = scratch_root(tmp_path)
    f = root / "configs/profiles/mini.yaml"
    raw = yaml.safe_load(f.read_text())
    f.write_text(yaml.safe_dump(raw | {"experiment_config": {"e9_nothing": {"train_lr": 1e-4}}}))
    with pytest.raises(ConfigError, match="experiment_config names experiment 'e9_nothing'"): load_profile("mini", root)
    f.write_text(yaml.safe_dump(raw | {"experiment_config": {"e5_video": {"train_lrr": 1e-4}}}))
    with pytest.raises(ConfigError, match="did you mean 'train_lr'"): load_profile("mini", root)
