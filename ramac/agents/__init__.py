"""Agents: one per file, wiring the shared networks of `ramac.nets`."""

from .radac import RADAC

__all__ = ["RADAC"]
