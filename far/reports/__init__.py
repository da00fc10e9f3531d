"""The reproduction report: the paper's Tables 1-8 and figures from the pipeline's outputs.

- :mod:`far.reports.collect`: read each run's ``train.json``, ``history.csv`` and
  ``test/metrics.json``; cells = mean ± half-range over seeds.
- :mod:`far.reports.tables`: Tables 1-8 in the paper's layout beside the paper's values.
- :mod:`far.reports.figures`: accuracy vs GFLOPs, training curves, Figure 2 from the masks.
- :mod:`far.reports.gradcam`: ``far gradcam`` (Figures 6/7 of the pipeline: the runs, the
  choice of videos, ``far explain``) and the localisation table.
- :mod:`far.reports.build`: everything under ``reports/`` with a README index.
- :mod:`far.reports.cli`: ``far report``.
"""
