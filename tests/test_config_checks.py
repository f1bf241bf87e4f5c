"""Config values are checked against each option's range before anything runs; overrides and unknown keys fail clearly."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seppo.core.config import OPTIONS, ConfigError, check_config, defaults_yaml, parse_overrides, read_yaml

ROOT = Path(__file__).resolve().parents[1]
SEPPO = str(Path(sys.executable).parent / "seppo")   # the console script installed with the package
EXAMPLES = ROOT / "configs" / "examples"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")   # ${NAME} in a profile


def env():
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def refused(override:str)->str:
    "The ConfigError message of one `--set` override (fails when it is accepted)."
    with pytest.raises(ConfigError) as e: parse_overrides([override])
    return str(e.value)


# Values seen to misbehave: each ran, crashed late or silently did something else. (override, expected message)
OBSERVED = [
    ("train_checkpoints_keep=-1", "train_checkpoints_keep (in --set): expected an integer >= 0, found -1"),
    ("train_max_updates=0", "train_max_updates (in --set): expected an integer >= 1, found 0"),
    ("train_max_updates=-5", "train_max_updates (in --set): expected an integer >= 1, found -5"),
    ("train_lora_rank=-4", "train_lora_rank (in --set): expected an integer >= 0, found -4"),
    ("sample_guidance_scale=-3", "sample_guidance_scale (in --set): expected a finite number >= 1, found -3.0"),
    ("train_batch_size=0", "train_batch_size (in --set): expected an integer >= 1, found 0"),
    ("train_grad_accum=0", "train_grad_accum (in --set): expected an integer >= 1, found 0"),
    ("sample_num_steps=0", "sample_num_steps (in --set): expected an integer >= 1, found 0"),
    ("ref_snapshot_every=0", "ref_snapshot_every (in --set): expected an integer >= 1, found 0"),
    ("train_log_every=0", "train_log_every (in --set): expected an integer >= 1, found 0"),
    ("train_timestep_max=0", "train_timestep_max (in --set): expected an integer >= 1, found 0"),
    ("train_lr=.inf", "train_lr (in --set): expected a finite number > 0, found inf"),
    ("train_lr=.nan", "train_lr (in --set): expected a finite number > 0, found nan"),
]


@pytest.mark.parametrize("override,message", OBSERVED, ids=[o for o, _ in OBSERVED])
def test_observed_bad_values_are_refused_with_key_value_and_range(override, message):
    assert message in refused(override)


FLOATS = [o.name for o in OPTIONS if o.type is float]


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused(name, value):
    msg = refused(f"{name}={value}")
    assert msg.startswith(f"{name} (in --set): expected ") and "number" in msg and msg.endswith(("nan", "inf"))


# the edges that mean something: 0 disables, null means the default, guidance 1 is no guidance
EDGES_ALLOWED = ["train_checkpoint_every=0", "train_checkpoints_keep=0", "train_max_grad_norm=0", "train_lora_rank=0",
                 "train_warmup_updates=0", "eval_curve_every=0", "sample_guidance_scale=1", "eval_guidance_scale=1",
                 "world_pairs_guidance_scale=1", "sample_eta=0", "sample_eta=1", "data_empty_prompt_prob=0",
                 "data_empty_prompt_prob=1", "train_adam_beta1=0", "train_adam_beta2=0.9999", "ref_pool_max=2",
                 "ref_pool_max=null", "train_lora_alpha=null", "train_lora_alpha=0.5", "train_timestep_max=1",
                 "train_timestep_max=5000", "world_oracle_temperature=0", "model_tiny_sample_size=3",
                 "eval_grid_prompts=1", "eval_images_per_prompt=1000", "train_seed=0", "eval_seed=0",
                 "train_lr=1e-8", "train_max_updates=1", "output_dir=o"]


@pytest.mark.parametrize("override", EDGES_ALLOWED)
def test_meaningful_edges_are_allowed(override):
    key = override.split("=")[0]
    assert key in parse_overrides([override])


# (override, the range the message must name)
JUST_OUTSIDE = [
    ("ref_pool_max=1", "an integer >= 2 or null"), ("sample_eta=1.5", "a number in [0, 1]"),
    ("sample_eta=-0.1", "a number in [0, 1]"), ("data_empty_prompt_prob=1.01", "a number in [0, 1]"),
    ("train_adam_beta1=1", "a number in [0, 1)"), ("train_adam_beta2=1.0", "a number in [0, 1)"),
    ("train_adam_eps=0", "a finite number > 0"), ("train_weight_decay=-0.01", "a finite number >= 0"),
    ("train_lr=0", "a finite number > 0"), ("train_beta=0", "a finite number > 0"),
    ("train_lora_alpha=0", "a finite number > 0 or null"), ("train_max_grad_norm=-1", "a finite number >= 0"),
    ("model_tiny_sample_size=2", "an integer >= 3"), ("eval_grid_prompts=0", "an integer >= 1"),
    ("eval_images_per_prompt=1001", "an integer in [1, 1000]"), ("eval_curve_images_per_prompt=0", "an integer in [1, 1000]"),
    ("world_oracle_temperature=-0.5", "a finite number >= 0"), ("world_pairs_guidance_scale=0.5", "a finite number >= 1"),
    ("eval_guidance_scale=0", "a finite number >= 1"), ("train_seed=-1", "an integer >= 0"),
    ("eval_seed=-1", "an integer >= 0"), ("world_pairs_seed=-1", "an integer >= 0"), ("model_tiny_seed=-1", "an integer >= 0"),
    ("world_base_steps=0", "an integer >= 1"), ("world_pairs_per_prompt=0", "an integer >= 1"),
    ("data_toy_size=0", "an integer >= 1"), ("data_resolution=0", "an integer >= 1"),
    ("train_warmup_updates=-1", "an integer >= 0"), ("eval_curve_every=-1", "an integer >= 0"),
    ("eval_num_steps=0", "an integer >= 1"), ("train_checkpoint_every=-1", "an integer >= 0"),
    ("output_dir=", "a non-empty string"), ("output_dir=' '", "a non-empty string"),
    ("model_path=''", "a non-empty string"), ("data_path=''", "a non-empty string or null"),
    ("world_cache_dir=''", "a non-empty string"), ("eval_prompts=''", "a non-empty string or null"),
]


@pytest.mark.parametrize("override,allowed", JUST_OUTSIDE, ids=[o for o, _ in JUST_OUTSIDE])
def test_values_just_outside_the_range_are_refused(override, allowed):
    key = override.split("=")[0]
    assert refused(override).startswith(f"{key} (in --set): expected {allowed}, found ")


def test_every_option_declares_its_allowed_values():
    from seppo.core.config import Option, range_text
    for o in OPTIONS:
        if o.type in (int, float):
            assert getattr(o, "min", None) is not None or getattr(o, "max", None) is not None, f"{o.name} has no range"
        elif o.type is str and not o.choices:
            with pytest.raises(ConfigError, match="non-empty string"): check_config({o.name: ""})
        assert range_text(o)
        if o.default is not None: assert check_config({o.name: o.default}) == {o.name: o.default}
    with pytest.raises(TypeError, match="needs its range"):   # a future numeric option cannot forget its range
        Option("train_new_count", 3, int, "A count declared without its range.")


def test_defaults_yaml_shows_every_range():
    text = defaults_yaml()
    assert text.count("\n# Allowed: ") == len(OPTIONS)
    assert "# Allowed: an integer >= 1.\ntrain_batch_size: 4\n" in text
    assert "# Allowed: one of sign, indicator, sft, none.\naaf_mode: sign\n" in text
    assert (ROOT / "configs" / "defaults.yaml").read_text() == text


def test_set_value_that_is_not_yaml_is_a_config_error():
    msg = refused("train_lr=[1")
    assert msg.startswith("--set 'train_lr=[1': the value is not a valid YAML scalar: ")
    assert "\n" not in msg
    # valid YAML that is not a scalar is refused by the type check: every option holds one value
    assert "train_lr (in --set): expected a finite number > 0, found [1]" in refused("train_lr=[1]")
    assert "train_batch_size (in --set): expected an integer >= 1, found {'a': 1}" in refused("train_batch_size={a: 1}")
    assert "output_dir (in --set): expected a non-empty string, found ['x']" in refused("output_dir=[x]")


TYPOS = [("train_lerning_rate", "train_lr"), ("train_learning_rate", "train_lr"), ("train_lr_rate", "train_lr"),
         ("trian_lr", "train_lr"), ("train_lrr", "train_lr"), ("train_bach_size", "train_batch_size"),
         ("batch_size", "train_batch_size"), ("ref_stratgy", "ref_strategy"), ("train_mehtod", "train_method"),
         ("train_grad_checkpointing", "train_gradient_checkpointing"), ("train_ckpt_every", "train_checkpoint_every")]


@pytest.mark.parametrize("typo,key", TYPOS)
def test_unknown_key_suggests_the_intended_one(typo, key):
    assert f"unknown config key {typo!r} in --set; did you mean {key!r}?" in refused(f"{typo}=1")


def _flat_config_files():
    "Committed flat configs: every YAML under configs/ but the profiles, accelerate's configs, experiment.yaml files and claims.yaml."
    for p in sorted((ROOT / "configs").rglob("*.y*ml")):
        rel = p.relative_to(ROOT / "configs")
        if rel.parts[0] in ("profiles", "accelerate") or p.name in ("experiment.yaml", "claims.yaml", "local.yaml"): continue
        yield p


@pytest.mark.parametrize("path", list(_flat_config_files()), ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_committed_flat_configs_pass(path):
    assert isinstance(read_yaml(path), dict)


def test_committed_profiles_experiments_and_runs_pass(monkeypatch):
    from seppo.experiments.reproduce import experiment_info, load_profile, plan_runs
    for name in sorted({n for p in (ROOT / "configs" / "profiles").glob("*.yaml") for n in VAR.findall(p.read_text())}):
        monkeypatch.setenv(name, f"/path/of/{name}")          # the paper profile's local paths, not read here
    experiments = sorted(p.parent.name for p in (ROOT / "configs").glob("*/experiment.yaml"))
    assert experiments
    for e in experiments: experiment_info(ROOT, e)            # each experiment's own config: block is checked
    profiles = sorted(p.stem for p in (ROOT / "configs" / "profiles").glob("*.yaml"))
    assert {"mini", "smoke", "paper", "controls"} <= set(profiles)
    for name in profiles:
        runs = plan_runs(load_profile(name, ROOT), ROOT)
        assert runs, name
        for r in runs: assert check_config(r.config) == r.config, (name, r.experiment, r.variant)


def _cli(tmp_path, *sets):
    out = tmp_path / "run"
    r = subprocess.run([SEPPO, "train", "--config", str(EXAMPLES / "tiny-sft.yaml"), "--output-dir", str(out),
                        "--no-progress", *[a for s in sets for a in ("--set", s)]],
                       env=env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    return r, out


def test_cli_refuses_an_out_of_range_value_before_writing_anything(tmp_path):
    r, out = _cli(tmp_path, "train_batch_size=0")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "seppo: error: train_batch_size (in --set): expected an integer >= 1, found 0" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_cli_refuses_a_set_value_that_is_not_yaml(tmp_path):
    r, out = _cli(tmp_path, "train_lr=[1")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "seppo: error: --set 'train_lr=[1': the value is not a valid YAML scalar" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_cli_suggests_the_intended_key(tmp_path):
    r, out = _cli(tmp_path, "train_lerning_rate=1e-4")
    assert r.returncode == 2 and "seppo: error: unknown config key 'train_lerning_rate'" in r.stderr
    assert "did you mean 'train_lr'?" in r.stderr and not out.exists()

