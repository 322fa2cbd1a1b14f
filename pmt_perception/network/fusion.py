"""Deprecated module name: BatchNorm folding lives in `batchnorm_folding`. Kept only so that
bench/gpu.py keeps importing until it uses the new name; delete it then."""
from .batchnorm_folding import fold_batchnorm

__all__ = ["fold_batchnorm"]
