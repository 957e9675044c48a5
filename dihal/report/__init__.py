"""Self-contained HTML reports of ledger results: reports/<spec>.html and reports/index.html.

`write_reports` is the one entry point (called by `dihal run` and `dihal report`);
data fetching (`data`), the values of the "how sure is ℓ*" panels (`trust`),
figures (`plots`, `plots_geometry`) and HTML (`render`) are separate modules so
each can be tested and changed on its own.
"""

from dihal.report.render import write_reports

__all__ = ["write_reports"]
