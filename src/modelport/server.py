"""``modelport serve``: the control plane, the gateway and the supervisor in one process.

Requests are dispatched by path prefix before any framework runs, so the data plane
(``/v2``, ``/v1``) never pays for the control plane's FastAPI stack.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
from pathlib import Path
from typing import Any

import uvicorn

from modelport.backends import LocalBackend
from modelport.control import ControlPlane, RolloutController, create_control_app
from modelport.control import prices as price_catalog
from modelport.control.alerts import DbEpisodeStore, seal_webhook_secrets
from modelport.control.app import ControlApp
from modelport.control.autoscaler import Autoscaler
from modelport.control.budgets import BudgetService
from modelport.control.drift import DriftService
from modelport.control.slo import SloBook
from modelport.control.uptime import ReplicaUptime
from modelport.control.usage_process import UsageLoaderProcess
from modelport.core.asgi import Receive, Scope, Send, send_json
from modelport.core.settings import Settings
from modelport.demo_deploy import register_demos
from modelport.gateway import GatewayApp, UpstreamPool
from modelport.governance import SecretStore, load_or_create_admin_token
from modelport.governance.admission import Admission, Guard
from modelport.governance.auth_failures import AuthFailureThrottle
from modelport.governance.budget_ledger import BudgetLedger, MemoryLedger
from modelport.governance.budgets import BudgetGuard
from modelport.governance.counters import Counters, MemoryCounters
from modelport.governance.rate_limits import ConcurrencyGuard, LimitTable, RateLimitGuard
from modelport.governance.secrets import SecretCipher
from modelport.observability import (
    RecentUsage,
    RevisionWindows,
    ShadowReports,
    configure_logging,
    tracing,
)
from modelport.observability.alerts import Alerts
from modelport.observability.drift import Thresholds
from modelport.observability.journal import UsageJournal
from modelport.observability.metrics import MetricsRoute, ModelportMetrics
from modelport.observability.pricing import PriceBook
from modelport.observability.sampling import Sampler
from modelport.store import ArtifactStore, Database

__all__ = ["ModelportServer", "serve"]

log = logging.getLogger("modelport.server")


class ModelportServer:
    """The root ASGI app; its lifespan starts and stops everything else."""

    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        self.settings = settings
        self.demo = demo
        self.upstream = UpstreamPool(
            max_connections=settings.upstream_max_connections,
            idle_timeout_s=settings.upstream_idle_timeout_s,
            max_response_bytes=settings.max_response_bytes,
        )
        self.usage = RecentUsage()
        # Every metered request is appended here before it is answered; the recent-usage
        # ring (and metrics) read it in batches through the journal's fan-out.
        self.journal = UsageJournal(
            settings.home / "usage", segment_bytes=settings.usage_segment_bytes
        )
        self.journal.subscribe(self.usage.take)
        self.usage.catch_up = self.journal.fan_out
        self.loader: UsageLoaderProcess | None = None
        self.alerts: Alerts | None = None
        self.slo: SloBook | None = None
        self.windows = RevisionWindows()
        self.shadows = ShadowReports()
        self.gateway = GatewayApp(
            self.upstream,
            settings.max_body_bytes,
            self.journal if settings.metering else self.usage,
            self.windows,
            self.shadows,
            timeout_s=settings.upstream_timeout_s,
            stream_chunk_timeout_s=settings.stream_chunk_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )
        # Drift: sampled V2 calls queue here; the drift scorer drains them off the hot path.
        self.sampler = Sampler(settings.drift_sample_rate)
        if settings.metering and settings.drift_sample_rate > 0:
            self.gateway.sampler = self.sampler
        # Repeated failed authentications per address, on both planes (the control plane's
        # guard may share it): 429 until the minute has passed.
        self.auth_failures = AuthFailureThrottle(settings.auth_failures_per_minute)
        self.gateway.auth_failures = self.auth_failures
        # Admission: rate limits, concurrency, budgets. Counters in Redis when several
        # gateways share them, else in memory; a guard joins the gateway's admission only
        # while something is configured for it (see _arm_admission).
        self.counters: Counters = MemoryCounters()
        ledger: BudgetLedger = MemoryLedger()
        if settings.redis_url:
            # Imported only then: redis-py pulls in OpenTelemetry's SDK.
            from modelport.governance.budget_redis import RedisLedger
            from modelport.governance.counters import RedisCounters

            self.counters = RedisCounters(settings.redis_url, timeout_s=settings.redis_timeout_s)
            ledger = RedisLedger(settings.redis_url, timeout_s=settings.redis_timeout_s)
        self.rate_limits = RateLimitGuard(self.counters, fail_open=settings.limits_fail_open)
        self.concurrency = ConcurrencyGuard(self.counters, fail_open=settings.limits_fail_open)
        # Budgets (governance/budgets.py BudgetGuard) go here, last: a reservation is
        # the dearest hold to take for a request the limits would refuse anyway.
        self.budgets = BudgetGuard(
            ledger,
            default_output_tokens=settings.budget_default_output_tokens,
            fail_open=settings.budgets_fail_open,
        )
        self.budgets.on_publish = self._arm_admission
        self.drift: DriftService | None = None
        self.metrics = ModelportMetrics()
        self.journal.subscribe(self.metrics.consume)
        self._metrics_route = MetricsRoute(self.metrics, self._may_scrape)
        self.plane: ControlPlane | None = None
        self.controller: RolloutController | None = None
        self.autoscaler: Autoscaler | None = None
        self._control: ControlApp | None = None
        self._announcer: asyncio.Task[None] | None = None
        self.uptime: ReplicaUptime | None = None
        # Traced only when an OTLP endpoint is set: otherwise requests go straight in.
        tracing.configure_tracing(settings.otlp_endpoint, "modelport")
        self._data_plane = tracing.traced_gateway(self.gateway) if tracing.ENABLED else self.gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(("/v2", "/v1/")):
                await self._data_plane(scope, receive, send)
            elif path == "/healthz":
                await send_json(send, 200, {"status": "ok"})
            elif path == "/metrics" and self.controller is not None:
                await self._metrics_route(scope, receive, send)
            elif self._control is not None:
                # The guard authenticates before reading the body, then bounds it.
                await self._control(scope, receive, send)
            else:
                await send_json(send, 503, {"error": "starting"})
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def startup(self) -> None:
        settings = self.settings
        settings.home.mkdir(parents=True, exist_ok=True)
        token, created = load_or_create_admin_token(settings.admin_token_path)
        db = Database(settings.resolved_database_url)
        await asyncio.to_thread(db.migrate)
        # Secrets at rest: the key is never in the database. Plaintext left by an older
        # version is encrypted now; a key that does not open what is stored stops the start.
        secrets_key = settings.secrets_key
        cipher = SecretCipher.from_settings(
            secrets_key.get_secret_value() if secrets_key is not None else None, settings.home
        )
        secret_store = SecretStore(settings.home / "secrets", cipher)
        await asyncio.to_thread(secret_store.seal)
        await asyncio.to_thread(seal_webhook_secrets, db, cipher)
        await self.journal.start()
        # Sends what a stopped run left pending; open episodes are not sent again.
        self.alerts = Alerts(DbEpisodeStore(db, cipher))
        await self.alerts.start()
        self.slo = SloBook(db, self.alerts, interval_s=settings.slo_eval_interval_s)
        await self.slo.start()
        # The API's view of the price catalog (refreshed whenever a price is set); the loader
        # keeps its own, read from the database before each pass.
        prices = PriceBook()
        await asyncio.to_thread(price_catalog.refresh, db, prices)
        # Loads what a previous run journaled but did not load (a crash), then keeps up; in
        # its own process, re-reading prices and latency targets from the database.
        self.loader = UsageLoaderProcess(
            {
                "database_url": settings.resolved_database_url,
                "directory": str(self.journal.directory),
                "interval_s": settings.usage_load_interval_s,
                "retention_days": settings.usage_retention_days,
                "log_level": settings.log_level,
                "log_format": settings.log_format,
            }
        )
        await self.loader.start()
        backend = LocalBackend(
            logs_dir=settings.logs_dir,
            health_interval_s=settings.health_interval_s,
            health_timeout_s=settings.health_timeout_s,
            start_timeout_s=settings.worker_start_timeout_s,
            busy_grace_s=settings.replica_busy_grace_s,
            log_level=settings.log_level,
            hidden_dir=settings.home if settings.replica_sandbox else None,
            log_format=settings.log_format,
            otlp_endpoint=settings.otlp_endpoint,
        )
        # A replica scaled away stops once the gateway has nothing in flight at it.
        backend.in_flight = self.gateway.balancer.in_flight
        # Before any replica starts: closes what a crash left open, then records each start.
        self.uptime = ReplicaUptime(db)
        await self.uptime.start()
        backend.on_replicas = self.uptime.set_replicas
        self.plane = ControlPlane(
            settings=settings,
            db=db,
            artifacts=ArtifactStore(
                settings.artifacts_dir,
                max_bytes=settings.max_artifact_bytes,
                max_files=settings.max_artifact_files,
                # The demo's own files are readable; the rest of the home (tokens, secrets,
                # the database) never is, even under an allowed root.
                readable=(*settings.artifact_root_paths, settings.home / "demo"),
                unreadable=(settings.home,),
            ),
            backend=backend,
            admin_token=token,
            publish_routes=self.gateway.publish_routes,
            publish_keys=self.gateway.publish_keys,
            usage=self.usage,
            secrets=secret_store,
        )
        self.plane.prices = prices
        # Budgets price with the same book; their lines are seeded with what was spent this
        # day and month (stored and journaled) before the gateway takes a request.
        self.budgets.prices = prices
        self.plane.budgets = BudgetService(
            db,
            self.budgets,
            alerts=self.alerts,
            journal=self.journal.directory if settings.metering else None,
            cost_of=prices.cost_of,
            interval_s=settings.budget_check_interval_s,
        )
        await self.plane.budgets.start()
        # Data-plane 403s and throttled addresses go to the audit log (queued, off the loop).
        audit = self.plane.audit
        self.gateway.on_denied = audit.denied
        self.auth_failures.on_throttled = lambda address: audit.denied(
            actor_name="anonymous",
            action="auth.throttled",
            target="authentication",
            request_id="",
            source=address,
            reason="repeated failed authentications: refused with 429 for a minute",
        )
        self.plane.limits.subscribe(self._publish_limits)
        await self.plane.start()
        self.drift = DriftService(
            db,
            self.sampler,
            thresholds=Thresholds(
                psi_warn=settings.drift_psi_warn,
                psi_drift=settings.drift_psi_threshold,
                ks_alpha=settings.drift_ks_alpha,
                ks_min_statistic=settings.drift_ks_min_statistic,
                min_rows=settings.drift_min_rows,
                latency_factor=settings.drift_latency_factor,
            ),
            interval_s=settings.drift_interval_s,
            window_rows=settings.drift_window_rows,
            baseline_rows=settings.drift_baseline_rows,
            alerts=self.alerts,
        )
        # Latency and token or audio lengths per revision come from the usage records.
        self.journal.subscribe(self.drift.observe_usage)
        await self.drift.start()
        self.controller = RolloutController(
            self.plane,
            self.windows,
            self.shadows,
            tick_s=settings.rollout_tick_s,
            start_timeout_s=settings.worker_start_timeout_s,
            drift=self.drift,
        )
        await self.controller.start()
        # Replicas follow load where intents let them; a revision scaled to zero is woken by
        # its first request, which waits for it (the gateway asks, on the event loop).
        self.autoscaler = Autoscaler(self.plane, self.gateway.load)
        await self.autoscaler.start()
        self.plane.autoscaling = self.autoscaler.view
        self.gateway.waker.on_wake = self.autoscaler.wake
        self.metrics.watch(
            load=lambda: self.gateway.balancer.load(self.gateway.snapshot, self.upstream.queued),
            replicas=self.plane.replica_counts,
            rollouts=self.controller.progress,
            budgets=self.slo.snapshot,
            serving=lambda: (
                (name, label)
                for name, traffic in self.gateway.snapshot.routes.items()
                for label in traffic.revisions
            ),
        )
        self._control = create_control_app(self.plane, self.controller)
        # One count of failed credentials per address, whichever plane they were sent to.
        self._control.guard.throttle = self.auth_failures
        if self.demo:
            for name, deployment in await asyncio.to_thread(
                register_demos, self.plane, self.settings
            ):
                await self.plane.serve(name, deployment)
        # Every endpoint the server starts with is now in the routing snapshot: readiness
        # (/v2/health/ready) waits for each of them to have a ready replica.
        self.gateway.started = True
        self._announcer = asyncio.create_task(self._announce_ready())
        _settle_garbage_collector()
        log.info(
            "admin token %s %s", "written to" if created else "read from", settings.admin_token_path
        )

    def _publish_limits(self, table: LimitTable) -> None:
        self.rate_limits.publish(table)
        self.concurrency.publish(table)
        self._arm_admission()

    def _arm_admission(self) -> None:
        """Give the gateway the guards that have something configured; none: admission off,
        and requests pay nothing for it. Called whenever limits or budgets change."""
        guards: list[Guard] = []
        if self.rate_limits.configured:
            guards.append(self.rate_limits)
        if self.concurrency.configured:
            guards.append(self.concurrency)
        if self.budgets.configured:
            guards.append(self.budgets)
        self.gateway.admission = Admission(guards) if guards else None

    def _may_scrape(self, token: bytes) -> bool:
        """``/metrics`` takes the admin token, or ``MODELPORT_METRICS_TOKEN`` when set."""
        wanted = self.settings.metrics_token
        secret = wanted.get_secret_value().encode() if wanted is not None else b""
        if secret and hmac.compare_digest(token, secret):
            return True
        return self.plane is not None and self.plane.is_admin(token.decode(errors="replace"))

    async def _announce_ready(self) -> None:
        """Say once when every endpoint the server started with serves (what
        ``/v2/health/ready`` answers), or which ones still do not, every 30 s."""
        waited = 0.0
        while waiting := self.gateway.not_ready():
            await asyncio.sleep(0.2)
            waited += 0.2
            if waited >= 30:
                log.warning("not ready yet: %s", "; ".join(waiting))
                waited = 0.0
        names = sorted(self.gateway.snapshot.routes)
        log.info("ready: %d endpoint(s) serving: %s", len(names), ", ".join(names) or "none")

    async def shutdown(self) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
        # No request is in flight any more: journal the last events, then load them.
        await self.journal.close()
        if self.loader is not None:
            await self.loader.close()
        if self.autoscaler is not None:
            await self.autoscaler.close()
        if self.controller is not None:
            await self.controller.close()
        if self.drift is not None:
            await self.drift.close()
        if self.slo is not None:
            await self.slo.close()
        if self.alerts is not None:  # notices still being retried are sent on the next start
            await self.alerts.aclose()
        if self.plane is not None:
            await self.plane.close()
            if self.uptime is not None:  # after the replicas stopped: their intervals close
                await self.uptime.close()
            self.plane.db.close()
        await self.upstream.close()
        await self.counters.close()
        if self.plane is not None and self.plane.budgets is not None:
            await self.plane.budgets.close()
        await asyncio.to_thread(tracing.shutdown_tracing)  # the spans still batched

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _settle_garbage_collector() -> None:
    """Keep the collector from stalling the event loop.

    What start-up loaded (FastAPI, SQLAlchemy, pydantic models, routing tables) lives for
    the whole process; left to the collector, each full collection walks all of it and
    stalls every request in flight for tens of milliseconds. Frozen, those objects are never
    scanned again, and a larger first generation makes collections rarer while each stays
    small (the hot path allocates little that survives a request)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def serve(settings: Settings, *, demo: bool = False) -> None:
    """Run Modelport until interrupted."""
    configure_logging(settings.log_level, settings.log_format)
    server = ModelportServer(settings, demo=demo)
    json_lines = settings.log_format == "json"
    # JSON lines: uvicorn's own loggers go through the root handler instead of its own.
    extra: dict[str, Any] = {"log_config": None} if json_lines else {}
    config = uvicorn.Config(
        server,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=15,
        **extra,
    )
    for line in (
        f"Modelport on http://{settings.host}:{settings.port}  (home: {settings.home})",
        f"Admin token: {Path(settings.admin_token_path)}",
    ):
        if json_lines:  # a log pipeline reads JSON lines only
            log.info("%s", line)
        else:
            print(line)
    uvicorn.Server(config).run()
