"""Render the shipped demo capture: the seeded table-top scene seen by three RealSense-like cameras.

Writes ``pointworld/assets/demo_capture/`` (or ``--output``) with
:func:`pointworld.capture.storage.save_capture` (atomic). The cameras look at the table from the
front-left, the front-right (across the table from the robot base, world = base frame) and from
above; 640x480, D435-like intrinsics, mild depth noise and dropout.

    python scripts/make_demo_capture.py --overwrite
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pointworld.assets import demo_capture_path
from pointworld.capture.storage import save_capture
from pointworld.capture.synthetic import DepthNoise, look_at, render_frames, table_scene

WIDTH, HEIGHT = 640, 480
#: D435-like color intrinsics at 640x480, pixels.
K = np.array([[615.3, 0.0, 320.6], [0.0, 615.1, 238.4], [0.0, 0.0, 1.0]])
#: Camera centres, world frame, m: front-left, front-right, top (all looking at the table centre).
EYES = {"demo_front_left": [1.3, 0.55, 0.65], "demo_front_right": [1.3, -0.55, 0.65],
        "demo_top": [0.5, 0.0, 1.25]}
TARGET = [0.6, 0.0, 0.05]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=demo_capture_path(), help="capture directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing capture")
    parser.add_argument("--seed", type=int, default=0, help="scene and noise seed")
    args = parser.parse_args()
    T_world_cams = np.stack([look_at(eye, TARGET) for eye in EYES.values()])
    capture = render_frames(table_scene(args.seed), K, T_world_cams, HEIGHT, WIDTH, list(EYES),
                            noise=DepthNoise(sigma_at_1m_m=0.001, dropout=0.002), seed=args.seed)
    try:
        path = save_capture(capture, args.output, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise SystemExit(f"{exc} (use --overwrite)") from None
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    print(f"wrote {len(capture.frames)} views ({WIDTH}x{HEIGHT}) to {path} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
