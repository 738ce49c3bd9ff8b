"""``modelport drift ENDPOINT``: each feature's drift score against its threshold."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from modelport.cli._common import AsJson, Token, Url, _client, _print, out

__all__ = ["drift"]

_STYLE = {"drift": "red", "warn": "yellow", "ok": "green"}


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pvalue(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def drift(endpoint: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Show each feature's drift (PSI, KS) against its threshold, per running revision."""
    with _client(url, token) as client:
        report: dict[str, Any] = client.get_drift(endpoint)
    if as_json:
        _print(report, True)
        return
    limits = report["thresholds"]
    out.print(
        f"endpoint {endpoint}: sampling {report['sample_rate']:.0%} of V2 calls; drift at PSI "
        f">= {limits['psi_drift']:g} (warn {limits['psi_warn']:g}) or KS p < "
        f"{limits['ks_alpha']:g}/features with statistic >= {limits['ks_min_statistic']:g}",
        highlight=False,
    )
    if not report["revisions"]:
        out.print("no scores yet: drift is scored once sampled calls arrive", highlight=False)
    for revision in report["revisions"]:
        alert = "[red]drift alert open[/red]" if revision["alert"] else "no alert"
        drifted = ", ".join(revision["drifted"]) or "none"
        out.print(f"\n{revision['revision']}: {alert}; drifted: {drifted}", highlight=False)
        table = Table("feature", "source", "status", "psi", "ks", "ks p", "live", "reference")
        for feature in revision["features"]:
            status = feature["status"]
            style = _STYLE.get(status)
            table.add_row(
                feature["feature"],
                feature["source"],
                f"[{style}]{status}[/{style}]" if style else status,
                _number(feature["psi"]),
                _number(feature["ks_statistic"]),
                _pvalue(feature["ks_pvalue"]),
                str(feature["live_rows"]),
                str(feature["reference_rows"]),
            )
        out.print(table)
