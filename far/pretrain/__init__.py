"""Offline VideoMAE / MVD / image-MAE pre-training at small scale (``far pretrain``).

Public API:

- :func:`far.pretrain.masking.tube_mask` — VideoMAE tube masking;
- :class:`far.pretrain.models.VideoMAEPretrainModel`, :class:`~far.pretrain.models.MVDPretrainModel` —
  the asymmetric encoder–decoders; :func:`far.pretrain.train.build_models` builds the one of a
  config (and, for MVD, its frozen teachers);
- :mod:`far.pretrain.losses` — normalised-pixel and teacher-feature targets;
- :mod:`far.pretrain.export` — the official VideoMAE/MVD checkpoint layouts;
- :class:`far.pretrain.config.PretrainConfig`, :func:`~far.pretrain.config.load_config`;
- :func:`far.pretrain.train.pretrain` — one resumable run (``far pretrain``).

Imports are lazy so ``far --help`` does not import torch.
"""

__all__ = ["masking", "models", "losses", "export", "config", "train"]
