"""The world model: scene points at t = 0 + robot point flow of an action -> per-point future displacement.

Structure (DESIGN.md, "World model"):

1. **Scene encoder** (action-independent, :meth:`WorldModel.encode_scene`): scene point features (xyz relative
   to the cloud's grid origin, rgb, normal, optional lifted image features), normalized with statistics from
   data, go through a Point Transformer V3 U-Net over the scene points alone. The result is cached in a
   :class:`SceneEncoding` and reused for every candidate action of a planning step.
2. **Action mixer** (once per candidate action): every scene point becomes a token (its encoding plus, per
   step, the gripper-open flag, its distance to the nearest robot point and, with
   ``robot_motion_features``, the motion of the robot point nearest to it at t = 0); every robot point at every step
   becomes a token (normalized xyz, normal, gripper-open, velocity, acceleration, plus a time embedding and a
   robot-type embedding). A second PTv3 runs joint serialized attention over this combined cloud.
3. **FiLM + heads**: robot token outputs are max-pooled per sample and modulate the scene outputs (FiLM,
   initialised to the identity); an MLP head gives T x 3 normalized displacements and T log-variances
   (soft-bounded to ±``LOG_VAR_BOUND``), which are scaled back to metres with the per-step displacement
   scale learned from data.
4. **Segment prior** (optional, ``config.segment_prior``): the non-learned segment-follow guess
   (:mod:`pointworld.model.segment_prior`: the objects the robot touches move with it) is added to the
   head's displacements, so the network learns the correction to it rather than the whole motion; each scene
   token also receives the guess (3 T channels) so that the correction can depend on it.

Translation: all positions enter relative to the scene's grid origin, so shifting the scene and the robot
together by a multiple of the grid size leaves the predicted displacements unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointworld.model.backbone import PointTransformerV3
from pointworld.model.features import (
    nearest_robot_motion,
    robot_point_features,
    scene_point_features,
    scene_step_features,
)
from pointworld.model.gelu import Gelu
from pointworld.model.inputs import ActionInput, Prediction, SceneInput
from pointworld.model.normalization import DisplacementScale, FeatureNormalizer
from pointworld.model.segment_prior import segment_follow
from pointworld.model.world_model_config import ROBOT_POINT_CHANNELS, SCENE_POINT_CHANNELS, WorldModelConfig

#: The distance-to-robot step feature is divided by this (m) before entering the network.
DISTANCE_FEATURE_SCALE_M = 0.1
#: Bound of the normalized log-variance, ``B tanh(raw / B)``: the predicted std stays within e^(±B/2) of the
#: displacement scale, so a confidently wrong point cannot blow up the heteroscedastic loss (nor a trivially
#: static one drive its variance to zero).
LOG_VAR_BOUND = 5.0


@dataclass(frozen=True)
class SceneEncoding:
    """The action-independent part of a prediction, computed once per scene.

    Attributes:
        scene: the encoded scene (B_s clouds).
        features: (B_s, N, C_enc) per-point encoder features (zeros at padding).
        origin: (B_s, 3) grid origin of each cloud, m, world frame.
    """

    scene: SceneInput
    features: torch.Tensor
    origin: torch.Tensor


def _mlp(c_in: int, c_hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_hidden), nn.LayerNorm(c_hidden), Gelu(), nn.Linear(c_hidden, c_out))


def _packed(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, ...) padded + (B, N) mask -> packed (P, ...) in batch order and (P,) int64 batch index."""
    batch = torch.arange(mask.shape[0], device=mask.device)[:, None].expand(mask.shape)
    return values[mask], batch[mask]


