"""What a run leaves for the ecosystem: accelerate's trackers (`train_log_with`) beside the JSONL log, and a model card
in OUTPUT_DIR/final."""
import json

import pytest
import yaml

from seppo.core import trainer as tr
from seppo.core.config import config_hash, load_config

FAST = {"train_max_updates": 3, "train_batch_size": 2, "data_toy_size": 8, "sample_num_steps": 2,
        "train_checkpoint_every": 0, "train_cpu": True}


def run(out, **over):
    cfg = load_config(**FAST | {"output_dir": str(out)} | over)
    tr.train(cfg, progress=False)
    return cfg


def test_tensorboard_tracker_gets_the_logged_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run(tmp_path / "tb", train_log_with="tensorboard")
    log = [json.loads(line) for line in (tmp_path / "tb" / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard" / "seppo"))
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3] == [r["update"] for r in log]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in log], rel=1e-6)
    assert "aaf_rate" in events.Tags()["scalars"]


def test_no_tracker_by_default_and_a_missing_one_names_its_extra(tmp_path, monkeypatch):
    run(tmp_path / "plain")
    assert (tmp_path / "plain" / "log.jsonl").is_file() and not (tmp_path / "plain" / "tensorboard").exists()
    monkeypatch.setattr(tr.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"needs the wandb package, which is not installed: pip install 'seppo\[wandb\]'"):
        tr.train(load_config(**FAST | {"output_dir": str(tmp_path / "w"), "train_log_with": "wandb"}), progress=False)
    assert not (tmp_path / "w").exists()                             # refused before anything was written


@pytest.mark.parametrize("lora", [0, 4])
def test_final_model_has_a_model_card(tmp_path, lora):
    cfg = run(tmp_path / "card", train_lora_rank=lora)
    final = tmp_path / "card" / "final"
    text = (final / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "diffusers" and front["seppo_config_hash"] == config_hash(cfg)
    assert front["tags"][:3] == ["seppo", "seppo", "lora" if lora else "full-fine-tune"]
    assert ("load_lora_weights" in text) == bool(lora) and "| `train_beta` | 2000.0 |" in text
    assert json.loads((final / "seppo_config.json").read_text()) == cfg
    if lora: assert front["base_model"] == json.loads((final / "seppo_base.json").read_text())["base_model"]
