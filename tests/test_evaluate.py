"""`seppo evaluate` end to end in real processes: a tiny model, tiny prompt files and tiny scorer weights in the real
file layouts, both protocols, win rates, resumption after a crash, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from trainrun import fault_env

SEPPO = str(Path(sys.executable).parent / "seppo")   # the console script installed with the package
SCORERS = ("pickscore", "clip_score", "aesthetic", "hpsv2", "imagereward")
STATS = ("mean", "ci95", "n", "n_images")
FAST = ["--num-inference-steps", "2", "--batch-size", "2", "--device", "cpu", "--no-progress"]


def env(**extra):
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.pop("SEPPO_TEST_FAULT", None)
    e.update(extra)
    return e


def seppo_evaluate(*args, fault=None, check=True):
    cmd = [SEPPO, "evaluate", *map(str, args)]
    r = subprocess.run(cmd, env=env(**fault_env(fault)), capture_output=True, text=True,
                       timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def manifest(out):
    return [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny models, the three prompt sets in their real layouts, and tiny weights for every built-in scorer."""
    from seppo.eval.scorers import save_tiny_scorer
    from seppo.core.models import save_components, tiny_components
    d = tmp_path_factory.mktemp("evaluate")
    save_components(tiny_components(seed=0), d / "model")
    save_components(tiny_components(seed=1), d / "model-b")
    pd.DataFrame({"caption": ["a red cube", "a blue ball on a table", "a cat"], "jpg_0": [b"\x89PNG"] * 3,
                  "jpg_1": [b"\x89PNG"] * 3}).to_parquet(d / "validation_unique-00000-of-00001.parquet")
    pd.DataFrame({"Prompt": ["bond", "a photo of a dog", "an astronaut riding a horse"],
                  "Category": ["Abstract", "Animals", "People"], "Challenge": ["Basic"] * 3,
                  "Note": ["", "", ""]}).to_csv(d / "PartiPrompts.tsv", sep="\t", index=False)
    (d / "hps").mkdir()
    for style in ("anime", "concept-art", "paintings", "photo"):
        (d / "hps" / f"{style}.json").write_text(json.dumps([f"{style} of a horse", f"{style} of a tree"]))
    scorers = {name: save_tiny_scorer(name, d / "weights" / name) for name in SCORERS}
    return {"dir": d, "pickapic": d / "validation_unique-00000-of-00001.parquet", "parti": d / "PartiPrompts.tsv",
            "hps": d / "hps", "scorers": scorers}


def prompts_args(files, *names):
    return ["--prompts", *[f"{n}={files[n]}" for n in names]]


def scorer_args(files, *names):
    return ["--scorers", *[f"{n}={files['scorers'][n]}" for n in names]]


@pytest.fixture(scope="module")
def official(files, tmp_path_factory):
    """An uninterrupted official evaluation with every scorer: the run every other one is compared with."""
    out = tmp_path_factory.mktemp("official")
    r = seppo_evaluate("--model", files["dir"] / "model", *prompts_args(files, "pickapic", "parti", "hps"),
                       *scorer_args(files, *SCORERS), "--max-prompts", "3", "--output-dir", out, *FAST)
    return out, r


def test_official_end_to_end(files, official):
    out, r = official
    m = metrics(out)
    assert (m["protocol"], m["settings"]["seeds"], m["settings"]["guidance_scale"], m["n_images"]) == ("official", [0], 7.5, 9)
    assert m["model"] == str((files["dir"] / "model").resolve())
    assert set(m["prompt_sets"]) == {"pickapic", "parti", "hps"} and m["prompt_sets"]["hps"]["kind"] == "hpsv2"
    assert set(m["metrics"]) == {f"{s}/{c}/{stat}" for s in ("pickapic", "parti", "hps") for c in SCORERS for stat in STATS}
    assert all(m["metrics"][f"{s}/{c}/n"] == 3 for s in ("pickapic", "parti", "hps") for c in SCORERS)
    lo, hi = m["metrics"]["parti/pickscore/ci95"]
    assert lo <= m["metrics"]["parti/pickscore/mean"] <= hi
    assert m["win_rate"] == {} and m["baseline"] is None and len(m["config_hash"]) == 16
    records = manifest(out)
    assert len(records) == 9 and all(set(rec["scores"]) == set(SCORERS) for rec in records)
    assert {rec["path"] for rec in records} == {f"images/{s}/{i:05d}-0.png" for s in ("pickapic", "parti", "hps") for i in range(3)}
    assert all((out / rec["path"]).is_file() for rec in records)
    assert "parti/pickscore" in r.stdout and "metrics.json" in r.stdout


