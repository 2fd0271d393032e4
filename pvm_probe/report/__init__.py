"""The dilution report: records -> metrics.json, figures, report.html (with the token explorer)."""

from .build import build_report
from .metrics import SCHEMA_VERSION, build_metrics

__all__ = ["SCHEMA_VERSION", "build_metrics", "build_report"]
