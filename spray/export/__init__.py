"""Exports of a run for other tools: ViRelAy 0.6 (``spray export virelay RUN [OUT]``)."""
from .virelay import export_virelay, write_analysis_file

__all__ = ["export_virelay", "write_analysis_file"]
