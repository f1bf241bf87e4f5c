"""The world's video half: motion flaws, motion terms, the video oracle, clip pairs, and the FVD / LPIPS analogues."""
import numpy as np
import pytest

from seppo.eval.scorers import SCORERS, get_scorer
from seppo.world.scene import WorldConfig, render_clip, sample_base, split_prompts
from seppo.world.clips import (CLIP_FEATURE_BLOCKS, MOTION_FLAWS, VIDEO_ORACLE_WEIGHTS, clip_features, clip_frechet,
                               clip_oracle_scores, clip_oracle_terms, clip_path, clip_perceptual, draw_motion_flaw,
                               image_flaw_drops, label_clip_pairs, mean_flaw_drop, motion_terms, offpolicy_clips,
                               render_path, sample_base_clip, track_object)

CFG = WorldConfig()
NO_IMAGE_FLAWS = WorldConfig(flaw_rate=0)
PROMPTS = split_prompts(CFG, motion=True)["train"][5::7][:30]   # every shape, colour, size, background and direction
STILL = "a small red circle on a dark background"


def flawed(kind, prompts=PROMPTS, frames=8, seed=100):
    return np.stack([sample_base_clip(q, seed + i, NO_IMAGE_FLAWS, 1.0, frames, (kind,))[0] for i, q in enumerate(prompts)])


@pytest.fixture(scope="module")
def clean():
    return np.stack([render_clip(q, 8, seed=50 + i) for i, q in enumerate(PROMPTS)])


@pytest.fixture(scope="module")
def sets(clean):
    return {"clean": clean, **{k: flawed(k) for k in MOTION_FLAWS}}


def test_prompts_cover_every_direction():
    assert {q.rsplit(" ", 1)[1] for q in PROMPTS} == set(CFG.directions) and len(PROMPTS) == 30


def test_sample_base_clip_is_a_pure_function_and_extends_sample_base():
    for i, q in enumerate(PROMPTS[:6]):
        a, ra = sample_base_clip(q, i)
        b, rb = sample_base_clip(q, i)
        assert (a == b).all() and ra == rb
        c, rc = sample_base_clip(q, i, motion_flaw_rate=0.0)
        d, rd = sample_base(q, i)
        assert (c == d).all() and rc == rd
        assert {k: v for k, v in ra.items() if k not in MOTION_FLAWS} == rc   # image flaws unchanged by the motion draw
    recs = [sample_base_clip(q, s)[1] for q in PROMPTS for s in range(4)]
    rate = np.mean([any(k in r for k in MOTION_FLAWS) for r in recs])
    assert 0.15 < rate < 0.45
    always = [sample_base_clip(q, s, motion_flaw_rate=1.0, motion_kinds=("static",))[1] for q in PROMPTS[:5] for s in range(2)]
    assert all(r.get("static") is True for r in always)
    assert not any(any(k in sample_base_clip(q, s, motion_flaw_rate=0.0)[1] for k in MOTION_FLAWS)
                   for q in PROMPTS[:5] for s in range(3))


def test_sample_base_clip_options_and_errors():
    q = PROMPTS[0]
    assert sample_base_clip(q, 0, num_frames=5)[0].shape == (5, 16, 16, 3)
    assert sample_base_clip(q, 0, WorldConfig(num_frames=6))[0].shape == (6, 16, 16, 3)
    assert sample_base_clip(q, 0, motion_flaw_rate=0.0, motion_kinds=())[0].shape == (8, 16, 16, 3)
    with pytest.raises(ValueError, match="names no direction"): sample_base_clip(STILL, 0)
    with pytest.raises(ValueError, match="at least 3"): sample_base_clip(q, 0, num_frames=2)
    with pytest.raises(ValueError, match="motion_flaw_rate"): sample_base_clip(q, 0, motion_flaw_rate=-0.1)
    with pytest.raises(ValueError, match="unknown motion flaw"): sample_base_clip(q, 0, motion_kinds=("wobbly",))
    with pytest.raises(ValueError, match="motion_kinds is empty"): sample_base_clip(q, 0, motion_kinds=())


