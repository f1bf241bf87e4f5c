"""Bad input gives a clear error or is repaired, never a traceback: a dataset without one readable image, a model
folder without its weights, an evaluation image damaged on disk, and checkpoints unpickled with weights_only off."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SEPPO = str(Path(sys.executable).parent / "seppo")   # the console script installed with the package
EXAMPLES = ROOT / "configs" / "examples"


def env():
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.pop("SEPPO_TEST_FAULT", None)
    return e


def seppo(*args):
    return subprocess.run([SEPPO, *map(str, args)], env=env(), capture_output=True, text=True, timeout=600)


def seppo_train(method, out, *sets):
    sets = ["train_max_updates=2", "train_checkpoint_every=0", "data_toy_size=24", *sets]
    return seppo("train", "--config", EXAMPLES / f"tiny-{method}.yaml", "--output-dir", out, "--no-progress",
                 *[a for s in sets for a in ("--set", s)])


def assert_clean_error(r, *messages):
    """Exit code 2, the CLI's one-line error, no traceback."""
    assert r.returncode == 2, f"exit {r.returncode}:\n{r.stderr[-4000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("seppo: error:"), r.stderr[-4000:]
    for m in messages: assert m in last, f"{m!r} not in {last!r}"


# --- 1. a dataset none of whose images can be read --------------------------------------------------------------

@pytest.fixture(scope="module")
def unreadable_pickapic(tmp_path_factory):
    """A toy Pick-a-Pic parquet with every image replaced by bytes that are no image; and its number of non-tie rows."""
    from seppo.core.toy import make_toy_pickapic
    d = tmp_path_factory.mktemp("unreadable")
    make_toy_pickapic(d / "toy", n=24, resolution=16, seed=0)
    df = pd.read_parquet(next((d / "toy").glob("*.parquet")))
    df["jpg_0"], df["jpg_1"] = b"not an image", b"not an image"
    df.to_parquet(d / "unreadable.parquet")
    return d / "unreadable.parquet", int((df.label_0 != 0.5).sum())


@pytest.mark.parametrize("method,sets", [
    ("sft", []),                                   # winners, decoded batch by batch
    ("dpo", ["data_precompute_latents=true"]),     # pairs, all decoded up front to cache latents
], ids=["sft", "dpo-cached-latents"])
def test_train_on_an_all_unreadable_dataset_is_a_clear_error(tmp_path, unreadable_pickapic, method, sets):
    parquet, n = unreadable_pickapic
    r = seppo_train(method, tmp_path / "run", "data_source=pickapic", f"data_path={parquet}", *sets)
    assert_clean_error(r, f"no item of the dataset ({parquet}) could be read",
                       f"every one of the {n} items is unreadable (first: item 0: cannot read image",
                       "UnidentifiedImageError")
    assert not (tmp_path / "run" / "final").exists()


def test_train_on_an_image_folder_of_broken_files_names_the_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for k in range(6): (folder / f"{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)   # a PNG header, nothing more
    (folder / "captions.jsonl").write_text("".join(json.dumps({"file_name": f"{k}.png", "caption": f"image {k}"}) + "\n"
                                                   for k in range(6)))
    r = seppo_train("sft", tmp_path / "run", "data_source=imagefolder", f"data_path={folder}")
    assert_clean_error(r, f"no item of the dataset ({folder}) could be read", "every one of the 6 items is unreadable",
                       "item 0: cannot read image: ")


# --- 2. a model folder without weights ------------------------------------------------------------------------------

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors, diffusion_pytorch_model.bin, "
                     "diffusion_pytorch_model.safetensors.index.json, diffusion_pytorch_model.bin.index.json")
TRANSFORMERS_WEIGHTS = "model.safetensors, pytorch_model.bin, model.safetensors.index.json, pytorch_model.bin.index.json"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from seppo.core.models import save_components, tiny_components
    d = tmp_path_factory.mktemp("model") / "tiny"
    save_components(tiny_components(seed=0), d)
    return d


