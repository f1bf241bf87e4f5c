"""The video data loader on real files: reading and writing clips, ChronoMagic-Bench-style folders, deterministic frame
sampling, one crop and flip per clip, skipped clips, cached per-frame latents and batches of (B, 3, F, H, W)."""
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from seppo.core.data import LatentDataset, augment_draws, collate, resize_crop, to_pixels
from seppo.core.video_data import (UnreadableVideoError, VideoDataset, count_frames, encode_clips, frame_indices,
                              precompute_video_latents, read_video, video_folder_items, write_video)


def square_clip(T=8, size=16, start=0):
    """A 4x4 red square crossing a blue frame one pixel per frame, over a green ramp: every frame differs and a
    horizontal flip or a shifted crop changes the pixels."""
    clip = np.zeros((T, size, size, 3), np.uint8)
    clip[..., 2] = 160
    clip[..., 1] = np.linspace(0, 255, size, dtype=np.uint8)[None, None]
    for t in range(T):
        clip[t, 6:10, start + t:start + t + 4] = (230, 40, 40)
    return clip


def wide(T=10):
    "A 24x16 clip, so that random crops have room to move."
    return square_clip(T, size=24)[:, 4:20]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    write_video(d / "wide.gif", wide())
    write_video(d / "still.gif", np.repeat(wide(1), 10, axis=0))
    write_video(d / "short.gif", wide(3))
    (d / "junk.mp4").write_bytes(b"\x00 this is not a video " * 64)
    return d


def items_of(d, *names):
    return [{"caption": f"clip {n}", "video": str(d / n)} for n in names]


def shapes(sample):
    return {k: tuple(v.shape) for k, v in sample.items() if isinstance(v, torch.Tensor)}


# --- reading and writing ---------------------------------------------------------------------------------------

def test_gif_keeps_every_frame_and_reads_back_exactly(tmp_path):
    still = np.repeat(square_clip(1), 3, axis=0)
    clip = np.concatenate([still, square_clip(4)[1:]])       # 3 identical frames, then motion
    back = read_video(write_video(tmp_path / "c.gif", clip))
    assert back.shape == (6, 16, 16, 3) and back.dtype == np.uint8
    assert np.array_equal(back, clip)                         # few colours: the one palette is exact
    assert count_frames(tmp_path / "c.gif") == 6


def test_gif_of_many_colours_is_close(tmp_path):
    yy, xx = np.mgrid[0:16, 0:16] * 16
    clip = np.stack([np.stack([xx, yy, np.full_like(xx, 40 * t)], -1) for t in range(5)]).astype(np.uint8)
    back = read_video(write_video(tmp_path / "c.gif", clip))
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip).mean() < 12


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mov"])
def test_video_files_round_trip_approximately(tmp_path, suffix):
    clip = square_clip(6)
    back = read_video(write_video(tmp_path / f"c{suffix}", clip))
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip).mean() < 10
    assert count_frames(tmp_path / f"c{suffix}") == 6 == count_frames(tmp_path / f"c{suffix}", decode=True)
    assert np.array_equal(read_video(tmp_path / f"c{suffix}", [3, 1]), back[[3, 1]])


def test_frame_folder_is_lossless_and_naturally_sorted(tmp_path):
    clip = square_clip(12)
    folder = write_video(tmp_path / "frames", clip)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["000.png", "001.png"]
    assert np.array_equal(read_video(folder), clip)
    nat = tmp_path / "natural"
    nat.mkdir()
    for t in (10, 9, 1, 100):
        Image.fromarray(np.full((4, 4, 3), t, np.uint8)).save(nat / f"frame{t}.png")
    assert read_video(nat)[:, 0, 0, 0].tolist() == [1, 9, 10, 100]


def test_unreadable_video_names_file_and_reason(clips):
    for f in (lambda: read_video(clips / "junk.mp4"), lambda: count_frames(clips / "junk.mp4")):
        with pytest.raises(UnreadableVideoError, match=r"cannot decode video .*junk\.mp4.*Invalid data"):
            f()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video(clips / "nothing.mp4")


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        write_video(tmp_path / "x.gif", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="even width and height, found 4x5"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 5, 4, 3), np.uint8))
    assert not list(tmp_path.iterdir())                       # nothing half-written left behind


# --- items -----------------------------------------------------------------------------------------------------