class WorldModel(nn.Module):
    """Predicts scene flow from a scene and a batch of robot point flows (see the module docstring).

    Args:
        config: the architecture.
    """

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        if not isinstance(config, WorldModelConfig):
            raise TypeError(f"config: expected a WorldModelConfig, got {type(config).__name__}")
        self.config = config
        T, C = config.horizon, config.token_channels
        self.scene_norm = FeatureNormalizer(SCENE_POINT_CHANNELS + config.image_feature_channels)
        self.robot_norm = FeatureNormalizer(ROBOT_POINT_CHANNELS)
        self.displacement_scale = DisplacementScale(T, config.scale_moving_threshold_m)
        self.encoder = PointTransformerV3(config.encoder)
        per_step_motions = int(config.robot_motion_features) + int(config.segment_prior is not None)
        step_channels = 2 * (T + 1) + 3 * T * per_step_motions
        self.scene_token = _mlp(self.encoder.out_channels + step_channels, C, C)
        self.robot_token = _mlp(ROBOT_POINT_CHANNELS, C, C)
        self.time_embedding = nn.Embedding(T + 1, C)
        self.robot_embedding = nn.Embedding(len(config.robot_types) + 1, C)
        self.mixer = PointTransformerV3(config.mixer)
        c_mix = self.mixer.out_channels
        self.film = nn.Linear(c_mix, 2 * c_mix)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.head = nn.Sequential(nn.LayerNorm(c_mix), nn.Linear(c_mix, config.head_hidden), Gelu(),
                                  nn.Linear(config.head_hidden, 4 * T))

    # ----------------------------------------------------------------------------------------- stats
    @property
    def fitted(self) -> bool:
        """True once normalization statistics were fitted (:meth:`fit_normalization`) or loaded."""
        return bool(self.scene_norm.fitted and self.robot_norm.fitted and self.displacement_scale.fitted)

    def update_normalization(self, scene: SceneInput, action: ActionInput, target: torch.Tensor,
                             valid: torch.Tensor) -> None:
        """Accumulate normalization statistics from one batch (call :meth:`finalize_normalization` after).

        Args:
            scene, action: a training batch (B scenes, B actions).
            target: (B, T, N, 3) ground-truth displacements, m, world frame.
            valid: (B, T, N) bool validity of ``target``.
        """
        origin = self.grid_origin(scene)
        self.scene_norm.update(scene_point_features(scene, origin), scene.mask)
        robot = robot_point_features(action, origin)
        self.robot_norm.update(robot, action.mask[:, None, :].expand(robot.shape[:3]))
        self.displacement_scale.update(target, valid)

    def finalize_normalization(self) -> None:
        """Turn the accumulated statistics into the normalization buffers."""
        self.scene_norm.finalize()
        self.robot_norm.finalize()
        self.displacement_scale.finalize()

    @torch.no_grad()
    def zero_displacement_head(self) -> None:
        """Zero the head's displacement outputs (last layer's weights and biases of the 3 T displacement
        channels; the log-variance channels keep theirs): the network then predicts no correction, i.e.
        exactly the segment prior (or zero motion without one), until it is trained. Used when the
        displacement scale is refit, since the old outputs were in units of the old scale."""
        last = self.head[-1]
        n = 3 * self.config.horizon
        last.weight[:n].zero_()
        last.bias[:n].zero_()

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("WorldModel: normalization statistics are not set; call update_normalization() "
                               "and finalize_normalization() on training data, or load a checkpoint")

    # -------------------------------------------------------------------------------------- forward
    def grid_origin(self, scene: SceneInput) -> torch.Tensor:
        """(B, 3) per-cloud origin: the lowest corner of the grid cell holding each cloud's minimum, m."""
        g = self.config.encoder.grid_size_m
        big = torch.finfo(scene.points.dtype).max
        low = torch.where(scene.mask[..., None], scene.points, torch.full_like(scene.points, big)).amin(1)
        low = torch.where(torch.isfinite(low) & (low < big), low, torch.zeros_like(low))
        return torch.floor(low / g) * g

    def encode_scene(self, scene: SceneInput) -> SceneEncoding:
        """Run the action-independent scene encoder once (reuse the result across candidate actions)."""
        if not isinstance(scene, SceneInput):
            raise TypeError(f"scene: expected a SceneInput, got {type(scene).__name__}")
        self._require_fitted()
        self._check_image_features(scene)
        origin = self.grid_origin(scene)
        feats = self.scene_norm(scene_point_features(scene, origin))
        coord, batch = _packed(scene.points, scene.mask)
        out = self.encoder(coord, feats[scene.mask], batch, scene.batch_size)
        padded = out.new_zeros(scene.mask.shape + (out.shape[-1],))
        padded[scene.mask] = out
        return SceneEncoding(scene=scene, features=padded, origin=origin)

    def _check_image_features(self, scene: SceneInput) -> None:
        F = self.config.image_feature_channels
        got = 0 if scene.image_features is None else scene.image_features.shape[-1]
        if got != F:
            raise ValueError(f"scene.image_features: this model expects {F} lifted image-feature channels "
                             f"per point, got {got}")

    def forward(self, scene: SceneInput | SceneEncoding, action: ActionInput) -> Prediction:
        """Predict the displacement of every scene point under every action (differentiable).

        Args:
            scene: B_s = B or B_s = 1 scenes (broadcast over the actions), or their :class:`SceneEncoding`.
            action: B robot point flows with T = ``config.horizon`` future steps.

        Returns:
            Prediction with displacement (B, T, N, 3) m and log_var (B, T, N) log(m^2), world frame;
            zeros at padded scene points.
        """
        enc = scene if isinstance(scene, SceneEncoding) else self.encode_scene(scene)
        self._check_action(action, enc.scene)
        B = action.batch_size
        s = enc.scene.expand(B)
        features = enc.features.expand((B,) + tuple(enc.features.shape[1:]))
        origin = enc.origin.expand(B, 3)
        steps = scene_step_features(s, action, self.config.max_distance_m)
        T1 = action.horizon + 1  # channels: gripper-open per step, then distance per step
        steps = [steps[..., :T1], steps[..., T1:] / DISTANCE_FEATURE_SCALE_M]
        if self.config.robot_motion_features:
            steps.append(self._per_point_steps(
                nearest_robot_motion(s.points, action.points.to(s.points.dtype), action.mask), s.mask))
        prior = None
        if self.config.segment_prior is not None:
            prior = segment_follow(enc.scene, action, self.config.segment_prior)  # (B, T, N, 3) m
            steps.append(self._per_point_steps(prior, s.mask))
        steps = torch.cat(steps, -1)
        scene_tok = self.scene_token(torch.cat([features, steps.to(features.dtype)], -1))
        robot_tok = self._robot_tokens(action, origin)
        mixed_scene, pooled_robot = self._mix(s, scene_tok, action, robot_tok)
        gamma, beta = self.film(pooled_robot).chunk(2, dim=-1)
        pred = self._heads(mixed_scene * (1 + gamma[:, None]) + beta[:, None], s.mask)
        if prior is None:
            return pred
        return Prediction(pred.displacement + prior.to(pred.displacement.dtype), pred.log_var)

    @staticmethod
    def _per_point_steps(motion: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, N, 3) m per-step displacements -> (B, N, 3 T) scene-token channels (zeros at padding)."""
        B, T, N = motion.shape[:3]
        out = motion.permute(0, 2, 1, 3).reshape(B, N, 3 * T) / DISTANCE_FEATURE_SCALE_M
        return torch.where(mask[..., None], out, torch.zeros_like(out))

    def _check_action(self, action: ActionInput, scene: SceneInput) -> None:
        if not isinstance(action, ActionInput):
            raise TypeError(f"action: expected an ActionInput, got {type(action).__name__}")
        if action.horizon != self.config.horizon:
            raise ValueError(f"action: expected T = {self.config.horizon} future steps "
                             f"({self.config.horizon + 1} in flow), got T = {action.horizon}")
        if scene.batch_size not in (1, action.batch_size):
            raise ValueError(f"scene: expected B = 1 or B = {action.batch_size} (the number of actions), "
                             f"got B = {scene.batch_size}")

    def _robot_tokens(self, action: ActionInput, origin: torch.Tensor) -> torch.Tensor:
        """(B, T+1, M, C) robot tokens: normalized point features + time and robot-type embeddings."""
        tok = self.robot_token(self.robot_norm(robot_point_features(action, origin)))
        robot_type = action.robot_type
        if self.training and self.config.robot_type_dropout > 0:
            drop = torch.rand(robot_type.shape, device=robot_type.device) < self.config.robot_type_dropout
            robot_type = torch.where(drop, torch.zeros_like(robot_type), robot_type)
        steps = torch.arange(action.horizon + 1, device=tok.device)
        return tok + self.time_embedding(steps)[None, :, None] + self.robot_embedding(robot_type)[:, None, None]

    def _mix(self, scene: SceneInput, scene_tok: torch.Tensor, action: ActionInput,
             robot_tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint attention over scene and robot tokens; returns (B, N, C) scene outputs and (B, C) pooled robot."""
        B, N = scene.mask.shape
        S, M = action.flow.shape[1], action.flow.shape[2]
        coords = torch.cat([scene.points, action.points.reshape(B, S * M, 3).to(scene.points.dtype)], 1)
        tokens = torch.cat([scene_tok, robot_tok.reshape(B, S * M, -1)], 1)
        mask = torch.cat([scene.mask, action.mask[:, None, :].expand(B, S, M).reshape(B, S * M)], 1)
        coord, batch = _packed(coords, mask)
        out = self.mixer(coord, tokens[mask], batch, B)
        padded = out.new_zeros(mask.shape + (out.shape[-1],))
        padded[mask] = out
        robot_out = padded[:, N:].masked_fill(~mask[:, N:, None], float("-inf")).amax(1)
        robot_out = torch.where(torch.isfinite(robot_out), robot_out, torch.zeros_like(robot_out))
        return padded[:, :N], robot_out

    def _heads(self, x: torch.Tensor, mask: torch.Tensor) -> Prediction:
        """(B, N, C) mixed scene features -> Prediction in metres (zeros at padding)."""
        T = self.config.horizon
        out = self.head(x)
        scale = self.displacement_scale.scale.to(out.dtype)
        disp = out[..., :3 * T].reshape(x.shape[:2] + (T, 3)) * scale[:, None]
        log_var = LOG_VAR_BOUND * torch.tanh(out[..., 3 * T:] / LOG_VAR_BOUND) + 2.0 * torch.log(scale)
        keep = mask[..., None]
        disp = torch.where(keep[..., None], disp, torch.zeros_like(disp))
        log_var = torch.where(keep, log_var, torch.zeros_like(log_var))
        return Prediction(displacement=disp.permute(0, 2, 1, 3), log_var=log_var.permute(0, 2, 1))

    @torch.no_grad()
    def predict(self, scene: SceneInput | SceneEncoding, action: ActionInput) -> Prediction:
        """:meth:`forward` without gradients (the :class:`~pointworld.model.inputs.FlowPredictor` call).

        Pass a :class:`SceneEncoding` from :meth:`encode_scene` to reuse the scene encoder across calls.
        """
        return self.forward(scene, action)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
