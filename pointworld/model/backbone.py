"""Point Transformer V3 backbone in pure PyTorch: a U-Net of serialized-attention blocks over grid pooling.

Input: a packed batch (``coord (P, 3)`` m, ``feat (P, C_in)``, ``batch (P,)`` non-decreasing). The points
are put on a per-cloud grid of ``grid_size_m`` cells (:func:`pointworld.model.grid.grid_coordinates`), so
only the cells matter: a cloud moved by a whole number of cells gives the same features. Each encoder stage
after the first halves the grid (``stride``) by max-pooling the points of each coarse cell; the decoder maps
coarse features back to the finer level and adds a projection of the encoder's skip features. Every level
is serialized once (:func:`pointworld.model.blocks.build_point_state`) and its blocks cycle through the
serialization orders. Output: per-point features (P, ``out_channels``) in the input order.

Presets live in ``configs/model/backbone/{tiny,small,base}.yaml`` (loaded by the CLI, not here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from pointworld.geometry.checks import (require_dtype, require_floating, require_int, require_positive,
                                        require_shape)
from pointworld.model.blocks import Block, PointState, SparseConv3x3, build_point_state
from pointworld.model.gelu import Gelu
from pointworld.model.grid import grid_coordinates
from pointworld.model.pooling import PoolResult, grid_pool, grid_unpool
from pointworld.model.serialization import Order

_STAGE_FIELDS = ("depths", "channels", "heads", "patch_size")


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of a :class:`PointTransformerV3` (the defaults are the ``tiny`` preset).

    Attributes:
        in_channels: C_in, input feature channels per point.
        grid_size_m: edge of a grid cell at the input level, m.
        orders: serialization curves ("z", "z-trans", "hilbert", "hilbert-trans"); blocks cycle through them.
        shuffle_orders: in training mode, randomly permute the curves at every level of every forward.
        enc_depths, enc_channels, enc_heads, enc_patch_size: blocks, width, attention heads and patch size
            of each of the S encoder stages (stage s > 0 works on a grid ``stride**s`` times coarser).
        dec_depths, dec_channels, dec_heads, dec_patch_size: the same for the S - 1 decoder stages, indexed
            by level (decoder stage s runs at the level of encoder stage s).
        mlp_ratio: MLP hidden width relative to the block width.
        drop_path: maximum stochastic-depth probability (linearly increasing with depth).
        stride: grid pooling factor between levels (>= 2).
    """

    in_channels: int
    grid_size_m: float = 0.015
    orders: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
    shuffle_orders: bool = True
    enc_depths: tuple[int, ...] = (1, 1, 1, 1)
    enc_channels: tuple[int, ...] = (32, 64, 128, 192)
    enc_heads: tuple[int, ...] = (2, 4, 8, 12)
    enc_patch_size: tuple[int, ...] = (128, 128, 128, 128)
    dec_depths: tuple[int, ...] = (1, 1, 1)
    dec_channels: tuple[int, ...] = (32, 64, 128)
    dec_heads: tuple[int, ...] = (2, 4, 8)
    dec_patch_size: tuple[int, ...] = (128, 128, 128)
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    stride: int = 2

    def __post_init__(self) -> None:
        require_int("in_channels", self.in_channels, minimum=1)
        require_positive("grid_size_m", self.grid_size_m)
        require_positive("mlp_ratio", self.mlp_ratio)
        require_int("stride", self.stride, minimum=2)
        if not isinstance(self.shuffle_orders, bool):
            raise TypeError(f"shuffle_orders: expected a bool, got {self.shuffle_orders!r}")
        if isinstance(self.drop_path, bool) or not (isinstance(self.drop_path, (int, float))
                                                    and 0.0 <= self.drop_path < 1.0):
            raise ValueError(f"drop_path: expected a probability in [0, 1), got {self.drop_path!r}")
        if isinstance(self.orders, str) or len(self.orders) == 0:
            raise ValueError(f"orders: expected a non-empty sequence of curve names, got {self.orders!r}")
        known = [o.value for o in Order]
        for o in self.orders:
            if o not in known:
                raise ValueError(f"orders: expected names among {known}, got {o!r}")
        object.__setattr__(self, "orders", tuple(self.orders))
        for prefix in ("enc", "dec"):
            for name in _STAGE_FIELDS:
                key = f"{prefix}_{name}"
                value = getattr(self, key)
                if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                    raise ValueError(f"{key}: expected a sequence of ints, got {value!r}")
                for v in value:
                    require_int(key, v, minimum=1)
                object.__setattr__(self, key, tuple(value))
        self._check_stage_shapes()

    def _check_stage_shapes(self) -> None:
        S = len(self.enc_depths)
        if S == 0:
            raise ValueError("enc_depths: expected at least one encoder stage, got 0")
        for prefix, n in (("enc", S), ("dec", S - 1)):
            for name in _STAGE_FIELDS:
                key = f"{prefix}_{name}"
                if len(getattr(self, key)) != n:
                    raise ValueError(f"{key}: expected {n} entries ({S} encoder stages), "
                                     f"got {len(getattr(self, key))}")
            for c, h in zip(getattr(self, f"{prefix}_channels"), getattr(self, f"{prefix}_heads")):
                if c % h:
                    raise ValueError(f"{prefix}_heads: expected each to divide its stage's channels, "
                                     f"got {h} heads for {c} channels")

    @property
    def num_stages(self) -> int:
        """S, the number of encoder stages (levels)."""
        return len(self.enc_depths)

    def to_dict(self) -> dict:
        """Plain-data form (``BackboneConfig(**d)`` inverts it)."""
        return dataclasses.asdict(self)


