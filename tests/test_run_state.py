"""A run never trains on, restores or prunes another run's state; damaged state is named and falls back; real processes."""
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from trainrun import EXAMPLES, assert_bitwise_equal, fault_env, final_weights, seppo_train


def tree_digest(folder):
    "path -> sha256 of every file under `folder`."
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def log_updates(out):
    return [json.loads(line)["update"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


@pytest.fixture(scope="module")
def killed_seppo(tmp_path_factory, data):
    """A SePPO run killed right after its checkpoint at update 6 (of 8): step-2, step-4, step-6, no final model."""
    d = tmp_path_factory.mktemp("killed") / "run"
    r = seppo_train("seppo", d, fault="after_checkpoint@6", check=False, data=data)
    assert r.returncode == 17, r.stderr[-3000:]
    assert [p.name for p in sorted((d / "checkpoints").iterdir())] == ["step-2", "step-4", "step-6"]
    return d


@pytest.fixture
def run_copy(tmp_path, killed_seppo):
    """A private copy of the killed run, free to damage."""
    out = tmp_path / "run"
    shutil.copytree(killed_seppo, out, symlinks=True)
    return out


# ---- a fresh start into a used folder; --overwrite ------------------------------------------------------------------

def test_fresh_start_into_a_used_folder_is_refused_and_overwrite_clears_it(run_copy, reference_runs, data):
    before = tree_digest(run_copy)
    r = seppo_train("seppo", run_copy, check=False, data=data)
    assert r.returncode == 2, r.stderr[-3000:]
    no_traceback(r)
    assert "already holds a run" in r.stderr and "checkpoints/ (step-2, step-4, step-6)" in r.stderr
    assert "log.jsonl (6 records)" in r.stderr and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert tree_digest(run_copy) == before, "a refused start changed the folder"
    r = seppo_train("seppo", run_copy, overwrite=True, data=data)
    assert "--overwrite: removing" in r.stderr and "step-6" in r.stderr
    assert_bitwise_equal(final_weights(run_copy), final_weights(reference_runs["seppo"]))
    assert log_updates(run_copy) == list(range(1, 9))
    assert [p.name for p in sorted((run_copy / "checkpoints").iterdir())] == ["step-2", "step-4", "step-6", "step-8"]
    assert not list(run_copy.glob(".overwritten-*"))


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path, data):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    r = seppo_train("sft", f, check=False, data=data)
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr, r.stderr[-3000:]
    no_traceback(r)


# ---- --resume compares the configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,change,key", [
    ("seppo", "train_lr=0.001", "train_lr: 0.0001 in the checkpoint, 0.001 now"),
    ("seppo", "train_seed=5", "train_seed: 0 in the checkpoint, 5 now"),
    ("sft", None, "train_method: 'seppo' in the checkpoint, 'sft' now"),   # a SePPO folder resumed with an SFT config
])
def test_resume_refuses_a_changed_config(run_copy, data, method, change, key):
    before = tree_digest(run_copy)
    r = seppo_train(method, run_copy, *([change] if change else []), resume=True, check=False, data=data)
    assert r.returncode == 2, r.stderr[-3000:]
    no_traceback(r)
    assert "cannot resume" in r.stderr and key in r.stderr, r.stderr[-3000:]
    assert "--overwrite" in r.stderr and "train_max_updates" in r.stderr       # the way out, and the safe keys
    assert tree_digest(run_copy) == before


def test_resume_accepts_the_safe_keys(run_copy, data):
    seppo_train("seppo", run_copy, "train_max_updates=10", "train_log_every=1", "eval_seed=7", resume=True, data=data)
    assert log_updates(run_copy) == list(range(1, 11))
    state = json.loads((run_copy / "checkpoints" / "step-10" / "trainer_state.json").read_text())
    assert state["config"]["train_max_updates"] == 10


# ---- damaged checkpoints --------------------------------------------------------------------------------------------

