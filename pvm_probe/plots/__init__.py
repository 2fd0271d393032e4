"""Figure functions: results in, figure out. Nothing here runs a model."""

from .painter import plot_accuracy_by_quartile, plot_training_curves

__all__ = ["plot_accuracy_by_quartile", "plot_training_curves"]
