"""Drift: profiles stored at registration, the background scorer, and the scores it stores.

Every ``interval_s`` the scorer drains the gateway's sampler and the usage records handed to
it, decodes the samples and appends their features to each endpoint revision's windows (in a
worker thread, never on the event loop), scores every feature against its reference
(``observability.drift``), replaces the revision's stored scores, and opens or closes one
``drift`` alert per revision: open while any feature drifts, naming them; closed when none
does. Canary output drift (the candidate's predicted classes against the stable revision's)
is answered from the same windows, for the rollout controller's gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from modelport.core.errors import NotFound
from modelport.core.signature import Signature
from modelport.core.usage import UsageRecord
from modelport.observability.alerts import Alerts
from modelport.observability.drift import (
    FeatureScore,
    Profile,
    RevisionDrift,
    Thresholds,
    categorical_psi,
)
from modelport.observability.drift_reference import reference_profile
from modelport.observability.sampling import Sampler, features_of
from modelport.store import ArtifactStore, Database
from modelport.store.tables import (
    DriftProfileRow,
    DriftScoreRow,
    EndpointRow,
    ModelVersionRow,
    RevisionRow,
)

__all__ = ["CanaryVerdict", "DriftService", "store_profile"]

log = logging.getLogger("modelport.drift")

_Key = tuple[str, str]  # (endpoint, revision label)
# (endpoint, revision, status, judged, latency ms, input tokens, output tokens, audio seconds)
_Usage = tuple[str, str, int, bool, float, int, int, float]
_USAGE_LENGTHS = ("input_tokens", "output_tokens", "audio_seconds")
_ALERT_PREFIX = "drift:"  # alert keys are drift:<endpoint>:<revision>


def store_profile(
    session: Session, artifacts: ArtifactStore, version: ModelVersionRow, task: str
) -> DriftProfileRow | None:
    """Profile a new version's reference data and store it with the version; raises
    ``InvalidRequest`` naming ``reference_digest`` when the data does not match the model's
    signature (the caller's transaction then stores nothing)."""
    if version.reference_digest is None:
        return None
    signature = Signature.model_validate(version.signature)
    profile = reference_profile(artifacts.path(version.reference_digest), signature, task)
    row = DriftProfileRow(
        version_id=version.id, kind=profile.kind, rows=profile.rows, profile=profile.to_dict()
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    decision: Literal["pass", "fail", "wait"]
    reason: str
    data: dict[str, Any]


class DriftService:
    """The drift scorer. Windows live in memory, guarded by one lock (the scorer's thread
    feeds them; the controller reads canary windows on the event loop, briefly)."""

    def __init__(
        self,
        db: Database,
        sampler: Sampler,
        *,
        thresholds: Thresholds | None = None,
        interval_s: float = 5.0,
        window_rows: int = 1000,
        baseline_rows: int = 500,
        alerts: Alerts | None = None,
    ) -> None:
        self.db = db
        self.sampler = sampler
        self.thresholds = thresholds or Thresholds()
        self.alerts = alerts
        self.alerting: frozenset[_Key] = frozenset()
        self._interval_s = interval_s
        self._window_rows = window_rows
        self._baseline_rows = baseline_rows
        self._revisions: dict[_Key, RevisionDrift] = {}
        self._usage: deque[_Usage] = deque(maxlen=100_000)
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- feeding --------------------------------------------------------------------------------

    def observe_usage(self, records: Sequence[UsageRecord]) -> None:
        """A usage journal consumer (called on the event loop): keep what drift needs."""
        append = self._usage.append
        for r in records:
            u = r.units
            append(
                (
                    r.endpoint,
                    r.revision,
                    r.status,
                    r.judged,
                    r.latency_ms,
                    u.input_tokens,
                    u.output_tokens,
                    u.audio_seconds,
                )
            )

    def forget(self, endpoint: str, revision: str | None = None) -> None:
        """Drop windows (a new rollout's candidate starts from nothing)."""
        with self._lock:
            for key in [k for k in self._revisions if k[0] == endpoint]:
                if revision is None or key[1] == revision:
                    del self._revisions[key]

    # -- the loop -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take up the drift episodes a previous run left open (so they close when the drift
        is over), then score every ``interval_s``."""
        if self.alerts is not None:
            keys = await self.alerts.open_keys()
            self.alerting = frozenset(
                (endpoint, revision)
                for key in keys
                if key.startswith(_ALERT_PREFIX)
                for endpoint, _, revision in [key[len(_ALERT_PREFIX) :].rpartition(":")]
            )
        self._task = asyncio.create_task(self._loop(), name="modelport-drift")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once()
            except Exception:  # a bad round must not end drift monitoring
                log.exception("drift scoring failed")

    async def run_once(self) -> dict[_Key, list[FeatureScore]]:
        """One round: feed, score, store (in a thread), then open or close alerts. Only
        revisions that got new values are scored again."""
        scored, gone = await asyncio.to_thread(self._round)
        await self._alert(scored, gone)
        return scored

    def _round(self) -> tuple[dict[_Key, list[FeatureScore]], set[_Key]]:
        samples = self.sampler.drain()
        usage: list[_Usage] = []
        while self._usage:
            usage.append(self._usage.popleft())
        keys = {(s.endpoint, s.revision) for s in samples} | {(u[0], u[1]) for u in usage}
        with self._lock:
            new = keys - self._revisions.keys()
        profiles = self._profiles(new) if new else {}  # a query: not under the lock
        with self._lock:
            for key in new:
                self._revisions.setdefault(key, self._new_revision(profiles.get(key)))
            touched = {key: self._revisions[key] for key in keys}
        # Decoding is the costly part: outside the lock, which the controller also takes.
        features = [(s, features_of(touched[(s.endpoint, s.revision)].profile, s)) for s in samples]
        with self._lock:
            for sample, found in features:
                drift = touched[(sample.endpoint, sample.revision)]
                for name, values, group, kind in found:
                    drift.add(name, values, group, kind)
            for u in usage:
                self._add_usage(touched[(u[0], u[1])], u)
            scored = {key: drift.scores(self.thresholds) for key, drift in touched.items()}
            known = set(self._revisions)
        gone = self._store(scored, known)
        if gone:
            with self._lock:
                for key in gone:
                    self._revisions.pop(key, None)
        return {key: scores for key, scores in scored.items() if key not in gone}, gone

    def _new_revision(self, profile: Profile | None) -> RevisionDrift:
        return RevisionDrift(
            profile, window_rows=self._window_rows, baseline_rows=self._baseline_rows
        )

    @staticmethod
    def _add_usage(drift: RevisionDrift, usage: _Usage) -> None:
        _, _, status, judged, latency_ms, *lengths = usage
        if judged and not 400 <= status < 500:
            drift.add("latency_ms", [latency_ms], "latency", "numeric")
        if status < 400:
            for name, value in zip(_USAGE_LENGTHS, lengths, strict=True):
                if value:
                    drift.add(name, [value], "usage", "numeric")

    def _profiles(self, keys: set[_Key]) -> dict[_Key, Profile]:
        """The stored profile of each revision's model version, where it has one."""
        found: dict[_Key, Profile] = {}
        with self.db.session() as session:
            for endpoint, label in keys:
                if not label[1:].isdigit():
                    continue
                data = session.scalar(
                    select(DriftProfileRow.profile)
                    .join(RevisionRow, RevisionRow.version_id == DriftProfileRow.version_id)
                    .join(EndpointRow, RevisionRow.endpoint_id == EndpointRow.id)
                    .where(EndpointRow.name == endpoint, RevisionRow.number == int(label[1:]))
                )
                if data is not None:
                    found[(endpoint, label)] = Profile.from_dict(data)
        return found

    def _store(self, scored: dict[_Key, list[FeatureScore]], known: set[_Key]) -> set[_Key]:
        """Replace each scored revision's stored scores; returns the ``known`` revisions of
        endpoints that no longer exist (their scores are deleted, their windows dropped)."""
        now = datetime.now(UTC)
        with self.db.session() as session:
            names = set(session.scalars(select(EndpointRow.name)))
            gone = {key for key in known | scored.keys() if key[0] not in names}
            stale = select(DriftScoreRow.endpoint).where(DriftScoreRow.endpoint.not_in(names))
            if session.scalar(stale.limit(1)) is not None:
                session.execute(delete(DriftScoreRow).where(DriftScoreRow.endpoint.not_in(names)))
            for (endpoint, revision), scores in scored.items():
                if (endpoint, revision) in gone:
                    continue
                rows = {
                    row.feature: row
                    for row in session.scalars(
                        select(DriftScoreRow).where(
                            DriftScoreRow.endpoint == endpoint, DriftScoreRow.revision == revision
                        )
                    )
                }
                for score in scores:
                    row = rows.get(score.feature)
                    if row is None:
                        row = DriftScoreRow(
                            endpoint=endpoint, revision=revision, feature=score.feature
                        )
                        session.add(row)
                    row.source = score.group
                    row.status = score.status
                    row.psi = score.psi
                    row.ks_statistic = score.ks_statistic
                    row.ks_pvalue = score.ks_pvalue
                    row.live_rows = score.live_rows
                    row.reference_rows = score.reference_rows
                    row.detail = dict(score.detail)
                    row.updated_at = now
        return gone

    async def _alert(self, scored: dict[_Key, list[FeatureScore]], gone: set[_Key]) -> None:
        alerting = set(self.alerting)
        for key in gone & alerting:  # the endpoint was deleted: its episode ends
            alerting.discard(key)
            if self.alerts is not None:
                await self.alerts.close(f"{_ALERT_PREFIX}{key[0]}:{key[1]}")
        for (endpoint, revision), scores in scored.items():
            key = (endpoint, revision)
            drifted = [s for s in scores if s.status == "drift"]
            judged = any(s.status in ("ok", "warn") for s in scores)
            alert_key = f"{_ALERT_PREFIX}{endpoint}:{revision}"
            if drifted and key not in alerting:
                names = ", ".join(s.feature for s in drifted)
                summary = f"drift on endpoint '{endpoint}' revision {revision}: {names}"
                data = {
                    "revision": revision,
                    "features": {s.feature: s.to_dict() for s in drifted},
                }
                alerting.add(key)
                if self.alerts is not None:
                    await self.alerts.open(alert_key, "drift", endpoint, summary, data)
                else:
                    log.warning("%s", summary)
            elif not drifted and judged and key in alerting:
                alerting.discard(key)
                if self.alerts is not None:
                    await self.alerts.close(alert_key)
                else:
                    log.info("drift on endpoint '%s' revision %s is over", endpoint, revision)
        self.alerting = frozenset(alerting)

    # -- reading --------------------------------------------------------------------------------

    def report(
        self, session: Session, endpoint: str, revisions: set[str] | None = None
    ) -> dict[str, Any]:
        """The stored scores of an endpoint's revisions (only those in ``revisions``, if
        given: the running ones), with the thresholds they face."""
        if session.scalar(select(EndpointRow.id).where(EndpointRow.name == endpoint)) is None:
            raise NotFound(f"endpoint '{endpoint}' does not exist", param="endpoint")
        rows = session.scalars(
            select(DriftScoreRow)
            .where(DriftScoreRow.endpoint == endpoint)
            .order_by(DriftScoreRow.revision, DriftScoreRow.source, DriftScoreRow.feature)
        )
        views: dict[str, dict[str, Any]] = {}
        for row in rows:
            if revisions is not None and row.revision not in revisions:
                continue
            view = views.setdefault(
                row.revision,
                {
                    "revision": row.revision,
                    "alert": (endpoint, row.revision) in self.alerting,
                    "drifted": [],
                    "features": [],
                },
            )
            if row.status == "drift":
                view["drifted"].append(row.feature)
            view["features"].append(
                {
                    "feature": row.feature,
                    "source": row.source,
                    "status": row.status,
                    "psi": row.psi,
                    "ks_statistic": row.ks_statistic,
                    "ks_pvalue": row.ks_pvalue,
                    "live_rows": row.live_rows,
                    "reference_rows": row.reference_rows,
                    "detail": row.detail,
                    "updated_at": row.updated_at.isoformat(),
                }
            )
        t = self.thresholds
        return {
            "endpoint": endpoint,
            "sample_rate": self.sampler.rate,
            "thresholds": {
                "psi_warn": t.psi_warn,
                "psi_drift": t.psi_drift,
                "ks_alpha": t.ks_alpha,
                "ks_min_statistic": t.ks_min_statistic,
                "min_rows": t.min_rows,
                "latency_factor": t.latency_factor,
            },
            "revisions": list(views.values()),
        }

    def canary(
        self, endpoint: str, stable: str, candidate: str, gate: dict[str, Any]
    ) -> CanaryVerdict:
        """The candidate's predicted-class distribution against the stable revision's, both
        over their live windows: ``fail`` when the PSI exceeds ``gate['max_psi']``, ``wait``
        until each has ``gate['min_samples']`` sampled outputs."""
        with self._lock:
            old = self._revisions.get((endpoint, stable))
            new = self._revisions.get((endpoint, candidate))
            before = old.window("predicted_class") if old else []
            after = new.window("predicted_class") if new else []
        wanted = int(gate["min_samples"])
        data: dict[str, Any] = {"stable_rows": len(before), "candidate_rows": len(after)}
        if min(len(before), len(after)) < wanted:
            return CanaryVerdict(
                "wait",
                f"output drift: {len(after)} of {wanted} sampled outputs of {candidate} "
                f"({len(before)} of {stable}) so far",
                data,
            )
        value = categorical_psi(before, after)
        data["psi"] = round(value, 6)
        limit = float(gate["max_psi"])
        if value > limit:
            return CanaryVerdict(
                "fail",
                f"output drift: the predicted-class PSI of {candidate} against {stable} is "
                f"{value:.3f}, over the gate's {limit:g}",
                data,
            )
        return CanaryVerdict("pass", f"output drift PSI {value:.3f} within {limit:g}", data)
