"""Scene assembly: seeding, naming, physical sanity of objects and drawer, config and URDF checks."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

from pointworld.errors import MeshNotFoundError, URDFError
from pointworld.robot.assets import SHIPPED_ROBOTS
from pointworld.sim.config import SHAPES, SceneConfig
from pointworld.sim.env import SimEnv
from pointworld.sim.robot_mjcf import urdf_to_spec


def _built(robot: str = "franka_panda", seed: int = 0, **kw: object) -> SimEnv:
    env = SimEnv(SceneConfig(robot=robot, **kw))
    env.reset(seed)
    return env


def test_same_seed_same_scene_different_seed_different() -> None:
    a, b, c = _built(seed=3), _built(seed=3), _built(seed=4)
    assert a.scene.spec.to_xml() == b.scene.spec.to_xml()
    np.testing.assert_array_equal(a.data.xpos, b.data.xpos)
    assert a.scene.spec.to_xml() != c.scene.spec.to_xml()
    assert a.body_names() != c.body_names() or not np.array_equal(a.model.body_pos, c.model.body_pos)


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_every_robot_builds_without_robot_contacts(robot: str) -> None:
    env = _built(robot, seed=2, n_objects=(6, 6))
    m, d = env.model, env.data
    robot_bodies = set(env.index.body.tolist())
    touching = [(m.body(m.geom_bodyid[c.geom1]).name, m.body(m.geom_bodyid[c.geom2]).name)
                for c in d.contact[:d.ncon]
                if {int(m.geom_bodyid[c.geom1]), int(m.geom_bodyid[c.geom2])} & robot_bodies]
    assert touching == []
    # objects rest on the table top after settling, inside its footprint, nearly still
    top = env.scene.table_top_z
    for name, T in env.object_poses().items():
        if name.startswith("object_"):
            assert float(T[2, 3]) > top
            body = m.body(name)
            speed = np.abs(d.qvel[m.jnt_dofadr[body.jntadr[0]]:][:6]).max()
            assert speed < 0.05, (name, speed)


def test_names_and_geom_body_mapping() -> None:
    env = _built(n_objects=(5, 5), include_drawer=True)
    m = env.model
    names = env.body_names()
    assert names[0] == "world"
    for required in ("table", "floor", "drawer", "drawer_handle", "drawer_cabinet", "object_000",
                     "panda_link0", "panda_hand", "panda_leftfinger"):
        assert required in names
    assert env.scene.object_names == [f"object_{i:03d}" for i in range(len(env.scene.object_names))]
    for g in range(m.ngeom):
        body = m.body(m.geom_bodyid[g]).name
        if body.startswith(("object_", "drawer", "table")):
            assert m.geom(g).name.startswith(body + "_")
    assert set(env.object_poses()) == set(env.scene.object_names) | {"drawer", "drawer_handle"}


def test_objects_random_within_config() -> None:
    cfg = {"n_objects": (4, 4), "object_mass_kg": (0.1, 0.3), "object_size_m": (0.05, 0.2),
           "include_drawer": False}
    shapes, masses = set(), []
    for seed in range(6):
        env = _built(seed=seed, **cfg)
        shapes.update(env.scene.object_shapes)
        masses += [float(env.model.body(n).mass[0]) for n in env.scene.object_names]
        for n in env.scene.object_names:
            geoms = np.flatnonzero(env.model.geom_bodyid == env.model.body(n).id)
            extent = 2 * env.model.geom_rbound[geoms].max()
            assert extent < 0.2 * np.sqrt(3) + 1e-9
    assert len(shapes) >= 4 and shapes <= set(SHAPES)
    assert min(masses) >= 0.1 - 1e-9 and max(masses) <= 0.3 + 1e-9
    assert len(masses) >= 20


def test_drawer_slides_within_its_range() -> None:
    env = _built(n_objects=(0, 0), include_drawer=True)
    m, d = env.model, env.data
    joint = m.joint("drawer_slide")
    handle0 = env.object_poses()["drawer_handle"][:3, 3].clone()
    d.qfrc_applied[m.jnt_dofadr[joint.id]] = 30.0  # pull outward along the slide axis
    for _ in range(500):
        mujoco.mj_step(m, d)
    mujoco.mj_forward(m, d)
    opening = float(d.qpos[m.jnt_qposadr[joint.id]])
    assert 0.15 < opening < 0.18 + 2e-3
    moved = env.object_poses()["drawer_handle"][:3, 3] - handle0
    assert float(moved.norm()) == pytest.approx(opening, abs=1e-3)
    assert abs(float(moved[2])) < 1e-3  # horizontal motion
    # the drawer opens toward the robot base (the handle gets closer to the origin)
    assert float(env.object_poses()["drawer_handle"][:2, 3].norm()) < float(handle0[:2].norm())


@pytest.mark.parametrize("bad, match", [
    ({"n_objects": (3, 1)}, "n_objects"),
    ({"n_objects": (1.5, 2)}, "n_objects"),
    ({"object_size_m": (0.0, 0.1)}, "object_size_m"),
    ({"shapes": ("box", "torus")}, "shapes"),
    ({"control_dt_s": 0.015, "timestep_s": 0.002}, "control_dt_s"),
    ({"timestep_s": -1.0}, "timestep_s"),
    ({"table_size_m": (0.8,)}, "table_size_m"),
    ({"table_center_xy": (0.5, float("nan"))}, "table_center_xy"),
    ({"seed": -2}, "seed"),
    ({"robot": ""}, "robot"),
    ({"cloth_size_m": 0.0}, "cloth_size_m"),
])
def test_config_rejects_bad_values(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SceneConfig(**bad)


def test_config_rejects_non_bool_switches() -> None:
    with pytest.raises(TypeError, match="include_drawer"):
        SceneConfig(include_drawer="yes")  # type: ignore[arg-type]


def test_config_placement_and_substeps() -> None:
    cfg = SceneConfig(table_center_xy=(0.7, -0.2), table_height_m=0.1, control_dt_s=0.1, timestep_s=0.002)
    assert cfg.substeps == 50
    assert cfg.table_placement("franka_panda") == (0.7, -0.2, 0.1)
    assert SceneConfig().table_placement("unknown_robot") == (0.55, 0.0, 0.0)


def _write_urdf(tmp_path: Path, joint_type: str, mesh: str) -> Path:
    path = tmp_path / "r.urdf"
    path.write_text(f"""<robot name="r">
  <link name="a"><collision><geometry><mesh filename="{mesh}"/></geometry></collision></link>
  <link name="b"><inertial><mass value="1"/><inertia ixx="1" iyy="1" izz="1" ixy="0" ixz="0" iyz="0"/>
  </inertial></link>
  <joint name="j" type="{joint_type}"><parent link="a"/><child link="b"/><axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
