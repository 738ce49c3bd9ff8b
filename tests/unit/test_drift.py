"""Drift math (PSI, KS, profiles, windows), the sampler, and reference-data matching."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from scipy import stats

from modelport.control.drift import DriftService
from modelport.control.rollouts import plan_of
from modelport.core.errors import InvalidRequest, ValidationFailed
from modelport.core.intent import intent_digest, parse_intent
from modelport.core.signature import Signature, TensorSpec
from modelport.observability.drift import (
    FeatureScore,
    Profile,
    RevisionDrift,
    Thresholds,
    categorical_profile,
    categorical_psi,
    kolmogorov_sf,
    ks_2samp,
    numeric_profile,
    psi,
    score_feature,
)
from modelport.observability.drift_reference import reference_profile
from modelport.observability.sampling import (
    Sample,
    Sampler,
    decode_tensors,
    features_of,
    predicted_classes,
)
from modelport.store import Database

RNG = np.random.default_rng(7)


# -- PSI -----------------------------------------------------------------------------------------


def test_psi_of_identical_shares_is_zero() -> None:
    assert psi([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == 0.0


def test_psi_matches_its_formula() -> None:
    expected, actual = [0.5, 0.5], [0.8, 0.2]
    by_hand = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(expected, actual) == pytest.approx(by_hand)


def test_psi_stays_finite_with_an_empty_bin() -> None:
    assert math.isfinite(psi([0.5, 0.5], [1.0, 0.0]))


def test_psi_of_a_shifted_normal_is_large_and_of_a_fresh_sample_small() -> None:
    profile = numeric_profile("x", RNG.normal(0, 1, 5000))
    same = profile.live_shares(RNG.normal(0, 1, 5000))
    shifted = profile.live_shares(RNG.normal(1, 1, 5000))
    assert psi(profile.shares, same) < 0.02
    assert psi(profile.shares, shifted) > 0.5


def test_categorical_psi_sees_a_new_class() -> None:
    assert categorical_psi(["0", "1"] * 50, ["0", "1"] * 50) == 0.0
    assert categorical_psi(["0", "1"] * 50, ["2"] * 100) > 1.0


# -- KS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3, 1.0])
def test_ks_agrees_with_scipy(shift: float) -> None:
    a, b = RNG.normal(0, 1, 400), RNG.normal(shift, 1, 700)
    statistic, pvalue = ks_2samp(a, b)
    reference = stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(reference.statistic)
    assert pvalue == pytest.approx(reference.pvalue, abs=0.02)


def test_ks_statistic_handles_ties() -> None:
    a = np.array([0.0, 0.0, 1.0, 1.0])
    b = np.array([0.0, 1.0, 1.0, 1.0])
    assert ks_2samp(a, b)[0] == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_kolmogorov_survival_function_matches_scipy() -> None:
    for x in (0.3, 0.5, 1.0, 1.36, 2.0):
        assert kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), abs=1e-9)


# -- profiles ------------------------------------------------------------------------------------


def test_numeric_profile_is_bounded_and_its_bins_hold_tenths() -> None:
    profile = numeric_profile("x", RNG.uniform(0, 1, 100_000))
    assert len(profile.edges) == 9 and len(profile.shares) == 10
    assert all(share == pytest.approx(0.1, abs=0.001) for share in profile.shares)
    assert len(profile.sample) == 500 and list(profile.sample) == sorted(profile.sample)
    assert len(orjson.dumps(profile.to_dict())) < 20_000


def test_a_constant_feature_that_moves_is_caught_by_ks() -> None:
    profile = numeric_profile("x", np.zeros(400))
    assert profile.edges == (0.0,) and profile.shares == (0.0, 1.0)  # tied edges merged
    moved = score_feature(profile, [5.0] * 400, Thresholds(), 1)
    assert moved.psi == 0.0 and moved.ks_statistic == 1.0 and moved.status == "drift"


def test_profile_round_trips_through_json() -> None:
    profile = Profile(
        "tabular",
        (numeric_profile("a", RNG.normal(size=50)), categorical_profile("c", ["x", "y", "x"])),
        ("a",),
        "input",
        50,
    )
    assert Profile.from_dict(orjson.loads(orjson.dumps(profile.to_dict()))) == profile


# -- scoring and windows -------------------------------------------------------------------------


def test_score_statuses() -> None:
    profile = numeric_profile("x", RNG.normal(0, 1, 2000))
    thresholds = Thresholds(min_rows=100)
    assert score_feature(profile, list(RNG.normal(0, 1, 50)), thresholds, 1).status == (
        "insufficient"
    )
    assert score_feature(profile, list(RNG.normal(0, 1, 1000)), thresholds, 1).status == "ok"
    drifted = score_feature(profile, list(RNG.normal(0, 1, 1000) * 3), thresholds, 1)
    assert drifted.status == "drift" and drifted.psi is not None and drifted.psi > 0.2
    assert drifted.ks_pvalue is not None and drifted.ks_pvalue < 1e-6


def test_windows_keep_the_last_rows_and_learn_a_baseline() -> None:
    drift = RevisionDrift(None, window_rows=100, baseline_rows=50)
    drift.add("predicted_class", ["0"] * 30, "output", "categorical")
    assert [s.status for s in drift.scores(Thresholds(min_rows=10))] == ["baseline"]
    drift.add("predicted_class", ["0"] * 20 + ["1"] * 200, "output", "categorical")
    assert drift.window("predicted_class") == ["1"] * 100
    (score,) = drift.scores(Thresholds(min_rows=10))
    assert score.status == "drift" and score.reference_rows == 50


def test_latency_drifts_on_its_tail_against_its_own_start() -> None:
    drift = RevisionDrift(None, window_rows=200, baseline_rows=200)
    drift.add("latency_ms", list(RNG.normal(10, 1, 200)), "latency", "numeric")
    drift.add("latency_ms", list(RNG.normal(10, 1, 200)), "latency", "numeric")
    (steady,) = drift.scores(Thresholds(min_rows=100))
    assert steady.status == "ok" and steady.detail["baseline_p95"] > 0
    drift.add("latency_ms", list(RNG.normal(30, 1, 200)), "latency", "numeric")
    (slow,) = drift.scores(Thresholds(min_rows=100))
    assert slow.status == "drift" and slow.detail["p95"] > 25


# -- sampling ------------------------------------------------------------------------------------


def _v2(
    key: str, name: str, array: np.ndarray, *, binary: bool = False
) -> tuple[bytes, bytes | None]:
    datatype = {"float32": "FP32", "int64": "INT64"}[array.dtype.name]
    entry: dict[str, object] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if not binary:
        entry["data"] = array.ravel().tolist()
        return orjson.dumps({key: [entry]}), None
    raw = array.tobytes()
    entry["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps({key: [entry]})
    return header + raw, str(len(header)).encode()


@pytest.mark.parametrize("binary", [False, True])
def test_decode_tensors_json_and_binary(binary: bool) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, header = _v2("inputs", "input", array, binary=binary)
    np.testing.assert_array_equal(decode_tensors(body, header, "inputs")["input"], array)


def test_decode_tensors_gives_nothing_for_garbage() -> None:
    assert decode_tensors(b"not json", None, "inputs") == {}
    assert (
        decode_tensors(
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [5], "data": [1]}]}',
            None,
            "inputs",
        )
        == {}
    )


def test_sampler_drops_when_full_and_drains_in_order() -> None:
    sampler = Sampler(1.0, capacity=2)
    for i in range(3):
        sampler.offer(Sample("e", "r1", str(i).encode(), None, b"", None))
    assert sampler.dropped == 1
    assert [s.request for s in sampler.drain()] == [b"0", b"1"]
    assert sampler.drain() == []


def test_sampler_is_bounded_in_bytes() -> None:
    sampler = Sampler(1.0, max_bytes=10)
    sampler.offer(Sample("e", "r1", b"x" * 6, None, b"", None))
    sampler.offer(Sample("e", "r1", b"y" * 6, None, b"", None))  # 12 bytes queued: dropped
    assert sampler.dropped == 1
    assert len(sampler.drain()) == 1
    sampler.offer(Sample("e", "r1", b"z" * 6, None, b"", None))  # drained: room again
    assert [s.request for s in sampler.drain()] == [b"z" * 6]


def test_features_of_a_tabular_sample() -> None:
    profile = Profile("tabular", (), ("a", "b"), "input", 0)
    request, _ = _v2("inputs", "input", np.array([[1, 2], [3, 4]], dtype=np.float32))
    response, _ = _v2("outputs", "label", np.array([0, 1], dtype=np.int64))
    found = features_of(profile, Sample("e", "r1", request, None, response, None))
    assert found == [
        ("a", [1.0, 3.0], "input", "numeric"),
        ("b", [2.0, 4.0], "input", "numeric"),
        ("predicted_class", ["0", "1"], "output", "categorical"),
    ]


def test_predicted_classes_from_probabilities() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    assert predicted_classes({"probabilities": probabilities}) == ["0", "1"]
    assert predicted_classes({"embedding": np.zeros(3, dtype=np.float32)}) is None


# -- reference data ------------------------------------------------------------------------------

_WIDE = Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 3])])


def _csv(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "ref"
    directory.mkdir(parents=True)
    (directory / "reference.csv").write_text(text)
    return directory


def test_reference_profile_of_a_wide_input(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,c,prediction\n1,2,3,0\n4,5,6,1\n")
    profile = reference_profile(path, _WIDE, "tabular")
    assert profile.tensor == "input" and profile.columns == ("a", "b", "c")
    assert [f.name for f in profile.features] == ["a", "b", "c", "predicted_class"]


def test_reference_profile_of_named_inputs(tmp_path: Path) -> None:
    signature = Signature(
        inputs=[
            TensorSpec(name="age", datatype="FP64", shape=[-1]),
            TensorSpec(name="income", datatype="FP64", shape=[-1, 1]),
        ]
    )
    profile = reference_profile(_csv(tmp_path, "income,age\n1,2\n"), signature, "tabular")
    assert profile.tensor is None and set(profile.columns) == {"age", "income"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a,b\n1,2\n", "takes 3"),
        ("a,b,c\n1,x,3\n", "is not a number"),
        ("a,b,c\n", "at least one row"),
        ("a,a,c\n1,2,3\n", "twice"),
    ],
)
def test_reference_data_that_does_not_match_is_refused(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        reference_profile(_csv(tmp_path, text), _WIDE, "tabular")
    assert says in caught.value.message
    assert caught.value.details["param"] == "reference_digest"


def test_vision_reference_profiles_intensity(tmp_path: Path) -> None:
    profile = reference_profile(_csv(tmp_path, "p0,p1,p2\n0,0,16\n8,8,8\n"), _WIDE, "vision")
    assert [f.name for f in profile.features] == ["image_mean", "image_std"]
    assert profile.kind == "image"


def test_text_reference_takes_only_length_columns(tmp_path: Path) -> None:
    chat = Signature()
    profile = reference_profile(_csv(tmp_path, "input_tokens,output_tokens\n3,9\n"), chat, "chat")
    assert [f.group for f in profile.features] == ["usage", "usage"]
    with pytest.raises(InvalidRequest, match="not prompt"):
        reference_profile(_csv(tmp_path / "x", "prompt\nhi\n"), chat, "chat")


def test_features_of_an_image_sample() -> None:
    profile = Profile("image", (), ("p0", "p1", "p2", "p3"), "input", 0)
    pixels = np.array([[0, 0, 16, 16], [8, 8, 8, 8]], dtype=np.float32)
    request, header = _v2("inputs", "input", pixels, binary=True)
    found = features_of(profile, Sample("e", "r1", request, header, b"", None))
    assert found == [
        ("image_mean", [8.0, 8.0], "input", "numeric"),
        ("image_std", [8.0, 0.0], "input", "numeric"),
    ]


# -- the rollout gate in the intent --------------------------------------------------------------

_INTENT = "endpoint: e\ntask: tabular\nmodel: m\nrollout:\n  strategy: canary\n"


def test_output_drift_gate_is_opt_in_and_leaves_other_intents_as_they_were() -> None:
    plain = parse_intent(_INTENT)
    assert "output_drift" not in plain.to_dict()["rollout"]  # same dump, same digest
    assert plan_of(plain)["output_drift"] is None
    gated = parse_intent(_INTENT + "  output_drift: {max_psi: 0.3}\n")
    assert plan_of(gated)["output_drift"] == {"max_psi": 0.3, "min_samples": 100}
    assert parse_intent(yaml.safe_dump(gated.to_dict())) == gated
    assert intent_digest(plain) != intent_digest(gated)


def test_a_bad_output_drift_gate_names_its_field() -> None:
    with pytest.raises(ValidationFailed) as bad:
        parse_intent(_INTENT + "  output_drift: {max_psi: 0, min_samples: 1.5}\n")
    fields = [e["field"] for e in bad.value.details["errors"]]
    assert fields == ["rollout.output_drift.max_psi", "rollout.output_drift.min_samples"]


# -- drift alerts --------------------------------------------------------------------------------


class _Alerts:
    """Records what the drift scorer asks of ``observability.alerts.Alerts``."""

    def __init__(self, open_keys: set[str]) -> None:
        self.keys = set(open_keys)
        self.calls: list[tuple[str, str]] = []

    async def open_keys(self) -> set[str]:
        return set(self.keys)

    async def open(self, key: str, kind: str, endpoint: str, summary: str, data: dict) -> bool:
        assert kind == "drift" and endpoint in summary
        self.calls.append(("open", summary))
        self.keys.add(key)
        return True

    async def close(self, key: str) -> bool:
        self.calls.append(("close", key))
        self.keys.discard(key)
        return True


def _score(feature: str, status: str) -> FeatureScore:
    return FeatureScore(feature, "input", status, 0.0, 0.0, 1.0, 500, 200)  # type: ignore[arg-type]


def test_one_alert_per_episode_and_episodes_left_open_are_closed_after_a_restart() -> None:
    async def scenario() -> list[tuple[str, str]]:
        alerts = _Alerts({"drift:old:r1", "slo:old"})
        service = DriftService(Database("sqlite://"), Sampler(1.0), alerts=alerts)  # type: ignore[arg-type]
        await service.start()
        await service.close()
        assert service.alerting == {("old", "r1")}  # taken up from the last run
        drifted = {("e", "r1"): [_score("a", "drift"), _score("b", "ok")]}
        await service._alert(drifted, set())
        await service._alert(drifted, set())  # still drifting: the same episode
        await service._alert({("e", "r1"): [_score("a", "warn")]}, set())
        await service._alert({("old", "r1"): [_score("a", "ok")]}, set())
        return alerts.calls

    assert asyncio.run(scenario()) == [
        ("open", "drift on endpoint 'e' revision r1: a"),
        ("close", "drift:e:r1"),
        ("close", "drift:old:r1"),
    ]
