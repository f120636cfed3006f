"""On-disk data of pointworld: the versioned HDF5 episode format shared by simulated and real recordings
(:mod:`~pointworld.data.episode`, :mod:`~pointworld.data.episode_io`, schema in ``SCHEMA.md``) and the
metadata of a dataset directory with its train/val/test split (:mod:`~pointworld.data.dataset_meta`).
"""