def test_render_path_is_render_clip_on_the_straight_path():
    q = PROMPTS[3]
    direction = q.rsplit(" ", 1)[1]
    for F in (3, 8):
        assert (render_path(q, clip_path(direction, F), 7, {"blur": 1.0}) == render_clip(q, F, 7, {"blur": 1.0})).all()
    with pytest.raises(ValueError, match=r"\(F, 2\)"): render_path(q, np.zeros(8))
    assert (render_path(q, clip_path(direction, 5)) == render_clip(q, 5)).all()              # no seed: no jitter
    assert np.allclose(clip_path("down", 3, t=[0.5, 0.5, -1.0]), [[0, 1.6], [0, 1.6], [0, -3.2]])


def test_clip_batch_errors():
    from seppo.world.clips import clip_batch
    clip = render_clip(PROMPTS[0], 4)
    assert clip_batch(clip).shape == (1, 4, 16, 16, 3) and clip_batch([clip, clip]).shape == (2, 4, 16, 16, 3)
    with pytest.raises(ValueError, match="a clip is"): clip_batch([clip[0], clip[1]])
    with pytest.raises(ValueError, match="differ in shape"): clip_batch([clip, clip[:3]])
    with pytest.raises(ValueError, match="no clips"): clip_batch([])
    with pytest.raises(ValueError, match="uint8"): clip_batch(clip / 255)
    with pytest.raises(ValueError, match=r"\(N, F, H, W, 3\)"): clip_batch(clip[..., :2])


def test_draw_motion_flaw():
    path, other = draw_motion_flaw("wrong_direction", "left", 6, 0)
    assert other != "left" and np.allclose(path, clip_path(other, 6))
    assert np.array_equal(draw_motion_flaw("static", "up", 4, 0)[0], np.zeros((4, 2)))
    for F in (3, 4, 8):
        path, t = draw_motion_flaw("jerky", "right", F, F)
        assert t[0] == -1 and t[-1] == 1 and len(t) == F and np.allclose(path[:, 0], 3.2 * np.array(t), atol=1e-3)
        step = 2 / (F - 1)                                              # every step is off by at least ¾ of a step
        assert np.abs(np.diff(t) - step).min() >= 0.75 * step - 1e-3
    with pytest.raises(ValueError, match="second direction"):
        draw_motion_flaw("wrong_direction", "left", 6, 0, WorldConfig(directions=("left",)))
    with pytest.raises(ValueError, match="at least 3 frames"): draw_motion_flaw("jerky", "left", 2, 0)


def test_each_motion_flaw_is_caught_by_its_term(sets):
    mt = {k: motion_terms(v, PROMPTS) for k, v in sets.items()}
    assert mt["clean"]["direction"].min() > 0.9 and mt["clean"]["smoothness"].min() > 0.9
    assert mt["wrong_direction"]["direction"].max() < 0.1 and mt["wrong_direction"]["smoothness"].mean() > 0.9
    assert mt["static"]["direction"].max() < 0.1 and mt["static"]["smoothness"].mean() > 0.9
    assert mt["jerky"]["smoothness"].max() < 0.3 and mt["jerky"]["direction"].mean() > 0.9


def test_motion_terms_are_robust_to_image_flaws_and_short_clips():
    base = np.stack([sample_base_clip(q, i, motion_flaw_rate=0.0)[0] for i, q in enumerate(PROMPTS)])
    m = motion_terms(base, PROMPTS)
    assert m["direction"].mean() > 0.9 and m["smoothness"].mean() > 0.9
    short = np.stack([render_clip(q, 4, seed=i) for i, q in enumerate(PROMPTS)])
    assert motion_terms(short, PROMPTS)["smoothness"].min() > 0.9
    assert motion_terms(flawed("jerky", frames=4), PROMPTS)["smoothness"].mean() < 0.3


