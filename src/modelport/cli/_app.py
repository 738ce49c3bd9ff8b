"""Typer app: ``serve``, ``demo``, ``models``, ``endpoints``, ``keys``; ``apply``, ``diff`` and
``rollout`` come from ``_deploy``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from modelport.cli import (
    _audit,
    _budgets,
    _compare,
    _cost,
    _environments,
    _identity,
    _intent,
    _limits,
    _planning,
    _policy,
    _recommend,
    _slo,
)
from modelport.cli._common import AsJson, Token, Url, _client, _print, err, out
from modelport.cli._deploy import apply, diff, rollout_app
from modelport.cli._drift import drift
from modelport.cli._usage import usage

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, help="Modelport: trained models to governed endpoints.")
models_app = typer.Typer(no_args_is_help=True, help="Register models, versions and aliases.")
endpoints_app = typer.Typer(no_args_is_help=True, help="Create and inspect endpoints.")
keys_app = typer.Typer(no_args_is_help=True, help="Create and revoke data-plane API keys.")
demo_app = typer.Typer(no_args_is_help=True, help="Build the demo models.")
app.add_typer(models_app, name="models")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(keys_app, name="keys")
app.add_typer(demo_app, name="demo")
app.add_typer(rollout_app, name="rollout")
_cost.register(app)
_slo.register(app)
_policy.register(app)
_audit.register(app)
_limits.register(app)
_budgets.register(app)
_identity.register(app)
_environments.register(app)
_intent.register(app)
_planning.register(app)
_compare.register(app)
_recommend.register(app)
app.command()(apply)
app.command()(diff)
app.command()(usage)
app.command()(drift)

# -- serve and demo --------------------------------------------------------------------------


@app.command()
def serve(
    demo: Annotated[bool, typer.Option(help="Build, register and deploy the demo models.")] = False,
    host: Annotated[str | None, typer.Option(envvar="MODELPORT_HOST", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(envvar="MODELPORT_PORT", show_default=False)] = None,
    home: Annotated[Path | None, typer.Option(envvar="MODELPORT_HOME", show_default=False)] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="MODELPORT_DATABASE_URL", show_default=False)
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(envvar="MODELPORT_LOG_LEVEL", show_default=False)
    ] = None,
) -> None:
    """Run the control plane, gateway and replicas (127.0.0.1:8600 by default)."""
    from modelport.core.settings import Settings
    from modelport.server import serve as run_server

    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "home": home,
        "database_url": database_url,
        "log_level": log_level,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    run_server(settings, demo=demo)


@demo_app.command("build")
def demo_build(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the assets.")] = Path(
        ".modelport/demo"
    ),
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
) -> None:
    """Train the demo classifier on bundled data and export it to ONNX."""
    from modelport.demo import build_demo

    assets = build_demo(out_dir, force=force)
    out.print(f"built {assets.model} metrics={assets.metrics}")


# -- models ----------------------------------------------------------------------------------


_VERSION_COLUMNS = ["model", "version", "runtime", "artifact_digest", "aliases", "created_at"]


@models_app.command("register")
def models_register(
    name: str,
    path: Path,
    task: Annotated[
        str, typer.Option(help="chat, completion, embedding, asr, vision, tabular, custom")
    ],
    runtime: Annotated[str, typer.Option(help="Runtime that loads the artifact, e.g. onnx.")],
    metrics: Annotated[str | None, typer.Option(help="Evaluation metrics as JSON.")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Upload PATH (a file or directory) as the next version of model NAME."""
    if not path.exists():
        err.print(f"[red]error[/red] {path} does not exist: give a model file or directory")
        raise typer.Exit(1)
    fields: dict[str, Any] = {"metrics": json.loads(metrics)} if metrics else {}
    with _client(url, token) as client:
        version = client.register(name, path, task=task, runtime=runtime, **fields)
    _print(version, as_json, _VERSION_COLUMNS)


@models_app.command("list")
def models_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """List registered models."""
    with _client(url, token) as client:
        models = client.list_models()
    for model in models:
        model["versions"] = len(model["versions"])
    _print(models, as_json, ["name", "task", "versions", "aliases", "owner"])


@models_app.command("show")
def models_show(name: str, url: Url = None, token: Token = None) -> None:
    """Show a model with its versions and aliases."""
    with _client(url, token) as client:
        _print(client.get_model(name), True)


@models_app.command("alias")
def models_alias(name: str, alias: str, version: int, url: Url = None, token: Token = None) -> None:
    """Point NAME@ALIAS at VERSION."""
    with _client(url, token) as client:
        client.set_alias(name, alias, version)
    out.print(f"{name}@{alias} -> version {version}")