@pytest.fixture
def bench(tmp_path):
    """ChronoMagic-Bench's layout: Captions/ChronoMagic-Bench-150.csv (videoid, name, sub_category, main_category)
    and <videoid>.mp4 reference videos."""
    videos = tmp_path / "Reference_Videos"
    rows = [("3d_printing_08", "Time-lapse of a 3D printing process", "3d_printing", "human_creation"),
            ("day2night_13.0", "Time-lapse of the sky turning from day to night", "day2night", "meteorological")]
    for k, (videoid, *_) in enumerate(rows):
        write_video(videos / f"{videoid}.mp4", square_clip(8, start=k))
    (tmp_path / "Captions").mkdir()
    pd.DataFrame(rows, columns=["videoid", "name", "sub_category", "main_category"]).to_csv(
        tmp_path / "Captions" / "ChronoMagic-Bench-150.csv", index=False)
    return tmp_path, videos, rows


def test_chronomagic_layout(bench):
    root, videos, rows = bench
    items = video_folder_items(videos, root / "Captions" / "ChronoMagic-Bench-150.csv")
    assert items == [{"caption": rows[0][1], "video": str(videos / "3d_printing_08.mp4")},
                     {"caption": rows[1][1], "video": str(videos / "day2night_13.0.mp4")}]
    assert items.counts == {"rows": 2, "items": 2, "clips": 2, "uncaptioned": 0}
    assert video_folder_items(root) == items                 # the one csv in Captions/, the clips found below root


def test_generic_captions_and_pairs(tmp_path):
    write_video(tmp_path / "a.gif", square_clip(8))
    write_video(tmp_path / "b_frames", square_clip(8, start=2))
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file_name": "a.gif", "caption": "a"}) + "\n"
                                             + json.dumps({"file_name": "b_frames", "text": "b"}) + "\n")
    with pytest.raises(ValueError, match="row 2: caption must be a non-empty string"):
        video_folder_items(tmp_path)                          # the caption column is chosen once, for every row
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file_name": "a.gif", "caption": "a"}) + "\n"
                                             + json.dumps({"file_name": "b_frames", "caption": "b"}) + "\n")
    assert [it["video"] for it in video_folder_items(tmp_path)] == [str(tmp_path / "a.gif"), str(tmp_path / "b_frames")]
    pd.DataFrame({"file_name_w": ["a.gif"], "file_name_l": ["b_frames"], "prompt": ["a beats b"]}).to_csv(
        tmp_path / "pairs.csv", index=False)
    pairs = video_folder_items(tmp_path, "pairs.csv")
    assert pairs == [{"caption": "a beats b", "video_w": str(tmp_path / "a.gif"), "video_l": str(tmp_path / "b_frames")}]
    assert video_folder_items(tmp_path, "pairs.csv", mode="winners") == [{"caption": "a beats b",
                                                                          "video": str(tmp_path / "a.gif")}]


def test_caption_row_without_clip_is_an_error(bench):
    root, videos, _ = bench
    f = root / "Captions" / "ChronoMagic-Bench-150.csv"
    (videos / "day2night_13.0.mp4").unlink()
    with pytest.raises(FileNotFoundError) as e:
        video_folder_items(videos, f)
    msg = str(e.value)
    assert "ChronoMagic-Bench-150.csv names 1 clip(s) not found under" in msg
    assert "['day2night_13.0']" in msg and "found ['3d_printing_08.mp4']" in msg


def test_clip_without_caption_is_an_error_unless_ignored(bench):
    root, videos, _ = bench
    f = root / "Captions" / "ChronoMagic-Bench-150.csv"
    write_video(videos / "extra" / "animal_04.mp4", square_clip(8))
    with pytest.raises(ValueError, match=r"1 clip\(s\) under .* have no caption in .*ChronoMagic-Bench-150\.csv: "
                                         r"\['extra/animal_04\.mp4'\]"):
        video_folder_items(videos, f)
    items = video_folder_items(videos, f, uncaptioned="ignore")
    assert len(items) == 2 and items.counts["uncaptioned"] == 1