@pytest.mark.parametrize("part,weights,cls,expected", [
    ("unet", "diffusion_pytorch_model.safetensors", "UNet2DConditionModel", DIFFUSERS_WEIGHTS),
    ("vae", "diffusion_pytorch_model.safetensors", "AutoencoderKL", DIFFUSERS_WEIGHTS),
    ("text_encoder", "model.safetensors", "CLIPTextModel", TRANSFORMERS_WEIGHTS),
])
def test_load_components_without_weights_names_folder_and_files(tmp_path, tiny_model, part, weights, cls, expected):
    from seppo.core.models import load_components
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / part / weights).unlink()
    with pytest.raises(FileNotFoundError) as e: load_components(model)
    assert str(e.value) == (f"{model / part}: no weights for component {part!r} ({cls}); expected one of {expected}; "
                            "found config.json")


def test_load_components_without_config_lists_what_is_there(tmp_path, tiny_model):
    from seppo.core.models import load_components
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "unet" / "config.json").unlink()
    with pytest.raises(FileNotFoundError) as e: load_components(model)
    assert (f"missing {model / 'unet' / 'config.json'} (component 'unet'); expected config.json in {model / 'unet'}, "
            "found diffusion_pytorch_model.safetensors") in str(e.value)


def test_train_with_a_model_folder_without_unet_weights_is_a_clear_error(tmp_path, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    r = seppo_train("sft", tmp_path / "run", f"model_path={model}")
    assert_clean_error(r, f"{model / 'unet'}: no weights for component 'unet' (UNet2DConditionModel); expected one of "
                          f"{DIFFUSERS_WEIGHTS}; found config.json")


# --- 3. an evaluation image damaged on disk -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    """A tiny model, three prompts, tiny pickscore and aesthetic weights, and a first, undamaged evaluation."""
    from seppo.eval.evaluate import evaluate
    from seppo.eval.scorers import save_tiny_scorer
    from seppo.core.models import save_components, tiny_components
    d = tmp_path_factory.mktemp("eval")
    save_components(tiny_components(seed=0), d / "model")
    (d / "prompts.txt").write_text("a red cube\na blue ball on a table\na cat\n")
    scorers = {name: str(save_tiny_scorer(name, d / name)) for name in ("pickscore", "aesthetic")}
    run = dict(prompt_sets={"p": d / "prompts.txt"}, num_inference_steps=2, batch_size=2, device="cpu")
    first = evaluate(d / "model", output_dir=d / "first", scorers=scorers, **run)
    return {"dir": d, "run": run, "scorers": scorers, "first": first}


def pixels(path):
    with Image.open(path) as im: return np.asarray(im.convert("RGB"))


def truncate(png):
    """Keep only the first 40 bytes: the PNG signature and header, cut in the next chunk."""
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(OSError): pixels(png)   # PIL's UnidentifiedImageError, or "image file is truncated"


def test_evaluate_regenerates_a_truncated_image_found_while_scoring(eval_files, tmp_path, caplog):
    """An evaluation folder whose manifest was lost and one of whose images is truncated, evaluated again."""
    from seppo.eval.evaluate import MANIFEST_FILE, METRICS_FILE, evaluate
    f = eval_files
    out = tmp_path / "again"
    shutil.copytree(f["dir"] / "first", out)
    for name in (MANIFEST_FILE, METRICS_FILE): (out / name).unlink()
    png = out / "images" / "p" / "00001-0.png"
    truncate(png)
    with caplog.at_level(logging.WARNING):
        result = evaluate(f["dir"] / "model", output_dir=out, scorers=f["scorers"], **f["run"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(png) in r.getMessage()]
    assert len(warned) == 1 and "cannot be read" in warned[0] and "generating it again" in warned[0], caplog.text
    with Image.open(png) as im: im.verify()   # a whole PNG again
    assert np.array_equal(pixels(png), pixels(f["dir"] / "first" / "images" / "p" / "00001-0.png"))
    assert result["metrics"] == f["first"]["metrics"]
    assert result["n_images"] == 3


def test_seppo_evaluate_regenerates_a_truncated_image_when_a_scorer_is_added(eval_files, tmp_path):
    """`seppo evaluate` into a finished folder with a scorer added: the new scorer reads a truncated image."""
    f = eval_files
    out = tmp_path / "grown"
    shutil.copytree(f["dir"] / "first", out)
    (out / "manifest.jsonl").write_text("".join(
        json.dumps(rec | {"scores": {k: v for k, v in rec["scores"].items() if k == "pickscore"}}) + "\n"
        for rec in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())))   # as if run with pickscore only
    png = out / "images" / "p" / "00001-0.png"
    truncate(png)
    r = seppo("evaluate", "--model", f["dir"] / "model", "--prompts", f"p={f['dir'] / 'prompts.txt'}",
              "--scorers", *[f"{k}={v}" for k, v in f["scorers"].items()], "--output-dir", out,
              "--num-inference-steps", "2", "--batch-size", "2", "--device", "cpu", "--no-progress")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-4000:]
    assert f"WARNING seppo.eval.evaluate: {png} cannot be read" in r.stderr, r.stderr[-4000:]
    assert np.array_equal(pixels(png), pixels(f["dir"] / "first" / "images" / "p" / "00001-0.png"))
    got, ref = json.loads((out / "metrics.json").read_text())["metrics"], f["first"]["metrics"]
    assert got.keys() == ref.keys()
    for k, v in ref.items():   # the same pixels; aesthetic scored here on one thread, in the first run on several
        assert got[k] == (v if "pickscore" in k else pytest.approx(v, rel=1e-6)), k


