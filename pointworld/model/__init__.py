"""The world model: a Point Transformer V3-style backbone in pure PyTorch, action conditioning, loss, metrics.

- :mod:`~pointworld.model.inputs`: :class:`SceneInput`, :class:`ActionInput`, :class:`Prediction` and the
  :class:`FlowPredictor` protocol shared by the model, the baselines and the planner.
- Backbone: :mod:`~pointworld.model.grid` (grid cells, voxel hash, 3x3x3 neighbours),
  :mod:`~pointworld.model.serialization` (z-order / Hilbert codes and their transposed variants),
  :mod:`~pointworld.model.attention` (serialized patch attention), :mod:`~pointworld.model.blocks`
  (sparse 3x3x3 conditional positional encoding, pre-norm blocks), :mod:`~pointworld.model.pooling`
  (grid pooling / unpooling), :mod:`~pointworld.model.backbone` (:class:`PointTransformerV3` U-Net).
- World model: :mod:`~pointworld.model.features` (scene / robot / per-step features),
  :mod:`~pointworld.model.normalization` (statistics from data, stored with the model),
  :mod:`~pointworld.model.lift` (2D feature maps lifted onto points), :mod:`~pointworld.model.world_model`
  (:class:`WorldModel`: scene encoder once, action mixer per candidate, FiLM, heads) configured by
  :mod:`~pointworld.model.world_model_config` (presets in ``configs/model/``).
- Training objective and evaluation: :mod:`~pointworld.model.loss` (heteroscedastic Huber with moving-point
  weights), :mod:`~pointworld.model.metrics`, :mod:`~pointworld.model.baselines` (zero motion, rigid follow),
  :mod:`~pointworld.model.synthetic` (a toy push problem for smoke training and benchmarks).
"""

from pointworld.model.inputs import ActionInput, FlowPredictor, Prediction, SceneInput
from pointworld.model.world_model import SceneEncoding, WorldModel
from pointworld.model.world_model_config import WorldModelConfig

__all__ = ["ActionInput", "FlowPredictor", "Prediction", "SceneEncoding", "SceneInput", "WorldModel",
           "WorldModelConfig"]
