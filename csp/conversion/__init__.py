"""Conversion of vendor slides into CSP containers."""

from csp.conversion.pipeline import ConversionResult, convert
from csp.conversion.plan import LevelPlan, plan_levels

__all__ = ["ConversionResult", "LevelPlan", "convert", "plan_levels"]