def test_folder_and_captions_faults(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no clips"):
        video_folder_items(tmp_path)
    write_video(tmp_path / "a.gif", square_clip(8))
    with pytest.raises(FileNotFoundError, match="no captions file in"):
        video_folder_items(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.csv not found"):
        video_folder_items(tmp_path, "missing.csv")
    (tmp_path / "captions.csv").write_text("file_name,title\na.gif,a square\n")
    with pytest.raises(ValueError, match=r"no caption column; expected one of .*found \['file_name', 'title'\]"):
        video_folder_items(tmp_path)
    (tmp_path / "captions.csv").write_text("clip,caption\na.gif,a square\n")
    with pytest.raises(ValueError, match=r"no clip column; expected one of \['file_name', 'file_name_w', 'videoid'\]"):
        video_folder_items(tmp_path)


# --- frames ----------------------------------------------------------------------------------------------------

def test_frame_indices_determinism_range_and_stride():
    a = [frame_indices(20, 4, stride=3, seed=7, epoch=e, index=i) for e in range(5) for i in range(10)]
    assert a == [frame_indices(20, 4, stride=3, seed=7, epoch=e, index=i) for e in range(5) for i in range(10)]
    for idx in a:
        assert np.diff(idx).tolist() == [3, 3, 3] and idx[0] >= 0 and idx[-1] <= 19
    starts = {frame_indices(20, 4, 3, seed=7, epoch=e, index=i)[0] for e in range(40) for i in range(20)}
    assert starts == set(range(20 - 10 + 1))                  # every valid start occurs
    assert len({tuple(frame_indices(20, 4, 3, seed=s)) for s in range(10)}) > 1
    assert frame_indices(20, 4, 3, seed=7, epoch=3, index=5, random_start=False) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match=r"clip has 9 frames, needs 10 \(num_frames=4, stride=3\)"):
        frame_indices(9, 4, 3)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        frame_indices(9, 4, 0)


# --- the dataset -----------------------------------------------------------------------------------------------

def test_sample_is_the_chosen_frames_channels_first(clips):
    ds = VideoDataset(items_of(clips, "wide.gif"), num_frames=4, resolution=8, frame_stride=2)
    ds.set_epoch(3)
    s = ds[0]
    assert shapes(s) == {"pixel_values": (3, 4, 8, 8)} and (s["index"], s["skipped"]) == (0, 0)
    idx = frame_indices(10, 4, 2, seed=0, epoch=3, index=0)
    by_hand = torch.stack([to_pixels(resize_crop(Image.fromarray(f), 8)) for f in read_video(clips / "wide.gif", idx)], 1)
    assert torch.equal(s["pixel_values"], by_hand)
    fresh = VideoDataset(items_of(clips, "wide.gif"), 4, 8, frame_stride=2)  # another process, the same epoch
    fresh.set_epoch(3)
    assert torch.equal(fresh[0]["pixel_values"], s["pixel_values"])


def test_one_crop_for_all_frames(clips):
    ds = VideoDataset(items_of(clips, "still.gif", "wide.gif"), 4, 8, center_crop=False, random_flip=True, seed=0)
    crops = set()
    for e in range(6):
        ds.set_epoch(e)
        p = ds[0]["pixel_values"]
        assert torch.equal(p, p[:, :1].expand_as(p))          # identical frames stay identical
        crops.add(tuple(p[:, 0].flatten().tolist()))
        a = augment_draws(0, e, 1)
        frames = read_video(clips / "wide.gif", frame_indices(10, 4, 1, seed=0, epoch=e, index=1))
        by_hand = torch.stack([to_pixels(resize_crop(Image.fromarray(f), 8, (a.crop_y, a.crop_x))) for f in frames], 1)
        assert torch.equal(ds[1]["pixel_values"], by_hand.flip(-1) if a.flip < 0.5 else by_hand)
    assert len(crops) > 1                                     # the crop (or flip) does change between epochs


def test_flip_mirrors_every_frame(clips):
    plain = VideoDataset(items_of(clips, "wide.gif"), 4, 8, random_start=False)
    flipping = VideoDataset(items_of(clips, "wide.gif"), 4, 8, random_flip=True, random_start=False)
    seen = set()
    for e in range(8):
        plain.set_epoch(e)
        flipping.set_epoch(e)
        flip = augment_draws(0, e, 0).flip < 0.5
        seen.add(flip)
        p, q = plain[0]["pixel_values"], flipping[0]["pixel_values"]
        assert torch.equal(q, p.flip(-1) if flip else p)
        assert not torch.equal(p.flip(-1), p)                 # the clip is not mirror-symmetric
    assert seen == {True, False}


def test_pairs_share_frames_crop_and_flip(clips):
    pair = [{"caption": "same", "video_w": str(clips / "wide.gif"), "video_l": str(clips / "wide.gif")},
            {"caption": "moving beats still", "video_w": str(clips / "wide.gif"), "video_l": str(clips / "still.gif")}]
    ds = VideoDataset(pair, 4, 8, center_crop=False, random_flip=True, seed=0)
    assert ds.mode == "pairs"
    for e in range(4):
        ds.set_epoch(e)
        s = ds[0]
        assert shapes(s) == {"pixel_values_w": (3, 4, 8, 8), "pixel_values_l": (3, 4, 8, 8)}
        assert torch.equal(s["pixel_values_w"], s["pixel_values_l"])
        assert not torch.equal(ds[1]["pixel_values_w"], ds[1]["pixel_values_l"])


def test_short_clip_is_skipped_and_counted_or_raises(clips, caplog):
    items = items_of(clips, "wide.gif", "short.gif", "still.gif")
    ds = VideoDataset(items, num_frames=4, resolution=8)
    with caplog.at_level(logging.WARNING, logger="seppo.core.data"):
        s = ds[1]
    assert (s["caption"], s["skipped"], ds.num_skipped, ds.skipped_indices) == ("clip still.gif", 1, 1, [1])
    assert f"clip {clips / 'short.gif'} has 3 frames, needs 4 (num_frames=4, stride=1)" in caplog.text
    assert VideoDataset(items, 3, 8)[1]["caption"] == "clip short.gif"            # 3 frames are enough for 3
    with pytest.raises(ValueError, match=r"item 1: clip .*short\.gif has 3 frames, needs 5 \(num_frames=3, stride=2\)"):
        VideoDataset(items, 3, 8, frame_stride=2, on_error="raise")[1]


def test_container_promising_more_frames_than_decode(clips, monkeypatch):
    """An mp4 edit list can drop frames the container has packets for: the sample is drawn again from the frames that
    decode, and a clip that decodes too few is short."""
    import seppo.core.video_data as vd
    real = vd.count_frames
    monkeypatch.setattr(vd, "count_frames", lambda path, decode=False: real(path, decode) + (0 if decode else 2))
    assert any(frame_indices(12, 4, 3, seed=0, epoch=e, index=0)[0] > 0 for e in range(8))
    ds = VideoDataset(items_of(clips, "wide.gif"), 4, 8, frame_stride=3)
    by_hand = torch.stack([to_pixels(resize_crop(Image.fromarray(f), 8))
                           for f in read_video(clips / "wide.gif", [0, 3, 6, 9])], 1)
    for e in range(8):
        ds.set_epoch(e)
        assert torch.equal(ds[0]["pixel_values"], by_hand)   # 10 frames decode: 0 is the only valid start
    with pytest.raises(ValueError, match=r"short\.gif has 3 frames, needs 5"):
        VideoDataset(items_of(clips, "short.gif"), 3, 8, frame_stride=2, on_error="raise")[0]


def test_unreadable_clip_is_skipped_or_raises(clips, caplog):
    items = items_of(clips, "junk.mp4", "wide.gif")
    with caplog.at_level(logging.WARNING, logger="seppo.core.data"):
        s = VideoDataset(items, 4, 8)[0]
    assert (s["caption"], s["skipped"]) == ("clip wide.gif", 1)
    assert "junk.mp4" in caplog.text and "cannot decode video" in caplog.text
    with pytest.raises(ValueError, match=r"item 0: cannot read video: UnreadableVideoError: cannot decode video .*junk"):
        VideoDataset(items, 4, 8, on_error="raise")[0]


def test_verify_and_skipped_state_round_trip(clips, caplog):
    items = items_of(clips, "wide.gif", "short.gif", "junk.mp4", "still.gif")
    first = VideoDataset(items, 4, 8)
    with caplog.at_level(logging.WARNING, logger="seppo.core.data"):
        assert first[1]["skipped"] == 2
    state = first.skipped_state()
    assert [j for j, _ in state] == [1, 2] and "has 3 frames" in state[0][1] and "junk.mp4" in state[1][1]
    resumed = VideoDataset(items, 4, 8)
    resumed.restore_skipped(json.loads(json.dumps(state)))  # as a checkpoint stores it
    assert resumed.skipped_state() == state
    (clips / "later.gif").write_bytes((clips / "wide.gif").read_bytes())
    resumed.items[1] = resumed.items[2] = {"caption": "readable now", "video": str(clips / "later.gif")}
    s = resumed[1]                                          # known bad items are passed over, not decoded again
    assert (s["caption"], s["skipped"], resumed.num_skipped) == ("clip still.gif", 2, 2)
    checked = VideoDataset(items, 4, 8)
    with caplog.at_level(logging.WARNING, logger="seppo.core.data"):
        assert checked.verify() == 2
    assert [it["caption"] for it in checked.items] == ["clip wide.gif", "clip still.gif"]


def test_collate_stacks_clips_channels_then_frames(clips):
    loader = torch.utils.data.DataLoader(VideoDataset(items_of(clips, "wide.gif", "still.gif"), 4, 8), batch_size=2,
                                         collate_fn=collate)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 3, 4, 8, 8)
    assert batch["index"].tolist() == [0, 1] and batch["caption"] == ["clip wide.gif", "clip still.gif"]


