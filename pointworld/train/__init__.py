"""Training, checkpoints, distributed runs and evaluation of the world model.

- :mod:`~pointworld.train.checkpoint`: :func:`save_checkpoint` (atomic), :func:`load_checkpoint`
  (``weights_only``), :func:`build_model`, RNG state capture/restore for exact resume.
- :mod:`~pointworld.train.distributed`: :class:`DistributedContext` from torchrun's environment,
  :func:`init_distributed`, :func:`cleanup`, :func:`all_reduce_sum`, :func:`broadcast_module_buffers`.
- :mod:`~pointworld.train.pretrained`: the bundled tiny checkpoint (:data:`PRETRAINED_PATH`,
  :func:`load_pretrained`).
- :mod:`~pointworld.train.config`, :mod:`~pointworld.train.loop`: :class:`TrainConfig` and :func:`train`.
- :mod:`~pointworld.train.evaluate`: metrics of predictors (model and baselines) per robot.

Nothing is imported here; import the submodules directly.
"""
