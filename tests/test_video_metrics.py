"""The paper's text-to-video metrics (seppo.eval.video_metrics): parity with the reference implementations, the weight
file layouts, the feature-net call conventions, the registry and its errors."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from seppo.eval import video_metrics as vm
from seppo.eval.distances import psnr

torch.set_num_threads(1)


def moving_clips(n=3, frames=4, side=32, step=2, seed=0, noise=0):
    """n uint8 clips: a bright square moving right `step` px a frame on a textured background."""
    rng = np.random.default_rng(seed)
    clips = rng.integers(20, 60, (n, frames, side, side, 3)).astype(np.int64)
    for i in range(n):
        x0, y0 = rng.integers(1, side // 3, 2)
        for f in range(frames):
            clips[i, f, y0:y0 + side // 4, x0 + step * f:x0 + step * f + side // 4] = (210, 90, 40)
    if noise: clips = clips + rng.integers(-noise, noise + 1, clips.shape)
    return np.clip(clips, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips():
    a = moving_clips(seed=0)
    return a, moving_clips(seed=1, noise=25), np.clip(a.astype(int) + 50, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- PSNR / SSIM

def test_psnr_per_frame_matches_skimage_and_world_psnr(clips):
    metrics = pytest.importorskip("skimage.metrics")
    a, b, _ = clips
    ref = np.array([[metrics.peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(ca, cb)] for ca, cb in zip(a, b)])
    np.testing.assert_allclose(vm.frame_psnr(a, b), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(vm.clip_psnr(a, b), ref.mean(1), rtol=0, atol=1e-10)
    assert vm.frame_psnr(a, b)[1, 2] == psnr(a[1, 2], b[1, 2])
    # the mean of per-frame PSNRs is not the PSNR of the whole clip when the frames' errors differ
    off = a[0].copy(); off[:3] = np.clip(off[:3].astype(int) + 1, 0, 255); off[3] = 255 - off[3]
    assert vm.clip_psnr(off, a[0])[0] > psnr(off, a[0]) + 10


def test_psnr_identical_is_inf_unless_capped(clips):
    a, b, _ = clips
    assert np.isinf(vm.clip_psnr(a, a)).all()
    np.testing.assert_array_equal(vm.clip_psnr(a, a, max_db=100), np.full(3, 100.0))
    mixed = b.copy(); mixed[:, 0] = a[:, 0]                      # first frame exact, the others not
    per_frame = vm.frame_psnr(mixed, a)
    assert np.isinf(per_frame[:, 0]).all() and np.isfinite(per_frame[:, 1:]).all()
    np.testing.assert_allclose(vm.clip_psnr(mixed, a, max_db=60), (60 + per_frame[:, 1:].sum(1)) / 4)
    assert vm.video_psnr(a, a, max_db="100")["psnr"].tolist() == [100.0] * 3    # spec options arrive as strings


def test_ssim_per_frame_matches_skimage(clips):
    metrics = pytest.importorskip("skimage.metrics")
    a, b, c = clips
    rect_a, rect_b = a[:, :, :, 3:27], b[:, :, :, 3:27]         # 32 × 24 frames: H and W must not be swapped
    for p, t in ((a, b), (a, c), (rect_a, rect_b)):
        ref = np.array([[metrics.structural_similarity(x, y, channel_axis=-1, data_range=255, gaussian_weights=True,
                                                       sigma=1.5, use_sample_covariance=False)
                         for x, y in zip(cp, ct)] for cp, ct in zip(p, t)])
        np.testing.assert_allclose(vm.frame_ssim(p, t), ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(vm.clip_ssim(p, t), ref.mean(1), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(vm.clip_ssim(a, a), np.ones(3))


def square_clip(step=1, y0=4, frames=12, side=16):
    """A 5 px square moving right `step` px a frame on a flat background (step 0: a still clip)."""
    c = np.full((frames, side, side, 3), 40, np.uint8)
    for f in range(frames): c[f, y0:y0 + 5, 2 + step * f:7 + step * f] = (210, 90, 40)
    return c


def test_per_frame_ssim_is_not_a_3d_ssim():
    """A 3D SSIM (window across frames) equals the per-frame mean for still clips, not when a clip moves."""
    metrics = pytest.importorskip("skimage.metrics")
    kw = dict(channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    still_a, still_b, moving = square_clip(0), square_clip(0, y0=7), square_clip(1)
    assert abs(metrics.structural_similarity(still_a, still_b, **kw) - vm.clip_ssim(still_a, still_b)[0]) < 1e-9
    assert abs(metrics.structural_similarity(moving, still_a, **kw) - vm.clip_ssim(moving, still_a)[0]) > 0.05


def test_psnr_matches_torchmetrics_and_its_5d_ssim_is_another_metric():
    tm = pytest.importorskip("torchmetrics.functional.image")
    a, b = moving_clips(2, frames=12, side=16, step=1, seed=0), moving_clips(2, frames=12, side=16, step=1, seed=4)
    frames = lambda x: torch.from_numpy(x.reshape(-1, 16, 16, 3)).permute(0, 3, 1, 2).double()
    # SSIM's reference here is scikit-image (exact, test above); torchmetrics' 2D SSIM handles the borders its own
    # way and differs from both by about 0.01-0.1 on 16-px frames, so only its PSNR is a reference
    psnr2d = tm.peak_signal_noise_ratio(frames(a), frames(b), data_range=255.0, reduction="none", dim=(1, 2, 3))
    np.testing.assert_allclose(vm.frame_psnr(a, b).reshape(-1), psnr2d.numpy(), atol=1e-6)
    clips5d = lambda x: torch.from_numpy(x[None]).permute(0, 4, 1, 2, 3).double()   # (1, 3, F, H, W): a 3D SSIM
    moving, still = square_clip(1), square_clip(0)
    ssim3d = float(tm.structural_similarity_index_measure(clips5d(moving), clips5d(still), data_range=255.0))
    assert abs(vm.clip_ssim(moving, still)[0] - ssim3d) > 0.05


def test_clip_input_errors(clips):
    a, b, _ = clips
    with pytest.raises(ValueError, match="differ in shape"): vm.clip_ssim(a, b[:, :3])
    with pytest.raises(ValueError, match="must be uint8"): vm.clip_psnr(a.astype(np.float32), b)
    with pytest.raises(ValueError, match=r"found shape \(3, 4, 32, 32, 4\)"): vm.as_clips(np.zeros((3, 4, 32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="at least 11×11"): vm.clip_ssim(a[:, :, :10], b[:, :, :10])
    assert vm.as_clips(a[0]).shape == (1, 4, 32, 32, 3) and vm.as_clips([a[0], a[1]]).shape == (2, 4, 32, 32, 3)


# ---------------------------------------------------------------- LPIPS

TORCHVISION_ALEXNET_FEATURES = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
                                "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3)}


def _random_lpips_files(folder, suffix=".pth"):
    """torchvision-named AlexNet weights (with the classifier, as torchvision saves the whole model) and
    lpips-named heads, built from the documented names and shapes, not from seppo's modules."""
    g = torch.Generator().manual_seed(0)
    alex = {}
    for name, shape in TORCHVISION_ALEXNET_FEATURES.items():
        alex[f"{name}.weight"] = torch.randn(shape, generator=g) * (2 / np.prod(shape[1:])) ** 0.5
        alex[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    alex |= {"classifier.1.weight": torch.zeros(8, 4), "classifier.1.bias": torch.zeros(8)}
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 192, 384, 256, 256))}
    alex_file, lin_file = folder / f"alexnet-owt-7be5be79{suffix}", folder / f"alex{suffix}"
    if suffix == ".safetensors": save_file(alex, alex_file); save_file(heads, lin_file)
    else: torch.save(alex, alex_file); torch.save(heads, lin_file)
    return alex_file, lin_file, alex, heads


