"""Goal files: JSON/YAML round trips against the goal constructors, errors naming the file and key."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from pointworld.planning.goal_file import GoalSpec, load_goal_spec, parse_goal_spec
from pointworld.planning.goals import rigid_goal, select_box, select_color

F64 = torch.float64


def _cloud(n: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=gen, dtype=F64), torch.rand(n, 3, generator=gen, dtype=F64)


def _transform(yaw: float, t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    T[:3, 3] = t
    return T


def _write(tmp_path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return str(path)


def test_goal_files_round_trip(tmp_path):
    points, colors = _cloud()
    T = _transform(-0.4, (0.0, 0.1, 0.0))
    box = [[0.1, 0.1, 0.1], [0.5, 0.5, 0.5]]
    spec = load_goal_spec(_write(tmp_path, "g.yaml", {"select": {"box": box}, "transform": T.tolist(),
                                                       "keep_still": {"color": [0.5, 0.5, 0.5], "tolerance": 0.2}}))
    assert isinstance(spec, GoalSpec) and spec.motion == "transform"
    goal = spec.resolve(points, colors)
    ref = rigid_goal(points, select_box(points, *box), torch.tensor(T), keep_still=select_color(colors, [0.5] * 3, 0.2))
    assert torch.equal(goal.indices, ref.indices) and torch.equal(goal.keep_still, ref.keep_still)
    torch.testing.assert_close(goal.targets, ref.targets, rtol=0, atol=1e-12)
    spec = load_goal_spec(_write(tmp_path, "c.json", {"select": {"color": [0.2, 0.8, 0.5]}, "translation": [0, 0, 0.1]}))
    goal = spec.resolve(points, colors)
    ref_sel = select_color(colors, [0.2, 0.8, 0.5], 0.1)  # default tolerance 0.1
    assert torch.equal(goal.selection(500), ref_sel)
    torch.testing.assert_close(goal.targets, points[ref_sel] + torch.tensor([0, 0, 0.1], dtype=F64))
    # Explicit targets follow the order the indices are listed in.
    spec = load_goal_spec(_write(tmp_path, "i.yml", {"select": {"indices": [7, 2]}, "targets": [[1, 1, 1], [2, 2, 2]]}))
    goal = spec.resolve(points)
    assert goal.indices.tolist() == [2, 7] and goal.targets.tolist() == [[2, 2, 2], [1, 1, 1]]


@pytest.mark.parametrize("data, match", [
    ({"translation": [0, 0, 1]}, "expected keys 'select'"),
    ({"select": {"box": [[0, 0, 0], [1, 1, 1]]}, "translation": [0, 0, 1], "transform": np.eye(4).tolist()},
     "exactly one of"),
    ({"select": {"box": [[0, 0, 0], [1, 1, 1]]}, "translation": [0, 0, 1], "extra": 1}, "got keys"),
    ({"select": {"box": [[0, 0, 0]]}, "translation": [0, 0, 1]}, r"select\.box: expected a 2x3 array"),
    ({"select": {"box": [[1, 1, 1], [0, 0, 0]]}, "translation": [0, 0, 1]}, r"select\.box: expected .* min <= max"),
    ({"select": {"box": [[0, 0, 0], [1, 1, 1]], "color": [1, 1, 1]}, "translation": [0, 0, 1]}, "select: expected exactly one"),
    ({"select": {"color": [1, 1, 2]}, "translation": [0, 0, 1]}, r"select\.color"),
    ({"select": {"color": [1, 1, 1], "tolerance": "x"}, "translation": [0, 0, 1]}, r"select\.tolerance"),
    ({"select": {"indices": [1, 1]}, "translation": [0, 0, 1]}, r"select\.indices"),
    ({"select": {"indices": [1]}, "translation": [0, "a", 1]}, "translation: expected a 3 array"),
    ({"select": {"indices": [1]}, "transform": (2 * np.eye(4)).tolist()}, "transform: expected rigid"),
    ({"select": {"indices": [1]}, "targets": [[0, 0]]}, "targets: expected a Px3 array"),
    ({"select": {"indices": [1]}, "translation": [0, 0, 1], "keep_still": [1]}, "keep_still: expected a mapping"),
    ([1, 2], "expected a mapping at the top level"),
])
def test_goal_file_errors_name_file_and_key(tmp_path, data, match):
    path = _write(tmp_path, "bad.json", data)
    with pytest.raises(ValueError, match=match) as info:
        load_goal_spec(path)
    assert "bad.json" in str(info.value)


def test_goal_file_resolve_and_io_errors(tmp_path):
    points, _ = _cloud()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_goal_spec(tmp_path / "nope.json")
    txt = tmp_path / "g.txt"
    txt.write_text("{}")
    with pytest.raises(ValueError, match="ending in .json"):
        load_goal_spec(txt)
    broken = tmp_path / "broken.yaml"
    broken.write_text("select: [unclosed")
    with pytest.raises(ValueError, match="broken.yaml.*cannot parse"):
        load_goal_spec(broken)
    spec = load_goal_spec(_write(tmp_path, "col.json", {"select": {"color": [1, 0, 0]}, "translation": [0, 0, 1]}))
    with pytest.raises(ValueError, match=r"col.json: select\.color.*colors"):
        spec.resolve(points)
    spec = load_goal_spec(_write(tmp_path, "far.json", {"select": {"box": [[5, 5, 5], [6, 6, 6]]},
                                                        "translation": [0, 0, 1]}))
    with pytest.raises(ValueError, match="goal selects no points: goal file .*far.json: select"):
        spec.resolve(points)
    spec = load_goal_spec(_write(tmp_path, "cnt.json", {"select": {"box": [[0, 0, 0], [1, 1, 1]]},
                                                        "targets": [[0, 0, 0]]}))
    with pytest.raises(ValueError, match=r"cnt.json: targets: expected one target per selected point \(500\)"):
        spec.resolve(points)
    spec = load_goal_spec(_write(tmp_path, "idx.json", {"select": {"indices": [900]}, "translation": [0, 0, 1]}))
    with pytest.raises(ValueError, match=r"idx.json: select\.indices: expected indices < 500"):
        spec.resolve(points)


def test_parse_goal_spec_names_its_source():
    spec = parse_goal_spec({"select": {"indices": [0, 1, 2]}, "translation": [0.1, 0, 0]}, source="inline")
    assert spec.source == "inline" and spec.select == {"indices": [0, 1, 2]} and spec.value == [0.1, 0.0, 0.0]
    with pytest.raises(ValueError, match="goal file inline: expected keys"):
        parse_goal_spec({"select": {"indices": [0]}}, source="inline")