def test_motion_terms_errors_and_blank_clips(clean):
    with pytest.raises(ValueError, match="names no direction"): motion_terms(clean[:1], [STILL])
    with pytest.raises(ValueError, match="at least 3 frames"): motion_terms(clean[:, :2], PROMPTS)
    with pytest.raises(ValueError, match="2 clips but 3 prompts"): motion_terms(clean[:2], PROMPTS[:3])
    with pytest.raises(ValueError, match="uint8"): motion_terms(clean.astype(float), PROMPTS)
    blank = np.full((2, 5, 16, 16, 3), 30, np.uint8)
    m = motion_terms(blank, PROMPTS[:2])
    assert (m["direction"] == 0).all() and (m["smoothness"] == 0).all()
    assert not track_object(blank)[1].any()


def test_weights_follow_the_measured_image_flaw_cost(sets):
    drops = image_flaw_drops(CFG)
    cost = mean_flaw_drop(drops, CFG)
    assert set(drops) == set(CFG.flaw_mix) - {"wrong_position"} and all(0.4 < v < 1.5 for v in drops.values())
    few = image_flaw_drops(CFG, [STILL, "a large blue square on a light background"], seed=1)
    assert set(few) == set(drops) and few != drops
    assert abs(VIDEO_ORACLE_WEIGHTS["direction"] - cost) <= 0.05 and abs(VIDEO_ORACLE_WEIGHTS["smoothness"] - cost) <= 0.05
    scores = {k: clip_oracle_scores(v, PROMPTS) for k, v in sets.items()}
    for k in MOTION_FLAWS:
        assert abs((scores["clean"] - scores[k]).mean() - cost) < 0.25, k


def test_oracle_ranks_clean_above_one_flaw(clean, sets):
    s_clean = clip_oracle_scores(clean, PROMPTS)
    for flaws in ({"blur": 1.0}, {"noise": 30.0}, {"off_centre": (3.0, 2.0)}, {"low_contrast": 0.4}):
        one = np.stack([render_clip(q, 8, seed=50 + i, flaws=flaws) for i, q in enumerate(PROMPTS)])
        assert s_clean.mean() - clip_oracle_scores(one, PROMPTS).mean() > 0.4, flaws
    for k in MOTION_FLAWS: assert (s_clean > clip_oracle_scores(sets[k], PROMPTS)).mean() > 0.9
    terms = clip_oracle_terms(clean, PROMPTS)
    assert terms["centred"].mean() > 0.95                                # moving is not off-centre
    off = np.stack([render_clip(q, 8, seed=i, flaws={"off_centre": (3.5, 0.0)}) for i, q in enumerate(PROMPTS)])
    assert clip_oracle_terms(off, PROMPTS)["centred"].mean() < 0.6


def test_oracle_weights_option(clean):
    base = clip_oracle_scores(clean[:4], PROMPTS[:4])
    no_motion = clip_oracle_scores(clean[:4], PROMPTS[:4], weights={"direction": 0.0, "smoothness": 0.0})
    assert np.allclose(base - no_motion, sum(VIDEO_ORACLE_WEIGHTS.values()), atol=0.05)
    doubled = clip_oracle_scores(clean[:4], PROMPTS[:4], weights={"direction": 2 * VIDEO_ORACLE_WEIGHTS["direction"]})
    assert np.allclose(doubled - base, VIDEO_ORACLE_WEIGHTS["direction"], atol=0.05)
    with pytest.raises(ValueError, match="unknown motion term"): clip_oracle_scores(clean[:1], PROMPTS[:1], weights={"speed": 1})


