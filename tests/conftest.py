import os

import pytest

# Nothing may reach a model hub: without this a hub call hangs ~30 s before failing.
for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainrun import seppo_train  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """One toy data set shared by every run (made once, read-only afterwards)."""
    from seppo.core.toy import make_toy_pickapic
    d = tmp_path_factory.mktemp("toy")
    make_toy_pickapic(d, n=24, resolution=16, seed=0)
    return d


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory, data):
    """Uninterrupted runs of each method, the baseline every resumed run must match bit for bit."""
    out = {}
    for method in ("sft", "dpo", "seppo"):
        d = tmp_path_factory.mktemp(f"ref-{method}")
        seppo_train(method, d, data=data)
        out[method] = d
    return out
