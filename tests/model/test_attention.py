"""Serialized patch attention vs a naive per-patch dense attention loop."""

from __future__ import annotations

import math

import pytest
import torch

from pointworld.model.attention import SerializedAttention, build_patch_layout


def _packed_order(sizes: list[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """batch (P,), a random order that keeps clouds contiguous, and its inverse."""
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    starts = [sum(sizes[:b]) for b in range(len(sizes))]
    order = torch.cat([s + torch.randperm(n, generator=gen) for s, n in zip(starts, sizes)])
    return batch, order, torch.argsort(order)


def _naive(module: SerializedAttention, feat: torch.Tensor, order: torch.Tensor, batch: torch.Tensor,
           patch_size: int) -> torch.Tensor:
    """Dense softmax attention patch by patch, written out with explicit loops."""
    H, C = module.num_heads, module.channels
    d = C // H
    out = torch.zeros_like(feat)
    for b in batch.unique().tolist():
        idx = order[batch[order] == b]
        for start in range(0, len(idx), patch_size):
            members = idx[start:start + patch_size]
            x = feat[members]
            q, k, v = module.qkv(x).split(C, dim=-1)
            heads = []
            for h in range(H):
                qh, kh, vh = (t[:, h * d:(h + 1) * d] for t in (q, k, v))
                w = torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1)
                heads.append(w @ vh)
            out[members] = module.proj(torch.cat(heads, -1))
    return out


@pytest.mark.parametrize("sizes,patch", [([5, 37, 20], 8), ([16, 3], 8), ([40], 64), ([9, 9], 1)])
def test_matches_naive_patch_loop(sizes: list[int], patch: int) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    module = SerializedAttention(8, 2, patch).double().eval()
    batch, order, inverse = _packed_order(sizes, gen)
    feat = torch.randn(sum(sizes), 8, generator=gen, dtype=torch.float64)
    got = module(feat, order, inverse, batch, len(sizes))
    torch.testing.assert_close(got, _naive(module, feat, order, batch, patch), atol=1e-12, rtol=1e-12)


def test_padding_and_other_clouds_do_not_change_a_cloud() -> None:
    """A 5-point cloud alone (patch 5: no padding) == with patch 8 (padded) == next to a larger cloud."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    module = SerializedAttention(8, 2, 8).double().eval()
    feat = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    order = torch.randperm(5, generator=gen)
    inverse, batch = torch.argsort(order), torch.zeros(5, dtype=torch.int64)
    alone = module(feat, order, inverse, batch, 1)
    module.patch_size = 5
    unpadded = module(feat, order, inverse, batch, 1)
    module.patch_size = 8
    other = torch.randn(29, 8, generator=gen, dtype=torch.float64)
    both_order = torch.cat([order, 5 + torch.randperm(29, generator=gen)])
    both_batch = torch.cat([batch, torch.ones(29, dtype=torch.int64)])
    both = module(torch.cat([feat, other]), both_order, torch.argsort(both_order), both_batch, 2)
    torch.testing.assert_close(alone, unpadded, atol=1e-13, rtol=0)
    torch.testing.assert_close(both[:5], alone, atol=1e-13, rtol=0)


def test_clouds_never_attend_to_each_other() -> None:
    gen = torch.Generator().manual_seed(2)
    module = SerializedAttention(8, 4, 16).double()
    batch, order, inverse = _packed_order([30, 30, 7], gen)
    feat = torch.randn(67, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    out = module(feat, order, inverse, batch, 3)
    out[batch == 1].sum().backward()
    assert feat.grad[batch != 1].abs().max() == 0
    assert feat.grad[batch == 1].abs().max() > 0


def test_layout_structure() -> None:
    gen = torch.Generator().manual_seed(3)
    sizes, patch = [21, 8, 3, 16], 8
    batch, order, inverse = _packed_order(sizes, gen)
    layout = build_patch_layout(order, inverse, batch, 4, patch)
    assert layout.width == 8
    assert layout.num_full == 2 + 1 + 0 + 2
    assert layout.index.shape[0] == layout.num_full + 2  # partial patches of clouds 0 (5 points) and 2 (3)
    assert layout.valid[:layout.num_full].all()
    assert torch.equal(layout.index.reshape(-1)[layout.slot], torch.arange(sum(sizes)))
    for row in layout.index:
        members = row[row >= 0]
        assert batch[members].unique().numel() == 1  # one cloud per patch
        positions = inverse[members]
        assert torch.equal(positions, torch.arange(int(positions[0]), int(positions[0]) + len(members)))
    small = build_patch_layout(torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0]),
                               torch.zeros(3, dtype=torch.int64), 1, 256)
    assert small.width == 3 and small.num_full == 0  # patch width shrinks to the largest cloud


def test_precomputed_layout_and_float32() -> None:
    gen = torch.Generator().manual_seed(4)
    module = SerializedAttention(16, 2, 8)
    batch, order, inverse = _packed_order([12, 19], gen)
    feat = torch.randn(31, 16, generator=gen)
    layout = build_patch_layout(order, inverse, batch, 2, 8)
    out = module(feat, order, inverse, batch, 2, layout=layout)
    assert out.dtype == torch.float32 and out.shape == (31, 16)
    torch.testing.assert_close(out, module(feat, order, inverse, batch, 2), atol=1e-6, rtol=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        SerializedAttention(10, 3, 8)
    with pytest.raises(ValueError, match="patch_size"):
        SerializedAttention(8, 2, 0)
    with pytest.raises(ValueError, match="attn_drop"):
        SerializedAttention(8, 2, 8, attn_drop=1.0)
    module = SerializedAttention(8, 2, 4)
    batch = torch.tensor([0, 0, 1, 1])
    order = torch.arange(4)
    with pytest.raises(ValueError, match="feat"):
        module(torch.randn(4, 6), order, order, batch, 2)
    with pytest.raises(TypeError, match="feat"):
        module(torch.ones(4, 8, dtype=torch.int64), order, order, batch, 2)
    interleaved = torch.tensor([0, 2, 1, 3])
    with pytest.raises(ValueError, match="contiguous"):
        module(torch.randn(4, 8), interleaved, torch.argsort(interleaved), batch, 2)
    with pytest.raises(ValueError, match="batch"):
        module(torch.randn(4, 8), order, order, batch, 1)  # cloud index 1 >= batch_size
    with pytest.raises(TypeError, match="order"):
        module(torch.randn(4, 8), order.int(), order, batch, 2)
