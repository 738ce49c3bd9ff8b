"""``modelport plan``, ``modelport bench`` and ``modelport hardware``: what an intent would
run on and cost before it is applied, measured profiles to size it from, and the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelport.cli._common import Token, Url, _client, _print, err, out

__all__ = ["register"]

Format = Annotated[str, typer.Option("--format", help="table or json.")]
_COLUMN = 19  # where a plan line's text starts
IntentFile = Annotated[
    Path,
    typer.Option("-f", "--file", help="The intent file.", exists=True, dir_okay=False),
]


def register(app: typer.Typer) -> None:
    """Add ``plan``, ``bench`` and ``hardware`` to the main app."""
    app.command("plan")(plan)
    app.command("bench")(bench)
    app.command("hardware")(hardware)


def _check_format(format: str) -> bool:
    """True for json; exits 2 on anything but table or json."""
    if format not in ("table", "json"):
        err.print(f"[red]error[/red] --format: table or json, got {format!r}")
        raise typer.Exit(2)
    return format == "json"


# --- plan -----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _option_line(option: dict[str, Any]) -> str:
    where = f"{option['environment']} / {option['hardware']} x{option['devices']}"
    replicas = f"{option['replicas']} replica(s)"
    figures = f"p95 {_ms(option['p95_ms'])}, {_usd(option['monthly_usd'])}/month"
    why = f": {option['reason']}" if option.get("reason") else ""
    return f"{where}, {replicas}, {figures} ({option['basis']}){why}"


def _show(label: str, text: str, style: str = "") -> None:
    """One line of the plan: a label column, then ``text`` (the server's words, printed as
    they are: a ``[measured]`` in them is not markup)."""
    head = f"[{style}]{escape(label)}[/{style}]" if style else escape(label)
    out.print(f"{head:<{_COLUMN + len(head) - len(label)}}{escape(text)}", highlight=False)


def _print_plan(result: dict[str, Any]) -> None:
    targets = result["targets"]
    _show("plan", f"endpoint '{result['endpoint']}' ({result['model']}, {result['task']})")
    if result["feasible"]:
        _show("environment", result["environment"])
        _show("", result["environment_reason"])
        _show("hardware", f"{result['hardware']} x{result['devices']} per replica")
        replicas = result["replicas"]
        _show("replicas", f"min {replicas['min']}, max {replicas['max']}")
        peak = targets["peak_rps"]
        at_peak = f"at peak {peak:g} rps" if peak is not None else "(no traffic.peak_rps given)"
        target = targets["p95_latency_ms"]
        goal = f" (SLO {_ms(target)})" if target is not None else ""
        _show(
            "p95",
            f"{_ms(result['predicted_p95_ms'])} {at_peak}{goal}, headroom "
            f"{_share(result['headroom'])}, basis {result['basis']}",
        )
        budget = targets["monthly_usd"]
        cap = f" (budget {_usd(budget)})" if budget is not None else ""
        _show("monthly cost", f"{_usd(result['monthly_usd'])}{cap}")
    else:
        _show("infeasible", result["reason"] or "", "red")
        _show("environment", result["environment_reason"])
        if result["closest"] is not None:
            _show("closest", _option_line(result["closest"]))
    for title, key in (("cheaper", "rejected_cheaper"), ("faster", "rejected_faster")):
        options = result[key]
        _show(f"{title}, rejected", "" if options else "none")
        for option in options:
            _show("", f"- {_option_line(option)}")
    policy = result["policy"]
    if policy["allowed"]:
        warned = f" ({len(policy['warnings'])} audit-mode warning(s))" if policy["warnings"] else ""
        _show("policy", f"allowed{warned}", "green")
    else:
        _show("policy", "denied", "red")
    for rule in policy["denials"] + policy["warnings"]:
        reasons = f" ({'; '.join(rule['reasons'])})" if rule.get("reasons") else ""
        _show("", f"- {rule['policy']}/{rule['rule']} ({rule['mode']}){reasons}: {rule['message']}")
    _print_diff(result)


def _print_diff(result: dict[str, Any]) -> None:
    changes = result["diff"]
    if not changes:
        _show("diff", "none: the endpoint already runs this intent")
        return
    if not result["endpoint_exists"]:
        what = "a new endpoint"
    elif all(change["before"] is None for change in changes):
        what = "the endpoint was deployed without an intent file: every field is new"
    else:
        what = "changes to the deployed intent"
    _show("diff", what)
    for change in changes:
        field, before, after = escape(change["field"]), change["before"], change["after"]
        if before is None:
            line = f"  [green]+ {field}: {escape(str(after))}[/green]"
        elif after is None:
            line = f"  [red]- {field}: {escape(str(before))}[/red]"
        else:
            line = f"  [yellow]~ {field}: {escape(str(before))} -> {escape(str(after))}[/yellow]"
        out.print(line, highlight=False)


def plan(
    file: IntentFile,
    format: Format = "table",
    url: Url = None,
    token: Token = None,
) -> None:
    """What the intent file would run on (environment, hardware, replicas), its predicted p95
    and monthly cost, the alternatives rejected, the policy verdict and the diff against what
    is deployed. Exit code 0 when feasible and allowed, 1 otherwise (for CI)."""
    as_json = _check_format(format)
    with _client(url, token) as client:
        result = client.plan(file)
    if as_json:
        _print(result, True)
    else:
        _print_plan(result)
    if not result["feasible"] or not result["policy"]["allowed"]:
        raise typer.Exit(1)


# --- bench ----------------------------------------------------------------------------------


def _levels(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        err.print(f"[red]error[/red] --concurrency: comma-separated integers, got {text!r}")
        raise typer.Exit(2) from None


def _shares(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        err.print(f"[red]error[/red] --open-loop: comma-separated shares, got {text!r}")
        raise typer.Exit(2) from None


def _duration(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # "3s", "500ms": the server reads durations


def bench(
    endpoint: Annotated[str, typer.Argument(help="The endpoint to measure.")],
    revision: Annotated[
        str | None, typer.Option(help="The revision (rN); default: the stable one.")
    ] = None,
    concurrency: Annotated[
        str, typer.Option(help="Callers per replica at each level, comma-separated.")
    ] = "1,2,4,8",
    duration: Annotated[str, typer.Option(help="Time at each level: 5s, 500ms or seconds.")] = "5s",
    open_loop: Annotated[
        str,
        typer.Option(
            "--open-loop",
            help="Then open-loop runs at these shares of the top throughput, comma-separated "
            "('' for none).",
        ),
    ] = "0.4,0.55,0.7",
    rate: Annotated[
        float | None,
        typer.Option(
            help="Instead: one open-loop run at this many requests per second per replica, "
            "to check a plan's predicted p95 (not stored).",
            show_default=False,
        ),
    ] = None,
    format: Format = "table",
    url: Url = None,
    token: Token = None,
) -> None:
    """Measure a running revision's latency and throughput at several concurrencies, straight
    at its replicas (at most 60 s), and store the profile that 'modelport plan' sizes from."""
    as_json = _check_format(format)
    with _client(url, token) as client:
        profile = client.bench(
            endpoint,
            revision=revision,
            concurrency=None if rate is not None else _levels(concurrency),
            duration=_duration(duration),
            rate=rate,
            open_loop=None if rate is not None else _shares(open_loop),
        )
    if as_json:
        _print(profile, True)
        return
    machine = profile["machine"]
    stored = f"profile {profile['id']}" if profile["id"] is not None else "not stored"
    out.print(
        f"{stored}: {profile['endpoint']} {profile['revision']} "
        f"({profile['model']}) on {profile['hardware']}, {profile['replicas']} replica(s), "
        f"{profile['duration_s']:g} s per level",
        highlight=False,
    )
    out.print(
        f"machine: {machine.get('cpu')}, {machine.get('usable_cores')}/{machine.get('cores')} "
        f"cores, {machine.get('memory_gb')} GB, {machine.get('platform')}",
        highlight=False,
    )
    table = Table("load", "requests", "rps/replica", "p50", "p95", "p99", "errors")
    for point in profile["points"]:
        table.add_row(
            f"open loop {point['rate']:.0f}/s"
            if point["concurrency"] == 0
            else f"{point['concurrency']} in flight",
            str(point["requests"]),
            f"{point['rps']:,.1f}",
            _ms(point["p50_ms"]),
            _ms(point["p95_ms"]),
            _ms(point["p99_ms"]),
            str(point["errors"]),
        )
    out.print(table)
    if any(point["errors"] for point in profile["points"]):
        last = next(p.get("last_error") for p in profile["points"] if p["errors"])
        err.print(f"[yellow]some calls failed[/yellow]: {last}", highlight=False)


# --- hardware -------------------------------------------------------------------------------


def hardware(format: Format = "table", url: Url = None, token: Token = None) -> None:
    """The hardware catalog: memory, bandwidth, compute and hourly price of each type."""
    as_json = _check_format(format)
    with _client(url, token) as client:
        types = client.hardware()
    if as_json:
        _print(types, True)
        return
    table = Table("name", "kind", "memory GB", "bandwidth GB/s", "bf16 TFLOP/s", "USD/hour")
    for entry in types:
        table.add_row(
            entry["name"],
            entry["kind"],
            f"{entry['memory_gb']:g}",
            f"{entry['bandwidth_gbs']:g}",
            f"{entry['bf16_tflops']:g}",
            f"{entry['hourly_usd']:.4g}",
        )
    out.print(table)
