"""Task-weighting strategies: static mixing, online DRO, baselined DRO and Lookahead DRO."""

from .base import NonFiniteLossError, TaskWeighting
from .dro import BaselinedDRO, OnlineDRO
from .static import StaticMixing

__all__ = ["TaskWeighting", "NonFiniteLossError", "StaticMixing", "OnlineDRO", "BaselinedDRO"]
