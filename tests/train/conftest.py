"""Shared fixtures of the training tests: a tiny generated episode dataset (a few seconds to write)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pointworld.data.generate import generate_dataset
from pointworld.data.generate_config import GenerateConfig


@pytest.fixture(scope="session")
def write_tiny_dataset() -> Callable[..., str]:
    """A function ``(out, robot="franka_panda", horizon=4) -> str`` writing 2 episodes x 2 clips (96 x 72 px,
    <= 512 points, one or two objects, no drawer), all in the train split, into directory ``out``."""

    def write(out: Path, robot: str = "franka_panda", horizon: int = 4) -> str:
        generate_dataset(GenerateConfig(robot=robot, episodes=2, clips_per_episode=2, horizon=horizon, n_views=2,
                                        width=96, height=72, max_points=512, workers=1, out=str(out),
                                        scene={"include_drawer": False, "n_objects": [1, 2]}, val_fraction=0.0,
                                        test_fraction=0.0), progress=False)
        return str(out)

    return write