@models_app.command("delete")
def models_delete(
    name: str,
    version: Annotated[int | None, typer.Option(help="Delete only this version.")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Delete a model, or one version of it (refused while an endpoint uses it)."""
    with _client(url, token) as client:
        if version is None:
            client.delete_model(name)
        else:
            client.delete_version(name, version)
    out.print("deleted")


# -- endpoints -------------------------------------------------------------------------------

_ENDPOINT_COLUMNS = ["name", "model", "version", "replicas", "status", "url"]


@endpoints_app.command("create")
def endpoints_create(
    name: str,
    model: Annotated[str, typer.Option(help="NAME@ALIAS, NAME:VERSION or NAME.")],
    replicas: Annotated[int, typer.Option(min=1)] = 1,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Batch concurrent requests (tabular, vision).")
    ] = None,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits to fill.")] = 5.0,
    wait: Annotated[bool, typer.Option(help="Wait until the replicas are ready.")] = True,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create an endpoint serving a model version."""
    with _client(url, token) as client:
        batching = (
            {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}
            if max_batch_size
            else None
        )
        endpoint = client.create_endpoint(name, model, replicas, batching)
        if wait:
            endpoint = client.wait_ready(name)
    _print(endpoint, as_json, _ENDPOINT_COLUMNS)


@endpoints_app.command("list")
def endpoints_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """List endpoints and their status."""
    with _client(url, token) as client:
        _print(client.list_endpoints(), as_json, _ENDPOINT_COLUMNS)


@endpoints_app.command("show")
def endpoints_show(name: str, url: Url = None, token: Token = None) -> None:
    """Show an endpoint with each replica's state."""
    with _client(url, token) as client:
        _print(client.get_endpoint(name), True)


@endpoints_app.command("delete")
def endpoints_delete(name: str, url: Url = None, token: Token = None) -> None:
    """Delete an endpoint and drain its replicas."""
    with _client(url, token) as client:
        client.delete_endpoint(name)
    out.print(f"deleted endpoint {name}")


# -- keys ------------------------------------------------------------------------------------


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(value: str, option: str) -> int:
    """Seconds from ``90``, ``30m``, ``12h``, ``30d`` or ``2w``."""
    text = value.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:], 0)
    number = text[:-1] if unit else text
    if not number.isdigit():
        raise typer.BadParameter(
            f"{value!r} is not a duration such as 3600, 30m, 12h or 30d", param_hint=option
        )
    return int(number) * (unit or 1)


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project the key belongs to.")] = "default",
    name: Annotated[str, typer.Option(help="A label to tell keys apart.")] = "cli",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="An endpoint the key may call (repeat); none: all of its project's."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d or 12h; none: no expiry.")
    ] = None,
    permission: Annotated[
        list[str] | None,
        typer.Option(help="Data-plane privilege (repeat): pin, route_by_header, any_customer."),
    ] = None,
    customer: Annotated[
        list[str] | None, typer.Option(help="A customer the key may name (repeat).")
    ] = None,
    team: Annotated[str, typer.Option(help="Must be the project's team if given.")] = "",
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create an API key; the key is printed only this once."""
    expires_at = None
    if expires is not None:
        expires_at = datetime.now(UTC) + timedelta(seconds=_duration(expires, "--expires"))
    with _client(url, token) as client:
        key = client.create_key(
            project,
            name,
            team,
            scopes=scope or [],
            expires_at=expires_at,
            permissions=permission or [],
            customers=customer or [],
        )
    if as_json:
        _print(key, True)
    else:
        out.print(key["key"])
        err.print(f"[dim]id {key['id']}, project {key['project']}: store the key now[/dim]")


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List keys by prefix (never their secrets)."""
    with _client(url, token) as client:
        _print(
            client.list_keys(project),
            as_json,
            [
                "id",
                "prefix",
                "project",
                "team",
                "name",
                "scopes",
                "permissions",
                "expires_at",
                "revoked_at",
                "replaced_by",
            ],
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: Url = None, token: Token = None) -> None:
    """Revoke a key; the gateway refuses it at once."""
    with _client(url, token) as client:
        client.revoke_key(key_id)
    out.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    grace: Annotated[
        str, typer.Option(help="How long the old key keeps working, e.g. 1h or 0.")
    ] = "1h",
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Replace a key with a new one of the same settings; the new key is printed only once."""
    seconds = _duration(grace, "--grace")
    with _client(url, token) as client:
        key = client.rotate_key(key_id, grace=seconds)
    if as_json:
        _print(key, True)
    else:
        out.print(key["key"])
        err.print(
            f"[dim]id {key['id']} replaces {key_id}, which works {seconds} s more: "
            "store the key now[/dim]"
        )


def main() -> None:
    app()
