"""The dilution report: collect results from checkpoints, then figures, metrics.json and report.html."""

from .build import SCHEMA_VERSION, build_report

__all__ = ["SCHEMA_VERSION", "build_report"]
