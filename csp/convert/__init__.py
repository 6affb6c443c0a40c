"""Conversion of vendor slides into CSP containers."""

from csp.convert.pipeline import ConversionResult, convert
from csp.convert.plan import LevelPlan, plan_levels

__all__ = ["ConversionResult", "LevelPlan", "convert", "plan_levels"]
