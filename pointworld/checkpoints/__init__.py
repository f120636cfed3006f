"""Pretrained checkpoints shipped with pointworld (package data).

- ``tiny.pt``: the ``tiny`` world model trained on simulated Franka, bimanual and flying-gripper episodes
  (weights, normalization statistics, model and training config, dataset description, metrics); load it
  with :func:`pointworld.load_pretrained`.
- ``tiny_eval.json``: its evaluation on the held-out test split and on a robot it never saw, next to the
  zero-motion and rigid-follow baselines; ``tiny_train_config.json``: how it was trained.

``python scripts/make_pretrained.py --work DIR`` reproduces all three files.
"""