# --- 4. checkpoints loaded with weights_only off ------------------------------------------------------------------

def test_weights_only_false_logs_a_warning_naming_the_file(tmp_path, caplog):
    from seppo.eval.scorers import load_state_file
    ckpt = tmp_path / "head.pth"
    torch.save({"weight": torch.ones(1, 4), "bias": torch.zeros(1)}, ckpt)
    with caplog.at_level(logging.WARNING, logger="seppo.eval.scorers"):
        sd = load_state_file(ckpt)
        assert not caplog.records   # the safe mode says nothing
        sd_unsafe = load_state_file(ckpt, weights_only=False)
    assert sd.keys() == sd_unsafe.keys() == {"weight", "bias"}
    assert len(caplog.records) == 1, f"expected one warning for weights_only=False, found {caplog.text!r}"
    rec = caplog.records[0]
    assert rec.levelno == logging.WARNING and rec.name == "seppo.eval.scorers"
    assert str(ckpt) in rec.getMessage() and "arbitrary code" in rec.getMessage() and "trust" in rec.getMessage()


def test_scorer_option_weights_only_false_warns_for_the_head_file(tmp_path, caplog):
    from seppo.eval.scorers import get_scorer, save_tiny_scorer
    folder = save_tiny_scorer("aesthetic", tmp_path / "aesthetic")
    with caplog.at_level(logging.WARNING, logger="seppo.eval.scorers"):
        get_scorer("aesthetic", folder, device="cpu", weights_only="false")   # as `aesthetic=DIR,weights_only=false`
    assert any(str(Path(folder) / "aesthetic_head.pth") in r.getMessage() and "arbitrary code" in r.getMessage()
               for r in caplog.records), caplog.text


def test_weights_only_is_documented_as_arbitrary_code_execution():
    from seppo.eval.scorers import SCORERS, load_state_file
    for fn in (load_state_file, SCORERS["aesthetic"], SCORERS["hpsv2"], SCORERS["imagereward"]):
        doc = " ".join(fn.__doc__.split())
        assert "weights_only" in doc and "arbitrary code" in doc and "trust" in doc, (fn.__name__, doc)
