"""The hyperparameters of `train-reward`, in a module of their own that imports no torch: the
command line builds its parser from them (`reward.train.add_arguments`) on every run of
`arena-serve`, and torch loads only when a model is trained."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The hyperparameters; the defaults are practical on two CPU cores."""

    top_layers: int = 2
    epochs: int = 6
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    max_length: int = 512
    patience: int = 2
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"


DEFAULTS = Settings()
