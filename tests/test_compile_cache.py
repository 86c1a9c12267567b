"""torch.compile's caches live in the `compile_cache` folder, so a second compile of the same model loads it."""

import os
import pickle
import sys
import types

import pytest
import torch

from variants.compile import compile_cache_folder, keep_tuned_kernel_configs, use_compile_cache


def test_cache_folder_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_folder("auto") == tmp_path / "latentsync-harness" / "torch-compile"
    assert compile_cache_folder("off") is None
    assert compile_cache_folder(str(tmp_path / "mine")) == tmp_path / "mine"


def test_a_second_compile_of_the_same_model_is_a_cache_hit(monkeypatch, tmp_path):
    from torch._dynamo.utils import counters

    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this build")
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(name, raising=False)
    use_compile_cache(str(tmp_path / "cache"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()).eval()
    x = torch.randn(2, 8)
    expected = model(x)
    outputs = []
    for _ in range(2):
        torch._dynamo.reset()  # forget the compiled code in memory: only the folder remains
        counters.clear()
        with torch.no_grad():
            outputs.append(torch.compile(model, dynamic=False)(x))
    torch._dynamo.reset()
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1  # the second compile loaded the first one's graph
    assert any((tmp_path / "cache").rglob("*"))
    torch.testing.assert_close(outputs[1], expected)


class DroppingConfig:
    """Triton's Config as its __setstate__ is (triton 3.6): fields of its own back, any other attribute lost."""

    def __init__(self, num_warps: int) -> None:
        self.num_warps = num_warps

    def __setstate__(self, state: dict) -> None:
        self.num_warps = state["num_warps"]


def test_a_tuned_config_keeps_its_coordinate_descent_mark_through_a_compile_workers_pickle(monkeypatch):
    """Without the mark, the process tunes a kernel again that the cache folder had tuned (bench call 33)."""
    monkeypatch.setitem(sys.modules, "triton", types.SimpleNamespace(Config=DroppingConfig))
    monkeypatch.setattr(DroppingConfig, "__setstate__", DroppingConfig.__setstate__)  # restored after the test
    tuned = DroppingConfig(4)
    tuned.found_by_coordesc = True

    def back_from_a_worker() -> DroppingConfig:
        return pickle.loads(pickle.dumps(tuned))

    assert not hasattr(back_from_a_worker(), "found_by_coordesc")  # the bug, as triton has it
    keep_tuned_kernel_configs()
    config = back_from_a_worker()
    assert (config.num_warps, config.found_by_coordesc) == (4, True)
    patched = DroppingConfig.__setstate__
    keep_tuned_kernel_configs()  # every compiled model of a process asks again: patched once
    assert DroppingConfig.__setstate__ is patched
