"""Numerical constants shared by the JAX layers and the float64 NumPy theory (one definition each)."""

import math

__all__ = ["LOG_2PI"]

LOG_2PI = math.log(2.0 * math.pi)  # ln(2 pi), the Gaussian normaliser per dimension