def _lpips_by_hand(alex, heads, a, b):
    """LPIPS v0.1 of two uint8 images (H, W, 3) written out with functional ops (torchvision AlexNet strides)."""
    shift, scale = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1), torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
    x = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = (x - shift) / scale
    conv = lambda x, i, **kw: torch.relu(F.conv2d(x, alex[f"features.{i}.weight"], alex[f"features.{i}.bias"], **kw))
    t1 = conv(x, 0, stride=4, padding=2)
    t2 = conv(F.max_pool2d(t1, 3, 2), 3, padding=2)
    t3 = conv(F.max_pool2d(t2, 3, 2), 6, padding=1)
    t4 = conv(t3, 8, padding=1)
    t5 = conv(t4, 10, padding=1)
    total = 0.0
    for k, t in enumerate((t1, t2, t3, t4, t5)):
        t = t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total += float((F.conv2d((t[0:1] - t[1:2]) ** 2, heads[f"lin{k}.model.1.weight"])).mean())
    return total


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_lpips_loads_torchvision_and_lpips_files(tmp_path, clips, suffix):
    a, b, _ = clips
    alex_file, lin_file, alex, heads = _random_lpips_files(tmp_path, suffix)
    model = vm.load_lpips(alex_file, lin_file, device="cpu")
    np.testing.assert_array_equal(vm.lpips_distance(model, a, a), np.zeros(3))
    d = vm.lpips_distance(model, a, b, batch_size=5)
    want = [np.mean([_lpips_by_hand(alex, heads, x, y) for x, y in zip(ca, cb)]) for ca, cb in zip(a, b)]
    np.testing.assert_allclose(d, want, rtol=1e-4)
    assert (d > 0).all()
    metric = vm.get_video_metric("lpips", str(alex_file), lin=str(lin_file), device="cpu", batch_size="4")
    np.testing.assert_allclose(metric(a, b)["lpips"], d, rtol=1e-5)


