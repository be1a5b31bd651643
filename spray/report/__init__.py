"""Per-class HTML bias reports, figures, CSV/JSON tables and the run index."""
from .build import write_report

__all__ = ["write_report"]
