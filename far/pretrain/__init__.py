"""Offline VideoMAE / MVD / image-MAE pre-training at small scale (``far pretrain``).

Public API:

- :func:`far.pretrain.masking.tube_mask` — VideoMAE tube masking;
- :class:`far.pretrain.models.VideoMAEPretrainModel`, :class:`~far.pretrain.models.MVDPretrainModel`,
  :func:`~far.pretrain.models.build_pretrain_model` — the asymmetric encoder–decoders;
- :mod:`far.pretrain.losses` — normalised-pixel and teacher-feature targets;
- :mod:`far.pretrain.export` — the official VideoMAE/MVD checkpoint layouts;
- :class:`far.pretrain.config.PretrainConfig`, :func:`~far.pretrain.config.load_config`;
- :func:`far.pretrain.train.pretrain` — one resumable run (``far pretrain``).

Imports are lazy so ``far --help`` does not import torch.
"""

__all__ = ["masking", "models", "losses", "export", "config", "train"]