def test_lpips_weights_only_option(tmp_path, clips):
    a, b, _ = clips
    alex_file, lin_file, *_ = _random_lpips_files(tmp_path)
    for flag in ("true", "false", False):
        m = vm.get_video_metric("lpips", alex_file, lin=lin_file, device="cpu", weights_only=flag)
        assert m(a, a)["lpips"].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="expected a boolean"):
        vm.get_video_metric("lpips", alex_file, lin=lin_file, weights_only="maybe")


def test_lpips_wrong_keys_are_named(tmp_path):
    alex_file, lin_file, alex, heads = _random_lpips_files(tmp_path)
    torch.save(heads | {"lin5.model.1.weight": torch.zeros(1, 8, 1, 1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth \(LPIPS heads\).*unexpected keys: lin5\.model\.1\.weight"):
        vm.load_lpips(alex_file, tmp_path / "extra.pth")
    torch.save({k.replace("model.1", "model.0"): v for k, v in heads.items()}, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"missing keys: lin0\.model\.1\.weight"):
        vm.load_lpips(alex_file, tmp_path / "renamed.pth")
    torch.save({k: v for k, v in alex.items() if k != "features.8.bias"}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"short\.pth \(AlexNet\).*missing keys: features\.8\.bias"):
        vm.load_lpips(tmp_path / "short.pth", lin_file)
    torch.save(alex | {"features.3.weight": torch.zeros(192, 64, 3, 3)}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"features\.3\.weight expected \(192, 64, 5, 5\), found \(192, 64, 3, 3\)"):
        vm.load_lpips(tmp_path / "shape.pth", lin_file)


def test_lpips_frame_size_and_missing_weights(tmp_path, clips):
    a, *_ = clips
    alex_file, lin_file, *_ = _random_lpips_files(tmp_path)
    model = vm.load_lpips(alex_file, lin_file, device="cpu")
    with pytest.raises(ValueError, match="at least 31×31"): vm.lpips_distance(model, a[:, :, :30], a[:, :, :30])
    with pytest.raises(ValueError, match=r"video metric 'lpips' needs torchvision's AlexNet weights"):
        vm.get_video_metric("lpips")
    with pytest.raises(ValueError, match=r"video metric 'lpips' needs the LPIPS linear heads.*pass lpips=ALEXNET_FILE,lin=LIN_FILE"):
        vm.get_video_metric("lpips", alex_file)
    with pytest.raises(FileNotFoundError, match="nowhere.pth not found"):
        vm.load_lpips(tmp_path / "nowhere.pth", lin_file)


# ---------------------------------------------------------------- FID / FVD

class _Probe2D(nn.Module):
    """Inception-like call; its 'features' report what it was given: channel means, min, max, H, W, the flag."""
    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        B = x.shape[0]
        info = torch.tensor([float(x.shape[2]), float(x.shape[3]), float(return_features)]).repeat(B, 1)
        return torch.cat([x.mean((2, 3)), x.amin((1, 2, 3))[:, None], x.amax((1, 2, 3))[:, None], info], 1)


class _Probe3D(nn.Module):
    """I3D-like call on (B, 3, T, H, W); reports channel means, min, max, T, H, W and the three flags."""
    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> Tensor:
        B = x.shape[0]
        info = torch.tensor([float(x.shape[2]), float(x.shape[3]), float(x.shape[4]), float(rescale), float(resize),
                             float(return_features)]).repeat(B, 1)
        return torch.cat([x.mean((2, 3, 4)), x.amin((1, 2, 3, 4))[:, None], x.amax((1, 2, 3, 4))[:, None], info], 1)


class _Flat(nn.Module):
    """Inception-like call that wrongly returns one number for the whole batch."""
    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        return x.mean()


def _script(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch 2.13 deprecates TorchScript, the files' format
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_feature_preprocessing_follows_the_files_conventions(tmp_path):
    red = np.zeros((2, 3, 20, 28, 3), np.uint8); red[..., 0] = 255; red[1, :, :, :, 2] = 100   # non-square frames
    net2d = vm.load_feature_net(_script(_Probe2D(), tmp_path / "p2.pt"), "inception", "cpu")
    f = vm.frame_features(net2d, red, batch_size=4)
    assert f.shape == (6, 8)                                          # every frame of every clip
    np.testing.assert_allclose(f[:, :3], [[255, 0, 0]] * 3 + [[255, 0, 100]] * 3, atol=1e-3)   # RGB order, [0, 255]
    np.testing.assert_allclose(f[:, 3:], [[0, 255, 299, 299, 1]] * 3 + [[0, 255, 299, 299, 1]] * 3, atol=1e-3)
    assert vm.frame_features(net2d, red, size=64)[0, 5] == 64
    net3d = vm.load_feature_net(_script(_Probe3D(), tmp_path / "p3.pt"), "i3d", "cpu")
    g = vm.clip_features(net3d, red, batch_size=1)
    assert g.shape == (2, 11)                                         # one row per clip
    np.testing.assert_allclose(g[:, :3], [[1, -1, -1], [1, -1, 100 / 127.5 - 1]], atol=1e-5)  # [-1, 1]
    np.testing.assert_allclose(g[:, 3:], [[-1, 1, 3, 224, 224, 0, 0, 1]] * 2, atol=1e-5)       # (B, 3, T, 224, 224)
    assert tuple(vm.clip_features(net3d, red, size=32)[0, 5:8]) == (3, 32, 32)


def test_fid_fvd_with_scripted_random_nets(tmp_path, clips):
    a, b, c = clips
    inc = vm.save_tiny_feature_net(tmp_path / "inception-2015-12-05.pt", "inception", dim=8, seed=1)
    i3d = vm.save_tiny_feature_net(tmp_path / "i3d_torchscript.pt", "i3d", dim=8, seed=1)
    fid_m, fvd_m = vm.get_video_metric("fid", inc, device="cpu"), vm.get_video_metric("fvd", tmp_path, device="cpu")
    assert fid_m(a, a)["fid"] == pytest.approx(0, abs=1e-8) and fvd_m(a, a)["fvd"] == pytest.approx(0, abs=1e-8)
    assert fid_m(a, c)["fid"] > 1e-3 and fvd_m(a, c)["fvd"] > 1e-3     # brightened set
    assert fid_m(a, b)["fid"] > 0 and fvd_m(a, b)["fvd"] > 0
    net = vm.load_feature_net(inc, "inception", "cpu")
    feats_a, feats_c = vm.frame_features(net, a), vm.frame_features(net, c)
    assert feats_a.shape == (12, 8)
    assert vm.fid(feats_a, feats_c) == pytest.approx(fid_m(a, c)["fid"], rel=1e-6)
    clip_net = vm.load_feature_net(i3d, "i3d", "cpu")
    assert vm.fvd(vm.clip_features(clip_net, a), vm.clip_features(clip_net, c)) == pytest.approx(fvd_m(a, c)["fvd"], rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 samples"): vm.fvd(vm.clip_features(clip_net, a[:1]), vm.clip_features(clip_net, c))
    # the seed fixes the weights, and the global RNG is left alone
    state = torch.random.get_rng_state()
    again = vm.save_tiny_feature_net(tmp_path / "again.pt", "inception", dim=8, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    np.testing.assert_array_equal(vm.frame_features(vm.load_feature_net(again, "inception", "cpu"), a), feats_a)


def test_feature_net_errors(tmp_path, clips):
    a, *_ = clips
    with pytest.raises(ValueError, match=r"video metric 'fvd' needs the I3D TorchScript file \(i3d_torchscript\.pt\): pass fvd=PATH"):
        vm.get_video_metric("fvd")
    with pytest.raises(ValueError, match=r"video metric 'fid' needs the Inception TorchScript file \(inception-2015-12-05\.pt\): pass fid=PATH"):
        vm.get_video_metric("fid")
    with pytest.raises(FileNotFoundError, match=r"video metric 'fvd'.*i3d_torchscript\.pt not found"):
        vm.load_feature_net(tmp_path, "i3d")                          # a folder without the file
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"'fid': .*state\.pt is not a TorchScript file"):
        vm.get_video_metric("fid", tmp_path / "state.pt")
    with pytest.raises(ValueError, match="unknown feature net kind 'raft'"): vm.load_feature_net(tmp_path, "raft")
    plain = _script(nn.Linear(3, 2), tmp_path / "plain.pt")          # no return_features keyword
    with pytest.raises(RuntimeError, match=r"inception feature net failed.*return_features=True"):
        vm.frame_features(vm.load_feature_net(plain, "inception", "cpu"), a)
    with pytest.raises(ValueError, match=r"returned torch.Size\(\[\]\) for 12 inputs"):
        vm.frame_features(vm.load_feature_net(_script(_Flat(), tmp_path / "flat.pt"), "inception", "cpu"), a)


# ---------------------------------------------------------------- registry, specs, evaluate_clips

def test_registry_names_and_errors():
    assert {"psnr", "ssim", "lpips", "fid", "fvd"} <= set(vm.VIDEO_METRICS)
    with pytest.raises(ValueError, match="unknown video metric 'vmaf'; valid video metrics: .*fid, fvd, lpips, psnr, ssim"):
        vm.get_video_metric("vmaf")
    with pytest.raises(ValueError, match="takes no path"): vm.get_video_metric("ssim", "/x")
    with pytest.raises(ValueError, match=r"bad options \['window'\]"): vm.get_video_metric("ssim", window=7)
    with pytest.raises(ValueError, match=r"'fid': bad options \['colour'\]"): vm.get_video_metric("fid", "/x", colour=1)
    m = vm.get_video_metric("ssim")
    assert m.name == "ssim" and repr(m) == "VideoMetric('ssim')"


def test_register_plain_function_and_factory(clips, tmp_path):
    a, b, _ = clips
    try:
        @vm.register_video_metric("toy_mad")
        def toy_mad(pred, target, scale=1.0):
            return {"mad": float(scale) * np.abs(pred.astype(float) - target).mean((1, 2, 3, 4))}

        @vm.register_video_metric("toy_set", factory=True)
        def toy_set(path, offset=0):
            base = float((tmp_path / "w.txt").read_text()) if path else 0.0
            return lambda pred, target: {"set_level": base + float(offset)}

        (tmp_path / "w.txt").write_text("2.5")
        assert toy_mad is not None and "toy_mad" in vm.VIDEO_METRICS
        mad = vm.get_video_metric("toy_mad", scale="2")
        np.testing.assert_allclose(mad(a, b)["mad"], 2 * np.abs(a.astype(float) - b).mean((1, 2, 3, 4)))
        assert vm.get_video_metric("toy_set", tmp_path / "w.txt", offset=1)(a, b) == {"set_level": 3.5}
        got = vm.evaluate_clips(a, b, ["toy_mad,scale=2", f"toy_set={tmp_path / 'w.txt'}", "psnr=,max_db=100"])
        assert set(got) == {"mad", "set_level", "psnr"} and got["set_level"] == 2.5
        assert got["mad"] == pytest.approx(2 * np.abs(a.astype(float) - b).mean())
        assert got["psnr"] == pytest.approx(vm.clip_psnr(a, b).mean())
    finally:
        vm.VIDEO_METRICS.pop("toy_mad", None); vm.VIDEO_METRICS.pop("toy_set", None)


def test_parse_video_metric_spec():
    assert vm.parse_video_metric_spec("fvd=/path/i3d.pt") == ("fvd", "/path/i3d.pt", {})
    assert vm.parse_video_metric_spec("lpips=/w/alex.pth,lin=/w/lin.pth,device=cpu") == \
        ("lpips", "/w/alex.pth", {"lin": "/w/lin.pth", "device": "cpu"})
    assert vm.parse_video_metric_spec("psnr") == ("psnr", None, {})
    assert vm.parse_video_metric_spec("psnr=,max_db=100") == ("psnr", None, {"max_db": "100"})
    with pytest.raises(ValueError, match="video metric spec '=x'"): vm.parse_video_metric_spec("=x")
    with pytest.raises(ValueError, match="option 'size' is not key=value"): vm.parse_video_metric_spec("fid=/p,size")


def test_evaluate_clips_means_and_set_values(clips, tmp_path):
    a, b, c = clips
    inc = vm.save_tiny_feature_net(tmp_path / "inc.pt", "inception", dim=8)
    metrics = {"psnr": vm.get_video_metric("psnr", max_db=100), "ssim": vm.get_video_metric("ssim"),
               "fid": vm.get_video_metric("fid", inc, device="cpu")}
    same = vm.evaluate_clips(a, a, metrics)
    assert same["psnr"] == 100.0 and same["ssim"] == 1.0 and same["fid"] == pytest.approx(0, abs=1e-8)
    other = vm.evaluate_clips(list(a), b, metrics)
    assert other["ssim"] == pytest.approx(vm.clip_ssim(a, b).mean()) and other["fid"] > 0
    assert vm.evaluate_clips(a, b, {"raw": lambda p, t: {"n": len(p)}}) == {"n": 3.0}   # plain callables work
    with pytest.raises(ValueError, match="returned too"):
        vm.evaluate_clips(a, b, {"x": vm.video_ssim, "y": vm.video_ssim})
    with pytest.raises(ValueError, match=r"'bad' returned 'v' of shape \(2,\); expected a float or one value per clip \(3,\)"):
        vm.evaluate_clips(a, b, {"bad": lambda p, t: {"v": np.zeros(2)}})
    with pytest.raises(TypeError, match="'none' returned NoneType"):
        vm.evaluate_clips(a, b, {"none": lambda p, t: None})
    with pytest.raises(ValueError, match="differ in shape"): vm.evaluate_clips(a, b[:2], ["ssim"])
