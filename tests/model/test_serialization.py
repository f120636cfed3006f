"""Z-order and Hilbert serialization against per-point Python references and curve properties."""

from __future__ import annotations

import os

import pytest
import torch

from pointworld.model.serialization import (Order, hilbert_decode, hilbert_encode, serialization_codes,
                                            serialize, z_order_decode, z_order_encode)


#: Device of the gpu-marked test (``POINTWORLD_TEST_DEVICE=cpu`` checks its logic without a GPU).
DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _naive_morton(cell: tuple[int, int, int], depth: int) -> int:
    code = 0
    for bit in range(depth):
        for axis in range(3):
            code |= ((cell[axis] >> bit) & 1) << (3 * bit + axis)
    return code


def _naive_hilbert(cell: tuple[int, int, int], depth: int) -> int:
    """Skilling (2004) 'AxesToTranspose' on plain Python ints, one point at a time, then the bits of the
    transposed form read out top level first, axis 0 first."""
    x = list(cell)
    top = 1 << (depth - 1)
    level = top
    while level > 1:  # rotate and flip the lower bits at each level
        low = level - 1
        for i in range(3):
            if x[i] & level:
                x[0] ^= low
            else:
                swap = (x[0] ^ x[i]) & low
                x[0] ^= swap
                x[i] ^= swap
        level >>= 1
    for i in range(1, 3):
        x[i] ^= x[i - 1]
    flip, level = 0, top
    while level > 1:
        if x[2] & level:
            flip ^= level - 1
        level >>= 1
    x = [v ^ flip for v in x]
    code = 0
    for bit in range(depth - 1, -1, -1):
        for i in range(3):
            code = (code << 1) | ((x[i] >> bit) & 1)
    return code


def _full_cube(depth: int) -> torch.Tensor:
    side = torch.arange(1 << depth)
    return torch.cartesian_prod(side, side, side)


@pytest.mark.parametrize("depth", [1, 4, 10, 21])
def test_z_order_matches_naive_bit_interleaving(depth):
    grid = torch.randint(0, 1 << depth, (300, 3), generator=_gen(depth))
    expected = torch.tensor([_naive_morton(tuple(c), depth) for c in grid.tolist()])
    assert torch.equal(z_order_encode(grid, depth), expected)
    assert torch.equal(z_order_decode(expected, depth), grid)


@pytest.mark.parametrize("depth", [1, 2, 5, 10, 21])
def test_hilbert_matches_naive_per_point_reference(depth):
    grid = torch.randint(0, 1 << depth, (300, 3), generator=_gen(100 + depth))
    expected = torch.tensor([_naive_hilbert(tuple(c), depth) for c in grid.tolist()])
    assert torch.equal(hilbert_encode(grid, depth), expected)
    assert torch.equal(hilbert_decode(expected, depth), grid)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_hilbert_is_a_face_adjacent_bijection_nested_in_octants(depth):
    n = 1 << (3 * depth)
    cube = _full_cube(depth)
    codes = hilbert_encode(cube, depth)
    assert torch.equal(torch.sort(codes).values, torch.arange(n))  # bijection on the cube
    path = hilbert_decode(torch.arange(n), depth)
    assert torch.equal(hilbert_encode(path, depth), torch.arange(n))
    steps = (path[1:] - path[:-1]).abs().sum(-1)
    assert torch.equal(steps, torch.ones(n - 1, dtype=torch.int64))  # consecutive cells share a face
    assert path[0].tolist() == [0, 0, 0]
    for level in range(1, depth + 1):  # every aligned run of 8**level codes fills one aligned sub-cube
        blocks = (path >> level).reshape(-1, 1 << (3 * level), 3)
        assert torch.equal(blocks, blocks[:, :1].expand_as(blocks))


@pytest.mark.parametrize("depth", [1, 3])
def test_z_order_is_a_bijection_nested_in_octants(depth):
    n = 1 << (3 * depth)
    path = z_order_decode(torch.arange(n), depth)
    assert torch.equal(torch.sort(z_order_encode(path, depth)).values, torch.arange(n))
    assert len({tuple(c) for c in path.tolist()}) == n
    assert path[1].tolist() == [1, 0, 0]  # x is the lowest bit of each triple
    for level in range(1, depth + 1):
        blocks = (path >> level).reshape(-1, 1 << (3 * level), 3)
        assert torch.equal(blocks, blocks[:, :1].expand_as(blocks))


def test_encoders_accept_leading_dims():
    grid = torch.randint(0, 16, (4, 5, 3), generator=_gen(3))
    for encode, decode in ((z_order_encode, z_order_decode), (hilbert_encode, hilbert_decode)):
        codes = encode(grid, 4)
        assert codes.shape == (4, 5)
        assert torch.equal(codes.reshape(-1), encode(grid.reshape(-1, 3), 4))
        assert torch.equal(decode(codes, 4), grid)


def _packed(seed: int, n: int = 500, batch_size: int = 4, side: int = 50):
    g = _gen(seed)
    grid = torch.randint(0, side, (n, 3), generator=g)
    batch = torch.sort(torch.randint(0, batch_size, (n,), generator=g)).values
    return grid, batch


