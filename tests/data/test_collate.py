"""collate_clips: exact round trip of the real entries, zero/False padding, masks, mixed robots with
different M, horizons, bad input; ClipBatch.to and DataLoader use."""

from __future__ import annotations

import pytest
import torch

from pointworld.data.clip_sample import ClipSample
from pointworld.data.collate import ClipBatch, collate_clips
from pointworld.model.inputs import ActionInput, SceneInput


def make_sample(gen: torch.Generator, n: int, m: int, horizon: int = 4, robot_type: int = 1,
                robot_name: str = "franka_panda", episode: str = "ep_000", clip: int = 0,
                dtype: torch.dtype = torch.float32) -> ClipSample:
    """A hand-built sample with random content (no dataset file)."""
    def r(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64).to(dtype)

    normals = torch.nn.functional.normalize(r(n, 3) - 0.5, dim=-1)
    return ClipSample(points=r(n, 3), colors=r(n, 3), normals=normals, target=r(horizon, n, 3) - 0.5,
                      valid=torch.rand(horizon, n, generator=gen) > 0.3, robot_flow=r(horizon + 1, m, 15),
                      robot_type=robot_type, robot_name=robot_name, episode=episode, clip=clip)


def naive_pad(x: torch.Tensor, length: int, axis: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``axis`` to ``length`` with torch.nn.functional.pad (independent of _pad)."""
    pad = [0, 0] * (x.dim() - axis - 1) + [0, length - x.shape[axis]]
    if x.dtype == torch.bool:
        return torch.nn.functional.pad(x.to(torch.uint8), pad).bool()
    return torch.nn.functional.pad(x, pad)


@pytest.fixture()
def mixed() -> list[ClipSample]:
    """Three samples of two robots with different N and M."""
    gen = torch.Generator().manual_seed(0)
    return [make_sample(gen, 7, 5, robot_type=1, robot_name="franka_panda", episode="a", clip=0),
            make_sample(gen, 3, 9, robot_type=2, robot_name="bimanual", episode="b", clip=3),
            make_sample(gen, 5, 5, robot_type=0, robot_name="mystery", episode="c", clip=1)]


def test_shapes_and_types(mixed: list[ClipSample]) -> None:
    batch = collate_clips(mixed)
    assert isinstance(batch, ClipBatch)
    assert isinstance(batch.scene, SceneInput) and isinstance(batch.action, ActionInput)
    assert batch.batch_size == 3 and batch.horizon == 4
    assert batch.scene.points.shape == (3, 7, 3)
    assert batch.action.flow.shape == (3, 5, 9, 15)
    assert batch.target.shape == (3, 4, 7, 3) and batch.valid.shape == (3, 4, 7)
    assert batch.valid.dtype == torch.bool and batch.action.robot_type.dtype == torch.int64
    assert batch.action.robot_type.tolist() == [1, 2, 0]
    assert batch.robot_names == ["franka_panda", "bimanual", "mystery"]
    assert batch.episodes == ["a", "b", "c"] and batch.clips == [0, 3, 1]


def test_round_trip_and_padding_match_naive(mixed: list[ClipSample]) -> None:
    batch = collate_clips(mixed)
    for b, s in enumerate(mixed):
        n, m = s.num_points, s.num_robot_points
        # real entries unchanged (bitwise)
        assert torch.equal(batch.scene.points[b, :n], s.points)
        assert torch.equal(batch.scene.colors[b, :n], s.colors)
        assert torch.equal(batch.scene.normals[b, :n], s.normals)
        assert torch.equal(batch.target[b, :, :n], s.target)
        assert torch.equal(batch.valid[b, :, :n], s.valid)
        assert torch.equal(batch.action.flow[b, :, :m], s.robot_flow)
        # whole rows equal an independent zero padding
        assert torch.equal(batch.scene.points[b], naive_pad(s.points, 7, 0))
        assert torch.equal(batch.target[b], naive_pad(s.target, 7, 1))
        assert torch.equal(batch.valid[b], naive_pad(s.valid, 7, 1))
        assert torch.equal(batch.action.flow[b], naive_pad(s.robot_flow, 9, 1))


def test_masks(mixed: list[ClipSample]) -> None:
    batch = collate_clips(mixed)
    expect_n = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] * 5 + [False] * 2])
    expect_m = torch.tensor([[True] * 5 + [False] * 4, [True] * 9, [True] * 5 + [False] * 4])
    assert torch.equal(batch.scene.mask, expect_n)
    assert torch.equal(batch.action.mask, expect_m)
    # padded points are never valid, padded entries are exactly zero
    assert not batch.valid[~expect_n[:, None, :].expand_as(batch.valid)].any()
    assert (batch.target[~expect_n[:, None, :, None].expand_as(batch.target)] == 0).all()
    assert (batch.action.flow[~expect_m[:, None, :, None].expand_as(batch.action.flow)] == 0).all()
    # gripper_open of ActionInput ignores the padded robot points
    g = torch.stack([s.robot_flow[..., 6].amax(-1) for s in mixed])
    assert torch.equal(batch.action.gripper_open, g)


def test_single_sample_has_no_padding() -> None:
    s = make_sample(torch.Generator().manual_seed(1), 6, 4, horizon=2)
    batch = collate_clips([s])
    assert batch.scene.mask.all() and batch.action.mask.all()
    assert torch.equal(batch.target[0], s.target) and torch.equal(batch.action.flow[0], s.robot_flow)


def test_float64_kept() -> None:
    gen = torch.Generator().manual_seed(2)
    batch = collate_clips([make_sample(gen, 4, 3, dtype=torch.float64),
                           make_sample(gen, 2, 3, dtype=torch.float64)])
    assert batch.scene.points.dtype == torch.float64 and batch.target.dtype == torch.float64


def test_to_and_dataloader(mixed: list[ClipSample]) -> None:
    batch = collate_clips(mixed)
    moved = batch.to("cpu")
    assert moved is not batch and torch.equal(moved.target, batch.target)
    assert moved.robot_names == batch.robot_names
    loader = torch.utils.data.DataLoader(mixed, batch_size=2, collate_fn=collate_clips)
    batches = list(loader)
    assert [b.batch_size for b in batches] == [2, 1]
    assert torch.equal(batches[1].scene.points[0], mixed[2].points)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda(mixed: list[ClipSample]) -> None:
    batch = collate_clips(mixed).pin_memory().to("cuda", non_blocking=True)
    assert batch.scene.points.is_cuda and batch.action.robot_type.is_cuda
    assert torch.equal(batch.target.cpu(), collate_clips(mixed).target)


def test_bad_input(mixed: list[ClipSample]) -> None:
    gen = torch.Generator().manual_seed(3)
    with pytest.raises(ValueError, match="samples: expected at least one"):
        collate_clips([])
    with pytest.raises(TypeError, match=r"samples\[1\]: expected a ClipSample"):
        collate_clips([mixed[0], {"points": 1}])
    with pytest.raises(TypeError, match="samples: expected a sequence"):
        collate_clips(mixed[0])
    with pytest.raises(ValueError, match="same horizon"):
        collate_clips([make_sample(gen, 3, 2, horizon=2), make_sample(gen, 3, 2, horizon=3)])
    bad = mixed[1].replace(target=mixed[1].target[:, :2])
    with pytest.raises(ValueError, match=r"samples\[0\]\.target"):
        collate_clips([bad])
    bad = mixed[1].replace(valid=mixed[1].valid.float())
    with pytest.raises(TypeError, match=r"samples\[0\]\.valid"):
        collate_clips([bad])
    bad = mixed[1].replace(robot_flow=mixed[1].robot_flow[:, :, :14])
    with pytest.raises(ValueError, match=r"samples\[0\]\.robot_flow"):
        collate_clips([bad])
    bad = mixed[1].replace(robot_flow=mixed[1].robot_flow[:-1])
    with pytest.raises(ValueError, match=r"samples\[0\]\.robot_flow"):
        collate_clips([bad])
    with pytest.raises(ValueError, match=r"samples\[0\]\.robot_type"):
        collate_clips([mixed[1].replace(robot_type=-1)])
