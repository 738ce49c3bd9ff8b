"""``modelport apply``, ``diff`` and ``rollout``: intent files, revisions and rollouts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from modelport.cli._common import AsJson, Token, Url, _client, _print, err, out
from modelport.client import ModelportClientError

__all__ = ["apply", "diff", "rollout_app"]

rollout_app = typer.Typer(
    no_args_is_help=True, help="Watch and steer the rollout of an endpoint's new revision."
)

IntentFile = Annotated[
    Path,
    typer.Option("-f", "--file", help="The intent file.", exists=True, dir_okay=False),
]

_FINAL = ("promoted", "rolled_back", "aborted")


def _show_changes(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print(result, True)
        return
    for change in result["changes"]:
        before, after = change["before"], change["after"]
        if before is None:
            out.print(f"[green]+ {change['field']}: {after}[/green]", highlight=False)
        elif after is None:
            out.print(f"[red]- {change['field']}: {before}[/red]", highlight=False)
        else:
            out.print(f"[yellow]~ {change['field']}: {before} -> {after}[/yellow]", highlight=False)
    out.print(result["summary"], highlight=False)


def apply(
    file: IntentFile,
    wait: Annotated[
        bool,
        typer.Option(
            help="Wait until the endpoint serves what the file says (a new revision promoted); "
            "exit 3 if it is rolled back or fails, 4 on timeout."
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="With --wait: seconds to wait before giving up.", min=0)
    ] = 600.0,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create or update an endpoint from its modelport.yaml; a new model version rolls out."""
    with _client(url, token) as client:
        result = client.apply(file)
        _show_changes(result, as_json)
        if not wait:
            return
        try:
            endpoint = client.wait_applied(result, timeout=timeout)
        except TimeoutError as exc:
            err.print(f"[red]timed out[/red] {exc}", highlight=False)
            raise typer.Exit(4) from None
        except ModelportClientError as exc:
            if exc.code not in ("rollout_rolled_back", "rollout_aborted", "endpoint_failed"):
                raise
            err.print(f"[red]{exc.message}[/red]", highlight=False)
            raise typer.Exit(3) from None
        if not as_json:
            promoted = "rollout promoted: " if result["action"] == "rollout" else ""
            out.print(
                f"{promoted}endpoint '{endpoint['name']}' serves {endpoint['stable_revision']}",
                highlight=False,
            )


def diff(file: IntentFile, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Show what applying the intent file would change; change nothing. Exit code 0 when
    nothing would change, 1 when something would."""
    with _client(url, token) as client:
        result = client.diff(file)
    _show_changes(result, as_json)
    if result["action"] != "unchanged":
        raise typer.Exit(1)


def _show_rollout(rollout: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print(rollout, True)
        return
    steps = rollout["steps"] if rollout["strategy"] == "canary" else []
    where = f"step {rollout['step'] + 1}/{len(steps)}" if steps and rollout["step"] >= 0 else ""
    out.print(
        f"{rollout['endpoint']}: {rollout['from_revision']} -> {rollout['to_revision']} "
        f"by {rollout['strategy']}: [bold]{rollout['state']}[/bold] {where}",
        highlight=False,
    )
    live = rollout.get("live") or {}
    if "traffic_percent" in live:
        out.print(f"  {rollout['to_revision']} takes {live['traffic_percent']:g}% of traffic")
    for label, window in (live.get("window") or {}).items():
        out.print(
            f"  {label}: {window['requests']} requests, {window['errors']} errors, "
            f"p95 {window['p95_ms'] or 0:.1f} ms",
            highlight=False,
        )
    if live.get("shadow"):
        agreement = live["shadow"]["agreement"]
        out.print(f"  shadow: {live['shadow']['compared']} compared, agreement {agreement['rate']}")
    if rollout["reason"]:
        out.print(f"  {rollout['reason']}", highlight=False)


@rollout_app.command("status")
def rollout_status(
    endpoint: str,
    watch: Annotated[bool, typer.Option(help="Follow it until it ends.")] = False,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The rollout in progress (or the last one): state, step, traffic and the SLO window."""
    with _client(url, token) as client:
        while True:
            rollout = client.rollout(endpoint)
            _show_rollout(rollout, as_json)
            if not watch or rollout["state"] in _FINAL:
                return
            time.sleep(2)


@rollout_app.command("history")
def rollout_history(
    endpoint: str, url: Url = None, token: Token = None, as_json: AsJson = False
) -> None:
    """Every rollout of the endpoint, newest first, with what happened and why."""
    with _client(url, token) as client:
        history = client.rollout_history(endpoint)
    if as_json:
        _print(history, True)
        return
    for rollout in history:
        _show_rollout(rollout, False)
        for event in rollout["events"]:
            out.print(f"    {event['at']}  {event['kind']:<12} {event['message']}", highlight=False)


def _steer(action: str, help_text: str) -> None:
    def command(
        endpoint: str, url: Url = None, token: Token = None, as_json: AsJson = False
    ) -> None:
        with _client(url, token) as client:
            _show_rollout(client.rollout_action(endpoint, action), as_json)

    command.__doc__ = help_text
    rollout_app.command(action)(command)


_steer("pause", "Hold the rollout where it is; traffic stays as it is.")
_steer("resume", "Carry on from the step where it was paused.")
_steer("promote", "Send all traffic to the new revision now and finish the rollout.")
_steer(
    "rollback",
    "Send all traffic back to the previous revision now (undoes a finished promotion too).",
)
_steer("abort", "Stop the rollout and send all traffic back to the stable revision.")
_steer(
    "approve",
    "Approve the rollout's promotion as a second person (four-eyes); the one who started it "
    "cannot. A rollout waiting for approval at its last step is promoted at once.",
)