def test_offpolicy_clips_are_pure_functions_of_seed_and_row():
    a, na = offpolicy_clips(PROMPTS[:8], seed=3)
    b, nb = offpolicy_clips(PROMPTS[:8], seed=3)
    assert (a == b).all() and na == nb and set(na) <= {"mixed", "sloppy", "unfaithful"}
    part, _ = offpolicy_clips(PROMPTS[4:6], seed=3, rows=[4, 5])
    assert (part == a[4:6]).all()
    assert not (offpolicy_clips(PROMPTS[:8], seed=4)[0] == a).all()
    c, nc = offpolicy_clips(PROMPTS[:4], seed=3, source="clean", num_frames=4)
    assert c.shape == (4, 4, 16, 16, 3) and nc == ["clean_render"] * 4
    assert (c == offpolicy_clips(PROMPTS[:4], seed=3, source="clean", num_frames=4)[0]).all()
    assert offpolicy_clips([], seed=0)[0].shape == (0, 8, 16, 16, 3)
    with pytest.raises(ValueError, match="`contributors` or `clean`"): offpolicy_clips(PROMPTS[:1], 0, source="base_model")
    with pytest.raises(ValueError, match="names no direction"): offpolicy_clips([STILL], 0, source="clean")
    with pytest.raises(ValueError, match="names no direction"): offpolicy_clips([STILL], 0)
    with pytest.raises(ValueError, match="1 prompts but 2 rows"): offpolicy_clips(PROMPTS[:1], 0, rows=[0, 1])


def test_contributors_make_their_kinds_of_motion_flaw():
    prompts = PROMPTS * 3
    clips, names = offpolicy_clips(prompts, seed=0)
    m = motion_terms(clips, prompts)
    names = np.array(names)
    assert m["smoothness"][names == "unfaithful"].min() > 0.9           # unfaithful contributors never stutter
    assert m["direction"][names == "sloppy"].min() > 0.9                # sloppy ones always move the right way
    assert (m["smoothness"][names == "sloppy"] < 0.3).any() and (m["direction"][names == "unfaithful"] < 0.1).any()


def test_labels_follow_the_oracle(clean):
    flawed_clips, _ = offpolicy_clips(PROMPTS, seed=1)
    df = label_clip_pairs(PROMPTS, clean, flawed_clips, CFG, seed=0, temperature=0)
    assert list(df.columns) == ["caption", "oracle_0", "oracle_1", "label_0", "label_1"]
    expected = np.where(df.oracle_0 > df.oracle_1, 1.0, np.where(df.oracle_0 < df.oracle_1, 0.0, 0.5))
    assert (df.label_0.values == expected).all() and (df.label_0 + df.label_1 == 1).all()
    assert np.allclose(df.oracle_0, clip_oracle_scores(clean, PROMPTS))
    noisy = label_clip_pairs(PROMPTS, clean, flawed_clips, CFG, seed=0)          # cfg.oracle_temperature
    assert noisy.equals(label_clip_pairs(PROMPTS, clean, flawed_clips, None, seed=0))
    assert set(noisy.label_0) <= {0.0, 1.0}
    hot = [label_clip_pairs(PROMPTS, clean, flawed_clips, CFG, seed=s, temperature=100.0).label_0.mean() for s in range(4)]
    assert 0.25 < np.mean(hot) < 0.75                                  # a hot oracle is close to a coin
    with pytest.raises(ValueError, match="differ in shape"): label_clip_pairs(PROMPTS[:2], clean[:2], clean[:2, :4], CFG)


def test_frechet_is_zero_on_the_same_set_and_orders_clean_below_flawed(sets):
    ref, _ = offpolicy_clips(PROMPTS * 2, seed=10, source="clean")
    other, _ = offpolicy_clips(PROMPTS * 2, seed=11, source="clean")
    assert clip_frechet(ref, ref) < 1e-8
    clean_fd = clip_frechet(ref, other)
    for k in ("static", "jerky"):
        assert clip_frechet(ref, flawed(k, PROMPTS * 2)) > 2 * clean_fd, k
    assert clip_frechet(ref, offpolicy_clips(PROMPTS * 2, seed=12)[0]) > 2 * clean_fd
    assert abs(clip_frechet(ref, other) - clip_frechet(other, ref)) < 1e-6
    f = clip_features(ref[:3])
    assert f.shape == (3, 254) and CLIP_FEATURE_BLOCKS["motion"].stop == 254
    with pytest.raises(ValueError, match="at least 2 frames"): clip_features(ref[:, :1])


