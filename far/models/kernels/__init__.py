"""Fused kernels of the FAR model (Triton on CUDA, the same math in PyTorch elsewhere)."""

from far.models.kernels.tgi_conv import HAVE_TRITON, neighbour_table, tgi_conv, tgi_conv_gather

__all__ = ["HAVE_TRITON", "neighbour_table", "tgi_conv", "tgi_conv_gather"]
