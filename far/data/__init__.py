"""Data: synthetic datasets, SSv2/K400 preparation, decoding, sampling, augmentation, loaders.

Public API (import from the submodules; nothing heavy is imported here):

* ``far.data.config.DataConfig`` (``far.config.from_mapping(DataConfig, ...)``, ``preset``)
* ``far.data.dataset.VideoDataset(cfg, mode="train"|"test")``, ``far.data.dataset.collate``
* ``far.data.loader.build_loader(dataset, batch_size, train=..., seed=..., ...)``
* ``far.data.mixup.AugmentConfig``, ``far.data.mixup.build_mixup(cfg, num_classes)``
* ``far.data.synth.generate(SynthSpec(...), out)``, ``far.data.prepare.prepare(...)``
"""