</robot>""")
    return path


def test_urdf_to_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(URDFError, match="floating"):
        urdf_to_spec(_write_urdf(tmp_path, "floating", "package://nope/x.stl"))
    with pytest.raises(MeshNotFoundError, match="x.stl"):
        urdf_to_spec(_write_urdf(tmp_path, "revolute", "package://nope/x.stl"))
    bad = tmp_path / "bad.urdf"
    bad.write_text("<sdf/>")
    with pytest.raises(URDFError, match="<robot>"):
        urdf_to_spec(bad)


def test_urdf_to_spec_keeps_every_link(tmp_path: Path) -> None:
    from pointworld.robot.assets import shipped_urdf_path
    from pointworld.robot.urdf import load_robot

    robot = load_robot("ur5e_gripper")
    model = urdf_to_spec(shipped_urdf_path("ur5e_gripper")).compile()
    names = {model.body(i).name for i in range(model.nbody)}
    assert set(robot.link_names) <= names  # fixed links (tool0) are not fused away
    assert model.neq == len(robot.mimic)


def test_cloth_rests_on_the_table_and_is_seeded() -> None:
    a = _built(seed=5, n_objects=(2, 2), include_cloth=True, cloth_size_m=0.2)
    b = _built(seed=5, n_objects=(2, 2), include_cloth=True, cloth_size_m=0.2)
    assert a.scene.deformable_names == ["cloth"]
    assert a.scene.spec.to_xml() == b.scene.spec.to_xml()
    v = a.flex_vertices("cloth")
    assert v.shape == (81, 3)
    top = a.scene.table_top_z
    assert float((v[:, 2] - top).abs().max()) < 0.01  # flat on the table (vertex radius 4 mm)
    # the 8 x 8 spacing survives settling: inextensible edges keep the side length
    grid = v.reshape(9, 9, 3)
    side = (grid[0, -1] - grid[0, 0]).norm()
    assert float(side) == pytest.approx(0.2, abs=0.01)
    assert "cloth_root" in a.body_names() and "cloth_80" in a.body_names()
    reloaded = mujoco.MjSpec.from_string(a.scene.spec.to_xml()).compile()  # the XML saves and reloads
    assert reloaded.nflex == 1 and reloaded.nbody == a.model.nbody
    with pytest.raises(ValueError, match="rope"):
        a.flex_vertices("rope")


def test_yaml_mirrors_the_dataclass() -> None:
    import dataclasses

    import yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "scene" / "tabletop.yaml"
    values = yaml.safe_load(path.read_text())
    assert set(values) == {f.name for f in dataclasses.fields(SceneConfig)}
    cfg = SceneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    assert cfg == SceneConfig()