@pytest.mark.parametrize("order", list(Order))
def test_codes_group_clouds_and_follow_the_curve(order):
    grid, batch = _packed(1)
    depth = 6
    codes = serialization_codes(grid, batch, order, depth)
    swapped = grid[:, [1, 0, 2]] if order.value.endswith("trans") else grid
    curve = z_order_encode(swapped, depth) if order.value.startswith("z") else hilbert_encode(swapped, depth)
    expected = [(b << (3 * depth)) | c for b, c in zip(batch.tolist(), curve.tolist())]
    assert codes.tolist() == expected
    sorted_batch = batch[torch.argsort(codes, stable=True)]
    assert bool((sorted_batch[1:] >= sorted_batch[:-1]).all())  # clouds never interleave
    for b in range(3):
        assert int(codes[batch == b].max()) < int(codes[batch == b + 1].min())


def test_transposed_orders_swap_x_and_y():
    grid, batch = _packed(2)
    for plain, trans in ((Order.Z, Order.Z_TRANS), (Order.HILBERT, Order.HILBERT_TRANS)):
        assert torch.equal(serialization_codes(grid, batch, trans, 6),
                           serialization_codes(grid[:, [1, 0, 2]], batch, plain, 6))
        assert not torch.equal(serialization_codes(grid, batch, trans, 6),
                               serialization_codes(grid, batch, plain, 6))


def test_serialize_orders_inverse_and_depth():
    grid, batch = _packed(3, side=40)  # largest cell 39 -> depth 6
    ser = serialize(grid, batch, ["z", Order.Z_TRANS, "hilbert", Order.HILBERT_TRANS])
    assert ser.orders == (Order.Z, Order.Z_TRANS, Order.HILBERT, Order.HILBERT_TRANS)
    assert ser.codes.shape == ser.order.shape == ser.inverse.shape == (4, grid.shape[0])
    ramp = torch.arange(grid.shape[0])
    for s, order in enumerate(ser.orders):
        assert torch.equal(ser.codes[s], serialization_codes(grid, batch, order, 6))
        ordered = ser.codes[s][ser.order[s]]
        assert bool((ordered[1:] >= ordered[:-1]).all())
        ties = ordered[1:] == ordered[:-1]  # stable: equal codes keep their input order
        assert bool((ser.order[s][1:][ties] > ser.order[s][:-1][ties]).all())
        assert torch.equal(ser.order[s][ser.inverse[s]], ramp)
        assert torch.equal(ser.inverse[s][ser.order[s]], ramp)
    assert serialize(torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, dtype=torch.int64),
                     [Order.Z]).codes.tolist() == [[0]]
    assert torch.equal(serialize(grid, batch, [Order.HILBERT], depth=8).codes[0],
                       serialization_codes(grid, batch, Order.HILBERT, 8))


def test_serialize_has_duplicate_cells_in_stable_order():
    grid = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    ser = serialize(grid, torch.zeros(4, dtype=torch.int64), [Order.Z])
    assert ser.order[0].tolist() == [1, 3, 0, 2]


def test_bad_input_is_rejected():
    grid, batch = _packed(4, side=16)
    with pytest.raises(ValueError, match="grid"):
        serialization_codes(grid, batch, Order.Z, 3)  # cells up to 15 need depth 4
    with pytest.raises(ValueError, match="grid"):
        serialization_codes(grid - 1, batch, Order.Z, 6)
    with pytest.raises(ValueError, match="depth"):
        serialization_codes(grid, batch + (1 << 10), Order.Z, 18)  # 54 + 11 bits > 62
    with pytest.raises(ValueError, match="order"):
        serialization_codes(grid, batch, "peano", 6)
    with pytest.raises(ValueError, match="orders"):
        serialize(grid, batch, [])
    with pytest.raises(ValueError, match="orders"):
        serialize(grid, batch, "z")
    with pytest.raises(TypeError, match="grid"):
        serialize(grid.float(), batch, [Order.Z])
    with pytest.raises(ValueError, match="batch"):
        serialize(grid, batch[:-1], [Order.Z])
    with pytest.raises(ValueError, match="grid"):
        serialize(grid[:0], batch[:0], [Order.Z])
    with pytest.raises(ValueError, match="depth"):
        hilbert_encode(grid, 22)
    with pytest.raises(ValueError, match="code"):
        z_order_decode(torch.tensor([1 << 12]), 4)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
def test_device_matches_cpu():
    grid, batch = _packed(5, n=20000, side=1000)
    ser = serialize(grid, batch, list(Order))
    ser_cuda = serialize(grid.to(DEVICE), batch.to(DEVICE), list(Order))
    for name in ("codes", "order", "inverse"):
        assert torch.equal(getattr(ser_cuda, name).cpu(), getattr(ser, name))
    full = _full_cube(4).to(DEVICE)
    assert torch.equal(hilbert_decode(hilbert_encode(full, 4), 4), full)