def _ramp(top: float, n: int) -> list[float]:
    """n drop-path rates rising linearly from 0 to ``top``."""
    return [top * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def _linear_norm_act(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out), nn.LayerNorm(c_out), Gelu())


class GridPooling(nn.Module):
    """Linear to the new width, max over the points of each coarse cell (``stride``), norm + GELU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(in_ch, out_ch)
        self.post = nn.Sequential(nn.LayerNorm(out_ch), Gelu())

    def forward(self, state: PointState) -> PoolResult:
        """state: a level with feat (P, in_ch). Returns the pooled level (feat (P', out_ch))."""
        pooled = grid_pool(state.coord, self.proj(state.feat), state.grid, state.batch, self.stride, "max")
        return dataclasses.replace(pooled, feat=self.post(pooled.feat))


class GridUnpooling(nn.Module):
    """``proj(coarse)[cluster] + proj_skip(skip)``, each projection a Linear + LayerNorm + GELU."""

    def __init__(self, coarse_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = _linear_norm_act(coarse_ch, out_ch)
        self.proj_skip = _linear_norm_act(skip_ch, out_ch)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
        """coarse: (P', coarse_ch); skip: (P, skip_ch); cluster: (P,) fine -> coarse. Returns (P, out_ch)."""
        return grid_unpool(self.proj(coarse), cluster) + self.proj_skip(skip)


class PointTransformerV3(nn.Module):
    """The backbone (see the module docstring).

    Args:
        config: its shape.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if not isinstance(config, BackboneConfig):
            raise TypeError(f"config: expected a BackboneConfig, got {type(config).__name__}")
        self.config = c = config
        S = c.num_stages
        self.embedding = SparseConv3x3(c.in_channels, c.enc_channels[0])
        self.embedding_post = nn.Sequential(nn.LayerNorm(c.enc_channels[0]), Gelu())
        enc_rates, dec_rates = _ramp(c.drop_path, sum(c.enc_depths)), _ramp(c.drop_path, sum(c.dec_depths))
        self.pools = nn.ModuleList(GridPooling(c.enc_channels[s - 1], c.enc_channels[s], c.stride)
                                   for s in range(1, S))
        self.encoder = nn.ModuleList(
            self._stage(c.enc_channels[s], c.enc_heads[s], c.enc_patch_size[s], c.enc_depths[s],
                        enc_rates[sum(c.enc_depths[:s]):]) for s in range(S))
        coarse = [c.dec_channels[s + 1] if s + 1 < S - 1 else c.enc_channels[-1] for s in range(S - 1)]
        self.unpools = nn.ModuleList(GridUnpooling(coarse[s], c.enc_channels[s], c.dec_channels[s])
                                     for s in range(S - 1))
        self.decoder = nn.ModuleList(
            self._stage(c.dec_channels[s], c.dec_heads[s], c.dec_patch_size[s], c.dec_depths[s],
                        dec_rates[sum(c.dec_depths[:s]):]) for s in range(S - 1))

    def _stage(self, channels: int, heads: int, patch: int, depth: int, rates: list[float]) -> nn.ModuleList:
        return nn.ModuleList(Block(channels, heads, patch, self.config.mlp_ratio, rates[i]) for i in range(depth))

    @property
    def out_channels(self) -> int:
        """Channels of the output features (``dec_channels[0]``, or ``enc_channels[0]`` with one stage)."""
        c = self.config
        return c.dec_channels[0] if c.num_stages > 1 else c.enc_channels[0]

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _orders(self) -> tuple[Order, ...]:
        orders = tuple(Order(o) for o in self.config.orders)
        if self.training and self.config.shuffle_orders and len(orders) > 1:
            orders = tuple(orders[i] for i in torch.randperm(len(orders)).tolist())
        return orders

    def _check_inputs(self, coord: torch.Tensor, feat: torch.Tensor, batch: torch.Tensor,
                      batch_size: int) -> None:
        require_floating("coord", coord)
        require_shape("coord", coord, (None, 3), max_leading=0)
        if coord.shape[0] == 0:
            raise ValueError("coord: expected at least one point, got 0")
        require_floating("feat", feat)
        require_shape("feat", feat, (coord.shape[0], self.config.in_channels), max_leading=0)
        require_dtype("batch", batch, torch.int64)
        require_shape("batch", batch, (coord.shape[0],), max_leading=0)
        require_int("batch_size", batch_size, minimum=1)
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch: expected non-decreasing cloud indices (the points of each cloud contiguous)")

    def forward(self, coord: torch.Tensor, feat: torch.Tensor, batch: torch.Tensor,
                batch_size: int) -> torch.Tensor:
        """Per-point features of a packed batch.

        Args:
            coord: (P, 3) point positions, m, any frame.
            feat: (P, C_in) point features.
            batch: (P,) int64 cloud index in [0, batch_size), non-decreasing.
            batch_size: B.

        Returns:
            out: (P, out_channels) features, in the input point order.
        """
        self._check_inputs(coord, feat, batch, batch_size)
        grid, _ = grid_coordinates(coord, batch, self.config.grid_size_m, batch_size)
        state = build_point_state(coord, feat, grid, batch, batch_size, self._orders())
        state = state.with_feat(self.embedding_post(self.embedding(feat, state.voxels, state.pairs)))
        levels: list[PointState] = []
        clusters: list[torch.Tensor] = []
        for s, stage in enumerate(self.encoder):
            if s > 0:
                levels.append(state)
                pooled = self.pools[s - 1](state)
                clusters.append(pooled.cluster)
                state = build_point_state(pooled.coord, pooled.feat, pooled.grid, pooled.batch, batch_size,
                                          self._orders())
            state = self._run(stage, state)
        for s in reversed(range(len(self.decoder))):
            fine = levels[s]
            state = fine.with_feat(self.unpools[s](state.feat, fine.feat, clusters[s]))
            state = self._run(self.decoder[s], state)
        return state.feat

    def _run(self, stage: nn.ModuleList, state: PointState) -> PointState:
        n = len(state.serialization.orders)
        for i, block in enumerate(stage):
            state = block(state, i % n)
        return state