def test_multiseed_win_rate(files, tmp_path):
    base, other = tmp_path / "sd", tmp_path / "b"
    common = [*prompts_args(files, "parti"), *scorer_args(files, "pickscore", "aesthetic"), "--protocol", "multiseed",
              "--num-seeds", "2", "--max-prompts", "2", *FAST]
    seppo_evaluate("--model", files["dir"] / "model", *common, "--output-dir", base)
    seppo_evaluate("--model", files["dir"] / "model-b", *common, "--output-dir", other, "--baseline", base)
    m = metrics(other)
    assert (m["protocol"], m["settings"]["seeds"], m["n_images"], m["baseline"]) == ("multiseed", [0, 1], 4, str(base.resolve()))
    assert (m["metrics"]["parti/pickscore/n"], m["metrics"]["parti/pickscore/n_images"]) == (2, 4)
    assert set(m["win_rate"]) == {f"parti/{c}/{stat}" for c in ("pickscore", "aesthetic") for stat in ("mean", "ci95", "n")}
    assert all(0 <= m["win_rate"][f"parti/{c}/mean"] <= 1 for c in ("pickscore", "aesthetic"))
    assert sorted((rec["index"], rec["seed"]) for rec in manifest(other)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("fault", ["eval_image@4", "eval_score@7"])
def test_resume_after_crash(files, official, tmp_path, fault):
    """Killed while generating or scoring, then run again: finished images are kept, the numbers match."""
    args = ["--model", files["dir"] / "model", *prompts_args(files, "pickapic", "parti", "hps"),
            *scorer_args(files, *SCORERS), "--max-prompts", "3", "--output-dir", tmp_path, *FAST]
    r = seppo_evaluate(*args, fault=fault, check=False)
    assert r.returncode == 17, r.stderr[-3000:]
    assert not (tmp_path / "metrics.json").exists()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").rglob("*.png")}
    assert len(before) == (4 if fault.startswith("eval_image") else 9)
    seppo_evaluate(*args)
    assert {p: p.stat().st_mtime_ns for p in before} == before   # no finished image regenerated
    ref, got = metrics(official[0]), metrics(tmp_path)
    assert got["config_hash"] == ref["config_hash"] and got["metrics"].keys() == ref["metrics"].keys()
    for k, v in ref["metrics"].items():
        if k.endswith("/mean"): assert got["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
    assert len(manifest(tmp_path)) == 9


@pytest.mark.parametrize("extra,message", [
    (lambda f, t: ["--prompts", f"parti={t / 'nowhere.tsv'}"], "prompt file not found"),
    (lambda f, t: ["--prompts", f"bad={t / 'captionless.parquet'}"], "expected a prompt column (caption for Pick-a-Pic"),
    (lambda f, t: ["--prompts", f"parti={f['parti']}", "--scorers", f"pickscor={t}"], "unknown scorer 'pickscor'; valid scorers:"),
    (lambda f, t: ["--prompts", f"parti={f['parti']}", "--scorers", f"pickscore={t / 'nowhere'}"], "nowhere not found"),
    (lambda f, t: ["--prompts", f"parti={f['parti']}", "--protocol", "multiseed", "--num-seeds", "0"], "num_seeds must be >= 1"),
], ids=["missing-prompts", "bad-columns", "unknown-scorer", "missing-weights", "no-seeds"])
def test_bad_input(files, tmp_path, extra, message):
    pd.DataFrame({"text": ["x"]}).to_parquet(tmp_path / "captionless.parquet")
    r = seppo_evaluate("--model", files["dir"] / "model", *extra(files, tmp_path), "--output-dir", tmp_path / "out", *FAST,
                       check=False)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith("seppo: error:") and message in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_settings_must_match_the_folder(files, official):
    r = seppo_evaluate("--model", files["dir"] / "model", *prompts_args(files, "pickapic"), "--output-dir", official[0],
                       "--num-inference-steps", "3", "--device", "cpu", "--no-progress", check=False)
    assert r.returncode == 2 and "num_inference_steps=2, this one has num_inference_steps=3" in r.stderr, r.stderr[-3000:]
