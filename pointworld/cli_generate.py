"""Body of ``pointworld generate`` (CLI layer: turns its Hydra config into library calls)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def run_generate(cfg: DictConfig) -> int:
    """``pointworld generate robot=... episodes=... workers=... out=DIR``: generate, then print the summary."""
    from pointworld.data.generate import generate_dataset
    from pointworld.data.generate_config import GenerateConfig

    config = GenerateConfig(**OmegaConf.to_container(cfg, resolve=True))
    s = generate_dataset(config, progress=True)
    phases = ", ".join(f"{k} {v:.2f}" for k, v in s["phase_seconds_per_clip"].items())
    print(f"{s['out']}: {s['robot']}: {s['episodes']} episode(s) ({s['generated']} generated, "
          f"{s['skipped']} already there), {s['clips']} clips")
    print(f"clips with object motion: {s['moving_clip_share']:.1%}")
    print(f"seconds per clip: {s['seconds_per_clip']:.2f} ({phases}); size on disk: "
          f"{s['mb_per_clip']:.2f} MB per clip")
    return 0
