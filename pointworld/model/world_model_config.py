"""Configuration of the world model (mirrored by ``configs/model/*.yaml``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pointworld.config_dict import dataclass_from_dict
from pointworld.geometry.checks import require_int
from pointworld.model.backbone import BackboneConfig
from pointworld.model.segment_prior import SegmentFollowConfig

#: Robot vocabulary of the shipped robots; index 0 of the robot-type embedding is "unknown robot".
DEFAULT_ROBOT_TYPES: tuple[str, ...] = ("franka_panda", "bimanual", "flying_gripper", "ur5e_gripper")

#: Scene point channels before image features: xyz relative to the cloud origin (m), rgb, normal.
SCENE_POINT_CHANNELS = 9
#: Robot point channels: xyz relative to the origin (m), normal, gripper_open, velocity, acceleration.
ROBOT_POINT_CHANNELS = 13


def _backbone(value: Any, name: str) -> BackboneConfig:
    """Accept a BackboneConfig or a mapping of its fields (``in_channels`` is set by the world model)."""
    if isinstance(value, BackboneConfig):
        return value
    if isinstance(value, dict):
        return BackboneConfig(**{"in_channels": 1, **value})
    raise TypeError(f"{name}: expected a BackboneConfig or a mapping of its fields, got {type(value).__name__}")


@dataclass
class WorldModelConfig:
    """The world model: a scene encoder, an action mixer over scene + robot points, and heads.

    Attributes:
        encoder: backbone over the scene points alone (action-independent: computed once per scene and
            reused for all K candidate actions). ``in_channels`` is derived.
        mixer: backbone over the joint cloud of scene tokens and robot points at every step (one pass per
            candidate action). ``in_channels`` is derived (= ``token_channels``).
        horizon: T, the number of predicted future steps.
        token_channels: width of the scene and robot tokens entering the mixer.
        image_feature_channels: F, channels of lifted image features per scene point (0 = none).
        robot_types: robot names of the robot-type embedding (index i + 1; index 0 = unknown robot).
        robot_type_dropout: probability in [0, 1) that a training sample's robot type is replaced by
            "unknown", so the model also works for robots it has never seen.
        max_distance_m: the scene-to-robot distance feature is clipped to this, m.
        head_hidden: hidden width of the displacement and log-variance heads.
        robot_motion_features: also give every scene token, per step, the displacement since t = 0 of the
            robot point nearest to it at t = 0 (a "rigid follow" prior the network refines; 3 T channels).
        scale_moving_threshold_m: the per-step displacement scale the head predicts in is fitted on the
            ground-truth displacements longer than this, m (0 = on every point; the static majority then
            shrinks the scale and moving targets become tens of units, which trains far slower).
        segment_prior: when set, the predicted displacement is the segment-follow guess
            (:func:`~pointworld.model.segment_prior.segment_follow`: objects the robot touches move with
            it) plus the network's output, which then learns the correction; None = the network alone.
    """

    encoder: BackboneConfig = field(default_factory=lambda: BackboneConfig(in_channels=1))
    mixer: BackboneConfig = field(default_factory=lambda: BackboneConfig(in_channels=1))
    horizon: int = 10
    token_channels: int = 64
    image_feature_channels: int = 0
    robot_types: tuple[str, ...] = DEFAULT_ROBOT_TYPES
    robot_type_dropout: float = 0.1
    max_distance_m: float = 1.0
    head_hidden: int = 128
    robot_motion_features: bool = False
    scale_moving_threshold_m: float = 0.0
    segment_prior: SegmentFollowConfig | None = None

    def __post_init__(self) -> None:
        require_int("horizon", self.horizon, 1)
        require_int("token_channels", self.token_channels, 1)
        require_int("image_feature_channels", self.image_feature_channels, 0)
        require_int("head_hidden", self.head_hidden, 1)
        if not isinstance(self.robot_motion_features, bool):
            raise TypeError(f"robot_motion_features: expected a bool, got {self.robot_motion_features!r}")
        enc = _backbone(self.encoder, "encoder")
        self.encoder = dataclasses.replace(enc, in_channels=SCENE_POINT_CHANNELS + self.image_feature_channels)
        mix = _backbone(self.mixer, "mixer")
        self.mixer = dataclasses.replace(mix, in_channels=self.token_channels)
        if isinstance(self.robot_types, str) or not all(isinstance(r, str) and r for r in self.robot_types):
            raise ValueError(f"robot_types: expected a sequence of robot names, got {self.robot_types!r}")
        self.robot_types = tuple(self.robot_types)
        if len(set(self.robot_types)) != len(self.robot_types):
            raise ValueError(f"robot_types: expected unique names, got {self.robot_types}")
        p = self.robot_type_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"robot_type_dropout: expected a probability in [0, 1), got {p!r}")
        t = self.scale_moving_threshold_m
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t < math.inf:
            raise ValueError(f"scale_moving_threshold_m: expected a finite number >= 0 m, got {t!r}")
        if isinstance(self.segment_prior, dict):
            self.segment_prior = dataclass_from_dict(SegmentFollowConfig, self.segment_prior)
        if self.segment_prior is not None and not isinstance(self.segment_prior, SegmentFollowConfig):
            raise TypeError(f"segment_prior: expected None, a SegmentFollowConfig or a mapping of its fields, "
                            f"got {type(self.segment_prior).__name__}")
        d = self.max_distance_m
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d < math.inf:
            raise ValueError(f"max_distance_m: expected a finite number > 0 m, got {d!r}")

    def robot_type_index(self, robot_name: str) -> int:
        """Index of ``robot_name`` in the robot-type embedding (0 = a robot the model does not know)."""
        return self.robot_types.index(robot_name) + 1 if robot_name in self.robot_types else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (stored in checkpoints; ``WorldModelConfig.from_dict`` inverts it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldModelConfig:
        """Rebuild a config from :meth:`to_dict` output (nested configs as mappings)."""
        return dataclass_from_dict(cls, data)
