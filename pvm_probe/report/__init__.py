"""The dilution report: records -> metrics.json, figures, report.html (with the token explorer)."""

from .build import build_report, metrics_of
from .explorer import answer_html, explorer_html
from .figures import report_figures
from .metrics import SCHEMA_VERSION, build_metrics
from .page import headline_html

__all__ = ["SCHEMA_VERSION", "answer_html", "build_metrics", "build_report", "explorer_html", "headline_html",
           "metrics_of", "report_figures"]