def test_perceptual_distance(clean, sets):
    d0 = clip_perceptual(clean, clean)
    assert d0.shape == (30,) and (d0 == 0).all()
    d = clip_perceptual(clean, sets["static"])
    assert (d > 0).all() and np.allclose(d, clip_perceptual(sets["static"], clean), rtol=0, atol=1e-12)
    q = PROMPTS[0]
    truth = render_clip(q, 8)
    near = clip_perceptual(truth, render_clip(q, 8, seed=1))[0]
    far = [clip_perceptual(truth, render_clip(q, 8, seed=1, flaws=f))[0] for f in ({"blur": 1.2}, {"noise": 30})]
    assert 0 < near < min(far)
    with pytest.raises(ValueError, match="same shape"): clip_perceptual(clean[:2], clean[:3])
    with pytest.raises(ValueError, match="even sides"): clip_perceptual(np.zeros((1, 3, 15, 15, 3), np.uint8), np.zeros((1, 3, 15, 15, 3), np.uint8))


def test_scorers_are_registered(clean, sets):
    assert {"world_video_oracle", "world_motion_direction", "world_motion_smoothness"} <= set(SCORERS)
    oracle = get_scorer("world_video_oracle", batch_size=7)
    assert np.allclose(oracle(clean, PROMPTS), clip_oracle_scores(clean, PROMPTS))
    assert np.allclose(oracle(list(clean[:3]), PROMPTS[:3]), clip_oracle_scores(clean[:3], PROMPTS[:3]))
    assert oracle(clean[:2], PROMPTS[0]).shape == (2,) and oracle([], []).shape == (0,)
    assert (get_scorer("world_motion_direction")(sets["static"], PROMPTS) < 0.1).all()
    assert (get_scorer("world_motion_smoothness", batch_size=4)(sets["jerky"], PROMPTS) < 0.3).all()
    pcfg = WorldConfig(motion_amplitude_frac=0.1)
    slow = np.stack([render_clip(q, 8, seed=i, cfg=pcfg) for i, q in enumerate(PROMPTS[:4])])
    assert (get_scorer("world_motion_direction")(slow, PROMPTS[:4]) < 0.8).all()     # half the default travel
    assert (get_scorer("world_motion_direction", cfg=pcfg)(slow, PROMPTS[:4]) > 0.9).all()
    for name in ("world_video_oracle", "world_motion_direction", "world_motion_smoothness"):
        with pytest.raises(ValueError, match="takes no path"): get_scorer(name, "/some/path")
    with pytest.raises(ValueError, match="2 clips but 3 prompts"): oracle(clean[:2], PROMPTS[:3])
    with pytest.raises(ValueError, match="names no direction"): oracle(clean[:1], [STILL])


def test_world_analogues_are_video_metrics():
    import seppo.world.clips  # noqa: F401  (registers them)
    from seppo.eval.video_metrics import VIDEO_METRICS, evaluate_clips, get_video_metric
    from seppo.world.scene import render_clip, split_prompts
    assert {"world_perceptual", "world_fvd"} <= set(VIDEO_METRICS)
    prompts = split_prompts(motion=True)["train"][:6]
    truth = np.stack([render_clip(p, 4) for p in prompts])
    shifted = np.roll(truth, 1, axis=1)                                 # the frames one step late
    m = {n: get_video_metric(n) for n in ("world_perceptual", "world_fvd")}
    same, late = evaluate_clips(truth, truth, m), evaluate_clips(shifted, truth, m)
    assert same["world_perceptual"] == 0 and abs(same["world_fvd"]) < 1e-6
    assert late["world_perceptual"] > 0 and late["world_fvd"] > 1e-3
    with pytest.raises(ValueError, match="takes no path"): get_video_metric("world_fvd", "/some/path")