def truncate(f):
    f = Path(f)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def flip_low_bits(f, n=1000):
    "Flip the lowest bit of `n` float32 weights of a safetensors file, in place."
    f = Path(f)
    raw = bytearray(f.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    for i in range(n): raw[start + 4 * i] ^= 1
    f.write_bytes(bytes(raw))


DAMAGE = {
    "truncated optimizer": ("optimizer.safetensors", truncate),
    "1000 flipped weight bits": ("model.safetensors", flip_low_bits),
    "truncated process state": ("process-0.safetensors", truncate),
    "garbage trainer state": ("trainer_state.json", lambda f: Path(f).write_text("{\"update\": 6, \"conf")),
    "truncated pool.json": ("pool/pool.json", truncate),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_an_intact_one(run_copy, reference_runs, data, kind):
    name, damage = DAMAGE[kind]
    damage(run_copy / "checkpoints" / "step-6" / name)
    r = seppo_train("seppo", run_copy, resume=True, data=data)
    assert f"step-6/{name}" in r.stderr and "falling back to step-4" in r.stderr, r.stderr[-3000:]
    assert_bitwise_equal(final_weights(run_copy), final_weights(reference_runs["seppo"]))
    assert log_updates(run_copy) == list(range(1, 9))


def test_last_good_checkpoint_is_a_verified_one(run_copy, data):
    flip_low_bits(run_copy / "checkpoints" / "step-6" / "model.safetensors")
    r = seppo_train("seppo", run_copy, resume=True, fault="nan_loss@5", check=False, data=data)
    assert r.returncode != 0 and "non-finite loss at update 5" in r.stderr, r.stderr[-3000:]
    assert "Last good checkpoint: " + str(run_copy / "checkpoints" / "step-4") in r.stderr


def test_no_intact_checkpoint_is_a_clear_error(run_copy, data):
    for ck in ("step-2", "step-4", "step-6"): truncate(run_copy / "checkpoints" / ck / "model.safetensors")
    r = seppo_train("seppo", run_copy, resume=True, check=False, data=data)
    assert r.returncode == 2 and "no intact checkpoint to resume" in r.stderr, r.stderr[-3000:]
    assert "step-2/model.safetensors is damaged" in r.stderr
    no_traceback(r)


# ---- the reference pool on disk -------------------------------------------------------------------------------------

def test_disk_pool_snapshots_are_write_once_and_verified(tmp_path, reference_runs, data):
    out = tmp_path / "disk"
    r = seppo_train("seppo", out, "ref_pool_storage=disk", fault="after_checkpoint@6", check=False, data=data)
    assert r.returncode == 17, r.stderr[-3000:]
    live = out / "pool" / "snapshot-0001.safetensors"
    assert live.samefile(out / "checkpoints" / "step-6" / "pool" / "snapshot-0001.safetensors"), \
        "checkpoints hard-link the pool's snapshots"
    assert all(f.stat().st_mode & 0o222 == 0 for f in (out / "pool").iterdir()), "snapshot files are read-only"
    copies = {k: tmp_path / k for k in ("theta0", "replaced")}
    for c in copies.values(): subprocess.run(["cp", "-a", str(out), str(c)], check=True)   # keeps the hard links
    assert (copies["theta0"] / "pool" / "snapshot-0000.safetensors").stat().st_nlink > 1
    # θ0's file damaged in place: every checkpoint holds it through a hard link, so none is intact
    theta0 = copies["theta0"] / "pool" / "snapshot-0000.safetensors"
    os.chmod(theta0, 0o644)
    flip_low_bits(theta0, n=10)
    r = seppo_train("seppo", copies["theta0"], "ref_pool_storage=disk", resume=True, check=False, data=data)
    assert r.returncode == 2 and "no intact checkpoint to resume" in r.stderr, r.stderr[-3000:]
    assert "pool/snapshot-0000.safetensors is damaged" in r.stderr
    no_traceback(r)
    # the snapshot of update 3 damaged in place: step-2 does not hold it, and the run resumes from there
    os.chmod(live, 0o644)
    flip_low_bits(live, n=10)
    r = seppo_train("seppo", out, "ref_pool_storage=disk", resume=True, data=data)
    assert "snapshot-0001.safetensors is damaged" in r.stderr and "falling back to step-2" in r.stderr, r.stderr[-3000:]
    assert_bitwise_equal(final_weights(out), final_weights(reference_runs["seppo"]))
    # a live file replaced by a new one (another inode): the checkpoints' copies are intact and resume restores it
    live = copies["replaced"] / "pool" / "snapshot-0001.safetensors"
    live.unlink(); live.write_bytes(b"garbage")
    seppo_train("seppo", copies["replaced"], "ref_pool_storage=disk", resume=True, data=data)
    assert_bitwise_equal(final_weights(copies["replaced"]), final_weights(reference_runs["seppo"]))


# ---- logs -----------------------------------------------------------------------------------------------------------

def test_a_torn_last_log_line_is_dropped_and_a_damaged_one_named(run_copy, reference_runs, data):
    with open(run_copy / "log.jsonl", "a") as f: f.write('{"update": 7, "lo')     # a kill in the middle of an append
    r = seppo_train("seppo", run_copy, resume=True, data=data)
    assert "log.jsonl: dropped its torn last line 7" in r.stderr, r.stderr[-3000:]
    assert log_updates(run_copy) == list(range(1, 9))
    assert_bitwise_equal(final_weights(run_copy), final_weights(reference_runs["seppo"]))


def test_a_damaged_log_line_in_the_middle_is_an_error(run_copy, data):
    lines = (run_copy / "log.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]
    (run_copy / "log.jsonl").write_text("\n".join(lines) + "\n")
    r = seppo_train("seppo", run_copy, resume=True, check=False, data=data)
    assert r.returncode == 2 and "log.jsonl, line 3: not a JSON record" in r.stderr, r.stderr[-3000:]
    no_traceback(r)


# ---- a full disk ----------------------------------------------------------------------------------------------------

def test_disk_full_while_checkpointing_names_the_file_and_the_intact_checkpoint(tmp_path, reference_runs, data):
    out = tmp_path / "run"
    r = seppo_train("seppo", out, fault="disk_full@4", check=False, data=data)
    assert r.returncode == 2, r.stderr[-3000:]
    no_traceback(r)
    msg = (f"no space left on device while writing {out / 'checkpoints' / '.tmp-step-4' / 'optimizer.safetensors'}; "
           f"{out / 'checkpoints' / 'step-2'} is intact; free space and run again with --resume")
    assert msg in r.stderr, r.stderr[-3000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"], "the temp folder is removed"
    seppo_train("seppo", out, resume=True, data=data)
    assert_bitwise_equal(final_weights(out), final_weights(reference_runs["seppo"]))


# ---- durability: fsync before rename --------------------------------------------------------------------------------

def test_checkpoint_files_reach_the_disk_before_the_rename(tmp_path, data, monkeypatch):
    from seppo.core.config import load_config
    from seppo.core.trainer import train
    synced, events = set(), []
    real_fsync, real_replace = os.fsync, os.replace
    def fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)
    def replace(src, dst, *a, **k):
        events.append((str(src), str(dst), set(synced)))
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "run"
    train(load_config(EXAMPLES / "tiny-seppo.yaml", output_dir=str(out), data_path=str(data), train_max_updates=2,
                      train_checkpoint_every=2, data_toy_size=24, sample_num_steps=2), progress=False)
    ck = out / "checkpoints" / "step-2"
    renames = [e for e in events if e[1] == str(ck)]
    assert len(renames) == 1
    src, _, done = renames[0]
    files = {str(Path(src) / p.relative_to(ck)) for p in ck.rglob("*")}      # every file and folder, by its temp name
    assert files - done == set(), f"renamed before fsync: {sorted(files - done)[:3]}"
    assert src in done
    assert str(ck.parent) in synced, "the checkpoints folder is fsync'd after the rename"


# ---- no pickle ------------------------------------------------------------------------------------------------------

def is_safetensors(raw:bytes)->bool:
    n = struct.unpack("<Q", raw[:8])[0] if len(raw) >= 8 else 0
    return 0 < n < len(raw) and raw[8:9] == b"{"


def test_checkpoints_hold_no_pickle(killed_seppo):
    for f in (killed_seppo / "checkpoints").rglob("*"):
        if not f.is_file(): continue
        raw = f.read_bytes()
        if f.suffix == ".json": json.loads(raw)
        else: assert f.suffix == ".safetensors" and is_safetensors(raw), f"{f} is neither JSON nor safetensors"


class _Plant:
    "Unpickling this creates a file: what a malicious checkpoint could do instead."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, "w"))


def test_resume_runs_no_code_from_a_checkpoint(run_copy, tmp_path, data):
    marker = tmp_path / "code-ran"
    ck = run_copy / "checkpoints" / "step-6"
    payload = pickle.dumps(_Plant(str(marker)))
    for name in ("optimizer.safetensors", "optimizer.pt", "rng-0.pt", "lr_scheduler.pt"):
        (ck / name).write_bytes(payload)
    sums = {p.relative_to(ck).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in ck.rglob("*") if p.is_file() and p.name != "checksums.json"}
    (ck / "checksums.json").write_text(json.dumps({"algorithm": "sha256", "files": sums}))   # checksums that match
    r = seppo_train("seppo", run_copy, resume=True, check=False, data=data)
    assert not marker.exists(), "resuming executed code from the checkpoint"
    assert r.returncode == 2 and "optimizer.safetensors is not a readable safetensors file" in r.stderr, r.stderr[-3000:]


# ---- data/skipped continues after a resume --------------------------------------------------------------------------

def test_skipped_count_continues_after_resume(tmp_path, data):
    import pandas as pd
    df = pd.read_parquet(next(Path(data).glob("*.parquet")))
    df.loc[df.label_0 == 1.0, "jpg_0"] = b"not an image"
    bad = tmp_path / "corrupt.parquet"
    df.to_parquet(bad)
    sets = ["data_source=pickapic", f"data_path={bad}", "train_max_updates=6"]
    seppo_train("sft", tmp_path / "whole", *sets)
    r = seppo_train("sft", tmp_path / "resumed", *sets, fault="after_checkpoint@4", check=False)
    assert r.returncode == 17, r.stderr[-3000:]
    seppo_train("sft", tmp_path / "resumed", *sets, resume=True)
    counts = [[json.loads(line)["data/skipped"] for line in (tmp_path / k / "log.jsonl").read_text().splitlines()]
              for k in ("whole", "resumed")]
    assert counts[0][-1] > 0 and counts[0] == counts[1], counts



# ---- two processes: both write their own state, the main one verifies and tells the other --------------------------

def torchrun_train(out, data, fault=None, resume=False):
    import sys
    from trainrun import FAST, SEPPO, env
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "--no-python", SEPPO,
           "train", "--config", str(EXAMPLES / "tiny-seppo.yaml"), "--output-dir", str(out), "--no-progress",
           "--set", f"data_path={data}", *[a for s in FAST + ["train_batch_size=2", "train_max_updates=6",
                                                            "ref_pool_storage=disk"] for a in ("--set", s)]]
    if resume: cmd.append("--resume")
    return subprocess.run(cmd, env=env(**fault_env(fault)), capture_output=True, text=True,
                          timeout=600)


def test_two_process_checkpoints_resume_exactly_and_fall_back(tmp_path, data):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    r = torchrun_train(whole, data)
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun_train(cut, data, fault="after_checkpoint@4")
    assert r.returncode != 0
    ck = cut / "checkpoints" / "step-4"
    assert {p.name for p in ck.glob("process-*.safetensors")} == {"process-0.safetensors", "process-1.safetensors"}
    truncate(ck / "process-1.safetensors")                                    # the other process's state is damaged
    r = torchrun_train(cut, data, resume=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step-4/process-1.safetensors is damaged" in r.stderr and "falling back to step-2" in r.stderr
    assert_bitwise_equal(final_weights(cut), final_weights(whole))
    assert log_updates(cut) == log_updates(whole) == list(range(1, 7))
