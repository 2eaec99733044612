"""DVC stage `report`: Tables 1-6, figures and the static site under reports/ (``pipeline.report``)."""

from __future__ import annotations

from pipeline.config import Params
from stages import stage_main


def report(params: Params) -> None:
    """Write the site (``pipeline.report.site.write_report``) and print what it holds."""
    from pipeline.report.site import write_report

    print(write_report(params).text())


def main() -> None:
    stage_main(report, "report")


if __name__ == "__main__":
    main()
