"""Streaming exact k-th largest equals torch.kthvalue; masks select exactly k (ties included)."""

from __future__ import annotations

import pytest
import torch

from omnishift.importance.threshold import bottom_k_masks, kth_largest, stream_safetensors, top_k_masks


def _source(tensors):
    return lambda: iter(tensors)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kth_largest_equals_kthvalue(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.rand(s, generator=g).pow(3).to(dtype) for s in [(7, 13), (1000,), (3, 5, 11), (1,)]]
    flat = torch.cat([t.float().reshape(-1) for t in tensors])
    n = flat.numel()
    for k in [1, 2, 17, n // 33, n // 2, n - 1, n]:
        value, greater = kth_largest(_source(tensors), k)
        assert value == torch.kthvalue(flat, n - k + 1).values.item()
        assert greater == int((flat > value).sum())


def test_ties_and_zeros():
    tensors = [torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]), torch.tensor([2.0, 1.0, 0.0]), torch.zeros(4)]
    flat = torch.cat(tensors)
    n = flat.numel()
    for k in range(1, n + 1):
        value, greater = kth_largest(_source(tensors), k)
        assert value == torch.kthvalue(flat, n - k + 1).values.item()
        masks = dict(top_k_masks(_source(tensors), k, ["a", "b", "c"]))
        chosen = torch.cat([masks[x].reshape(-1) for x in "abc"])
        assert int(chosen.sum()) == k
        assert flat[chosen].min() >= flat[~chosen].max() if k < n else True
    bottom = dict(bottom_k_masks(_source(tensors), 5, ["a", "b", "c"]))
    chosen = torch.cat([bottom[x].reshape(-1) for x in "abc"])
    assert int(chosen.sum()) == 5 and (flat[chosen] == 0).all()


def test_masks_exact_on_random_data():
    g = torch.Generator().manual_seed(5)
    tensors = [torch.randint(0, 50, s, generator=g).float() / 7 for s in [(40, 30), (333,), (9, 9)]]
    names = ["x", "y", "z"]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    k = int(0.03 * flat.numel())
    top = torch.cat([m.reshape(-1) for _, m in top_k_masks(_source(tensors), k, names)])
    assert int(top.sum()) == k and flat[top].min() >= flat[~top].max()
    bot = torch.cat([m.reshape(-1) for _, m in bottom_k_masks(_source(tensors), k, names)])
    assert int(bot.sum()) == k and flat[bot].max() <= flat[~bot].min()


def test_streams_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    tensors = {"a": torch.rand(100, generator=g), "b": torch.rand(20, 20, generator=g)}
    save_file(tensors, tmp_path / "s.safetensors")
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    value, _ = kth_largest(stream_safetensors(tmp_path / "s.safetensors"), 10)
    assert value == flat.topk(10).values[-1].item()


def test_bad_scores_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        kth_largest(_source([torch.tensor([1.0, float("nan")])]), 1)
    with pytest.raises(ValueError, match="outside"):
        kth_largest(_source([torch.ones(3)]), 4)
