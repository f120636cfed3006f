"""PointTransformerV3: shapes, invariances, gradients, configuration and the shipped presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from pointworld.model.backbone import BackboneConfig, PointTransformerV3

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "model" / "backbone"
GRID = 0.25  # a power of two: cell arithmetic is exact

SMALL = dict(grid_size_m=GRID, enc_depths=(1, 1, 1), enc_channels=(8, 16, 16), enc_heads=(1, 2, 2),
             enc_patch_size=(16, 16, 8), dec_depths=(1, 1), dec_channels=(8, 16), dec_heads=(2, 2),
             dec_patch_size=(16, 8), mlp_ratio=2.0)


def _model(in_channels: int = 5, seed: int = 0, **overrides) -> PointTransformerV3:
    torch.manual_seed(seed)
    return PointTransformerV3(BackboneConfig(in_channels=in_channels, **{**SMALL, **overrides}))


def _clouds(sizes: list[int], seed: int, extent: int = 12, dtype: torch.dtype = torch.float64):
    """Packed clouds whose points lie in distinct cells, away from cell faces."""
    gen = torch.Generator().manual_seed(seed)
    cells = [torch.randperm(extent ** 3, generator=gen)[:n] for n in sizes]
    cells = torch.cat(cells)
    grid = torch.stack([cells // extent ** 2, cells // extent % extent, cells % extent], -1)
    coord = (grid + 0.1 + 0.8 * torch.rand(grid.shape, generator=gen, dtype=dtype)) * GRID
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    feat = torch.randn(coord.shape[0], 5, generator=gen, dtype=dtype)
    return coord, feat, batch


def test_output_shapes_with_different_cloud_sizes() -> None:
    model = _model().eval()
    coord, feat, batch = _clouds([300, 7, 150], seed=0)  # the 7-point cloud is smaller than any patch
    out = model(coord.float(), feat.float(), batch, 3)
    assert out.shape == (457, model.out_channels) and model.out_channels == 8
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    one_stage = _model(enc_depths=(2,), enc_channels=(12,), enc_heads=(3,), enc_patch_size=(32,), dec_depths=(),
                       dec_channels=(), dec_heads=(), dec_patch_size=()).eval()
    assert one_stage(coord.float(), feat.float(), batch, 3).shape == (457, 12) and one_stage.out_channels == 12
    default = PointTransformerV3(BackboneConfig(in_channels=5)).eval()  # the tiny shape
    with torch.no_grad():
        assert default(coord.float() * 0.06, feat.float(), batch, 3).shape == (457, 32)


def test_order_invariance() -> None:
    """Permuting the points of each cloud (distinct cells) permutes the output the same way."""
    model = _model().double().eval()
    coord, feat, batch = _clouds([200, 90], seed=1)
    gen = torch.Generator().manual_seed(5)
    perm = torch.cat([torch.randperm(200, generator=gen), 200 + torch.randperm(90, generator=gen)])
    out = model(coord, feat, batch, 2)
    out_perm = model(coord[perm], feat[perm], batch, 2)
    torch.testing.assert_close(out_perm, out[perm], atol=1e-12, rtol=1e-12)


def test_translation_by_whole_cells_changes_nothing() -> None:
    model = _model().double().eval()
    coord, feat, batch = _clouds([120, 160], seed=2)
    out = model(coord, feat, batch, 2)
    shifted = coord.clone()
    shifted[batch == 1] += torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64) * GRID
    torch.testing.assert_close(model(shifted, feat, batch, 2), out, atol=1e-12, rtol=1e-12)
    half = coord.clone()
    half[batch == 1] += 0.5 * GRID  # not a whole cell: the grid (and the features) change
    assert (model(half, feat, batch, 2)[batch == 1] - out[batch == 1]).abs().max() > 1e-6


def test_gradient_reaches_every_parameter() -> None:
    model = _model().double().train()
    coord, feat, batch = _clouds([400, 250], seed=3)
    weights = torch.randn(650, model.out_channels, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (model(coord, feat, batch, 2) * weights).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_shuffled_orders_in_training_fixed_in_eval() -> None:
    model = _model().double()
    coord, feat, batch = _clouds([300], seed=4)
    model.eval()
    torch.testing.assert_close(model(coord, feat, batch, 1), model(coord, feat, batch, 1), atol=0, rtol=0)
    model.train()
    outs = [model(coord, feat, batch, 1) for _ in range(4)]
    assert any((o - outs[0]).abs().max() > 1e-9 for o in outs[1:])  # 4! / 4 curve permutations: rarely all equal


def _preset(name: str) -> dict:
    with open(PRESETS / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def test_preset_parameter_counts() -> None:
    counts = {}
    for name in ("tiny", "small", "base"):
        data = _preset(name)
        fields = {f.name for f in dataclasses.fields(BackboneConfig)} - {"in_channels"}
        assert set(data) == fields, name
        with torch.device("meta"):
            counts[name] = PointTransformerV3(BackboneConfig(in_channels=9, **data)).num_parameters()
    print("backbone parameters:", counts)
    assert 1_000_000 < counts["tiny"] < 6_000_000
    assert 35_000_000 < counts["small"] < 60_000_000
    assert 70_000_000 < counts["base"] < 150_000_000


def test_config_validation() -> None:
    cfg = BackboneConfig(in_channels=3, orders=["z", "hilbert"], enc_depths=[1], enc_channels=[8], enc_heads=[2],
                         enc_patch_size=[4], dec_depths=[], dec_channels=[], dec_heads=[], dec_patch_size=[])
    assert cfg.orders == ("z", "hilbert") and cfg.enc_depths == (1,) and cfg.num_stages == 1
    assert BackboneConfig(**cfg.to_dict()) == cfg
    bad = [
        (dict(in_channels=0), "in_channels"),
        (dict(in_channels=3, orders=("z", "peano")), "orders"),
        (dict(in_channels=3, enc_depths=(1, 1)), "enc_channels"),
        (dict(in_channels=3, dec_channels=(32, 64)), "dec_channels"),
        (dict(in_channels=3, enc_heads=(3, 4, 8, 12)), "enc_heads"),
        (dict(in_channels=3, drop_path=1.0), "drop_path"),
        (dict(in_channels=3, grid_size_m=-0.01), "grid_size_m"),
        (dict(in_channels=3, stride=1), "stride"),
        (dict(in_channels=3, enc_depths=(1, 0, 1, 1)), "enc_depths"),
    ]
    for kwargs, name in bad:
        with pytest.raises(ValueError, match=name):
            BackboneConfig(**kwargs)
    with pytest.raises(TypeError, match="config"):
        PointTransformerV3({"in_channels": 3})


def test_forward_bad_input() -> None:
    model = _model()
    coord, feat, batch = _clouds([10, 10], seed=5, dtype=torch.float32)
    with pytest.raises(ValueError, match="non-decreasing"):
        model(coord, feat, batch.flip(0), 2)
    with pytest.raises(ValueError, match="feat"):
        model(coord, feat[:, :4], batch, 2)
    with pytest.raises(TypeError, match="batch"):
        model(coord, feat, batch.int(), 2)
    with pytest.raises(ValueError, match="coord"):
        model(coord[:, :2], feat, batch, 2)
    with pytest.raises(ValueError, match="batch"):
        model(coord, feat, batch, 1)  # cloud index 1 is out of range
