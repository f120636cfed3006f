"""Benchmark: world-model forward latency and peak memory, next to a dense-attention transformer anchor.

Cases: model preset (``configs/model/<preset>.yaml``) x scene points N x batch K. Robot points: 11 steps x 200
points (T = 10). With K > 1 the planner's call is timed: the scene is encoded once (B = 1) and the action
mixer runs on K candidate actions; the full per-sample forward is timed for K = 1.

The anchor is a plain transformer over the same N + 11 x 200 points: a linear embedding to the model's
token width, then as many pre-norm full-attention blocks (SDPA over every point of a sample, MLP ratio 4) as
the world model has attention blocks in total. Where the anchor would take too long on this machine, one
anchor block is timed on one sample and multiplied by the depth and K (marked ``x``: extrapolated; the dense
cost is linear in both).

Each case runs in a fresh subprocess so its peak resident memory (CPU) or peak allocated memory (CUDA) is
its own. Usage: ``python scripts/bench_model.py [--device cuda] [--presets tiny small] [--points 4096 12288]
[--batch 1 32]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from pointworld.heap import add_heap_argument, set_heap_policy
from pointworld.model.inputs import ActionInput
from pointworld.model.synthetic import synthetic_push_batch
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"
ROBOT_POINTS, HORIZON = 200, 10


def load_preset(name: str) -> WorldModelConfig:
    """A world-model preset from ``configs/model/<name>.yaml`` (its ``backbone@…`` defaults resolved)."""
    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    for entry in data.pop("defaults", []):
        if isinstance(entry, dict):
            (key, option), = entry.items()
            group, _, target = key.partition("@")
            sub = yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text())
            data[target] = {**sub, **data.get(target, {})}
    return WorldModelConfig.from_dict(data)


class DenseBlock(nn.Module):
    """Pre-norm full self-attention + MLP block (the anchor)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, P, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, P, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, P, C)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


def attention_blocks(config: WorldModelConfig) -> int:
    """Total number of attention blocks of the encoder and the mixer."""
    return sum(sum(b.enc_depths) + sum(b.dec_depths) for b in (config.encoder, config.mixer))


def _inputs(n_points: int, batch: int, device: torch.device):
    scene, action, target, valid = synthetic_push_batch(max(batch, 1), n_points, ROBOT_POINTS, HORIZON, seed=0)
    move = lambda t: t.to(device)  # noqa: E731
    scene1 = type(scene)(*(move(getattr(scene, f)[:1]) for f in ("points", "colors", "normals", "mask")))
    act = ActionInput(move(action.flow), move(action.mask), move(action.robot_type))
    return scene, scene1, act, target, valid


def _timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run_case(preset: str, n_points: int, batch: int, kind: str, device: torch.device, repeats: int) -> dict:
    """Time one case in this process; returns latency (s) and peak memory above the set-up (MB)."""
    torch.manual_seed(0)
    config = load_preset(preset)
    scene, scene1, action, target, valid = _inputs(n_points, batch, device)
    if kind == "model":
        model = WorldModel(config)
        model.update_normalization(scene, ActionInput(action.flow.cpu(), action.mask.cpu(), action.robot_type.cpu()),
                                   target, valid)
        model.finalize_normalization()
        model = model.to(device).eval()
        fn = lambda: model.predict(model.encode_scene(scene1), action)  # noqa: E731
        scale = 1.0
    else:
        width, depth = config.token_channels, attention_blocks(config)
        full = kind == "dense"
        blocks = nn.Sequential(*[DenseBlock(width, 4) for _ in range(depth if full else 1)]).to(device).eval()
        tokens = torch.randn(batch if full else 1, n_points + (HORIZON + 1) * ROBOT_POINTS, width, device=device)
        fn = lambda: blocks(tokens)  # noqa: E731
        scale = 1.0 if full else depth * batch
    base = _peak_mb(device, reset=True)
    with torch.inference_mode():
        latency = _timed(fn, device, repeats) * scale
    return {"latency_s": latency, "peak_mb": _peak_mb(device) - base}


def _peak_mb(device: torch.device, reset: bool = False) -> float:
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _subprocess(args: argparse.Namespace, preset: str, n: int, batch: int, kind: str) -> dict:
    cmd = [sys.executable, __file__, "--case", f"{preset},{n},{batch},{kind}", "--device", args.device,
           "--repeats", str(args.repeats), "--heap", args.heap]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["tiny", "small"])
    parser.add_argument("--points", nargs="*", type=int, default=[4096, 12288])
    parser.add_argument("--batch", nargs="*", type=int, default=[1, 32])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dense-limit", type=int, default=4 * 6400,
                        help="largest K x points the dense anchor runs in full; larger ones are extrapolated")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    add_heap_argument(parser)
    args = parser.parse_args()
    set_heap_policy(args.heap == "retain")
    device = torch.device(args.device)
    if args.case:
        preset, n, batch, kind = args.case.split(",")
        print(json.dumps(run_case(preset, int(n), int(batch), kind, device, args.repeats)))
        return
    print(f"device {device}; robot points {HORIZON + 1} x {ROBOT_POINTS}; latency median of {args.repeats}")
    print(f"{'preset':6s} {'params':>8s} {'N':>6s} {'K':>3s} {'model s':>9s} {'model MB':>9s} "
          f"{'dense s':>10s} {'dense MB':>9s} {'dense/model':>11s}")
    for preset in args.presets:
        params = WorldModel(load_preset(preset)).num_parameters()
        for n in args.points:
            for batch in args.batch:
                m = _subprocess(args, preset, n, batch, "model")
                full = batch * (n + (HORIZON + 1) * ROBOT_POINTS) <= args.dense_limit
                d = _subprocess(args, preset, n, batch, "dense" if full else "dense-extrapolated")
                mark = " " if full else "x"
                print(f"{preset:6s} {params / 1e6:7.1f}M {n:6d} {batch:3d} {m['latency_s']:9.3f} "
                      f"{m['peak_mb']:9.0f} {d['latency_s']:9.3f}{mark} {d['peak_mb']:9.0f} "
                      f"{d['latency_s'] / m['latency_s']:11.2f}", flush=True)


if __name__ == "__main__":
    main()
