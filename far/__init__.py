"""FAR: Fusion Attention for Action Recognition — models, data, training and reports."""

__version__ = "0.1.0"