# --- cached latents --------------------------------------------------------------------------------------------

def encode_fn(x):
    assert x.ndim == 4 and x.shape[1] == 3, x.shape           # frames, never clips
    return F.avg_pool2d(x, 2)


def test_encode_clips_frame_by_frame(clips):
    batch = collate([VideoDataset(items_of(clips, "wide.gif", "still.gif"), 4, 8)[i] for i in range(2)])["pixel_values"]
    z = encode_clips(encode_fn, batch, batch_size=3)        # chunks that straddle the two clips
    assert z.shape == (2, 3, 4, 4, 4)
    for b in range(2):
        for f in range(4):
            assert torch.equal(z[b, :, f], encode_fn(batch[b, :, f][None])[0])
    with pytest.raises(ValueError, match=r"\(B, C, F, H, W\) tensor, found \(3, 4, 8, 8\)"):
        encode_clips(encode_fn, batch[0])


def test_precompute_video_latents_matches_live_and_saves_5d(clips, tmp_path, caplog):
    items = items_of(clips, "wide.gif", "junk.mp4", "still.gif")
    src = VideoDataset(items, 4, 8, frame_stride=2, random_flip=True, empty_prompt_prob=0.5, seed=3, random_start=False)
    with caplog.at_level(logging.WARNING, logger="seppo.core.data"):
        lds = precompute_video_latents(src, encode_fn, batch_size=3)
    assert {k: tuple(v.shape) for k, v in lds.tensors.items()} == {"latents": (2, 3, 4, 4, 4),
                                                                  "latents_flip": (2, 3, 4, 4, 4)}
    assert (lds.meta["source_indices"], lds.meta["num_skipped"], lds.captions) == ([0, 2], 1,
                                                                                  ["clip wide.gif", "clip still.gif"])
    live = VideoDataset(items_of(clips, "wide.gif", "still.gif"), 4, 8, frame_stride=2, random_flip=True,
                        empty_prompt_prob=0.5, seed=3, random_start=False)
    lds.save(tmp_path / "cache" / "clips.safetensors")
    back = LatentDataset.load(tmp_path / "cache" / "clips.safetensors")
    assert back.meta["num_frames"] == 4 and back.meta["frame_stride"] == 2
    for e in range(3):
        live.set_epoch(e)
        back.set_epoch(e)
        for i in range(2):
            s, z = live[i], back[i]
            per_frame = encode_fn(s["pixel_values"].transpose(0, 1)).transpose(0, 1)   # (c, F, h, w) by hand
            torch.testing.assert_close(z["latents"], per_frame)
            assert (z["caption"], z["index"]) == (s["caption"], s["index"])
    assert collate([back[0], back[1]])["latents"].shape == (2, 3, 4, 4, 4)


def test_precompute_pairs_and_refusals(clips):
    pair = [{"caption": "p", "video_w": str(clips / "wide.gif"), "video_l": str(clips / "still.gif")}]
    lds = precompute_video_latents(VideoDataset(pair, 4, 8, random_start=False), encode_fn)
    assert sorted(lds.tensors) == ["latents_l", "latents_w"] and lds.tensors["latents_w"].shape == (1, 3, 4, 4, 4)
    assert lds.mode == "pairs"
    with pytest.raises(ValueError, match="random starts cannot be cached: a cached clip fixes its frames"):
        precompute_video_latents(VideoDataset(pair, 4, 8), encode_fn)
    with pytest.raises(ValueError, match="random crops cannot be cached"):
        precompute_video_latents(VideoDataset(pair, 4, 8, center_crop=False, random_start=False), encode_fn)
    with pytest.raises(ValueError, match="every one of the 1 items is unreadable"):
        precompute_video_latents(VideoDataset(items_of(clips, "short.gif"), 4, 8, random_start=False), encode_fn)
