"""Tables, plots and one Markdown report per experiment, from stored results."""

from nasdet.report.search_report import pareto_front, write_search_report

__all__ = ["pareto_front", "write_search_report"]
