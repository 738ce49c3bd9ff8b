"""Estimated LLM serving performance from the model's shape and the hardware's datasheet.

A roofline model, calibrated by efficiency factors rather than fitted per GPU:

- memory: weights (params x bytes per param) plus the KV cache, 2 (K and V) x layers x KV heads
  x head dim x 2 bytes (fp16) per token, for as many sequences as the rest of memory holds;
- decode: every step reads all weights and every active sequence's KV cache once, so a step
  takes bytes / (bandwidth x ``DECODE_BANDWIDTH_EFFICIENCY``), or its matmuls' FLOPs at
  ``MFU`` when a large batch makes it compute bound;
- prefill: 2 x params x prompt tokens FLOPs at ``MFU``;
- tensor parallelism over N devices: N x the bandwidth and FLOPs, at a falling efficiency,
  plus two all-reduces per layer per step;
- continuous batching: with B sequences in flight, each request's life holds its own prefill,
  the B - 1 prefills of the others that start meanwhile, and its output tokens' decode steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelport.planning.catalog import HardwareType

__all__ = [
    "DECODE_BANDWIDTH_EFFICIENCY",
    "MFU",
    "P95_OVER_MEAN",
    "LlmEstimate",
    "LlmModel",
    "estimate_llm",
]

DECODE_BANDWIDTH_EFFICIENCY = 0.65
"""Share of the datasheet bandwidth a decode step achieves. Memory-bound GEMV kernels reach
~80-90% of peak in isolation, but a serving step also runs attention over a paged KV cache,
sampling and the scheduler between kernels; published vLLM/TensorRT-LLM batch-1 decode speeds
correspond to 55-75% of peak."""

MFU = 0.5
"""Model FLOPs utilisation of prefill (large matmuls): 40-60% of dense peak is what serving
engines report for prompts of hundreds of tokens; short prompts do worse, long ones better."""

P95_OVER_MEAN = 1.2
"""p95 over mean latency: in a continuous batch a request's decode shares steps with however
many prefills happen to start during it, which varies; 1.2 x the mean covers that spread."""

_USABLE_MEMORY = 0.9  # vLLM's default gpu_memory_utilization: the rest is left to the runtime
_RUNTIME_GB = 1.0  # per device: CUDA context, activations, sampler buffers
_STEP_OVERHEAD_S = 0.002  # per decode step: scheduler, sampling, kernel launches
# Tensor parallelism: each device runs 1/N of every matmul, and smaller kernels reach less of
# the peak; on top, every layer all-reduces its activations twice (attention and MLP), a fixed
# latency per step that does not shrink with N.
_TP_EFFICIENCY = {1: 1.0, 2: 0.85, 4: 0.75, 8: 0.6}
_ALLREDUCE_S = 20e-6


@dataclass(frozen=True, slots=True)
class LlmModel:
    """The shape of a decoder-only transformer, as much as sizing needs."""

    params_b: float
    """Parameters, in billions."""
    bytes_per_param: float
    """2 for fp16/bf16, 1 for int8/fp8, ~0.56 for 4-bit GGUF (Q4_0/Q4_1 carry scales)."""
    layers: int
    kv_heads: int
    """KV heads (fewer than attention heads with grouped-query attention)."""
    head_dim: int
    context: int
    """The longest sequence the model takes."""


@dataclass(frozen=True, slots=True)
class LlmEstimate:
    """What one replica of ``devices`` devices does at a given concurrency."""

    fits: bool
    devices: int
    weights_gb: float
    kv_gb_per_seq: float
    max_sequences: int
    ttft_ms: float
    tokens_per_s: float
    """Decode speed seen by ONE sequence."""
    p95_ms: float
    """p95 latency of a whole request (input + output tokens)."""
    rps_per_replica: float


def estimate_llm(
    model: LlmModel,
    hw: HardwareType,
    devices: int,
    *,
    input_tokens: int,
    output_tokens: int,
    concurrency: int,
) -> LlmEstimate:
    """Estimate serving ``model`` on ``devices`` x ``hw`` (tensor parallel), with
    ``concurrency`` requests of ``input_tokens`` + ``output_tokens`` in flight (closed loop).

    Not fitting (weights plus one sequence's KV cache exceed memory) gives ``fits=False`` with
    infinite latencies and zero throughput."""
    devices = max(1, devices)
    input_tokens = max(1, input_tokens)
    output_tokens = max(1, output_tokens)
    concurrency = max(1, concurrency)
    weights_gb = model.params_b * model.bytes_per_param
    kv_bytes_per_token = 2 * model.layers * model.kv_heads * model.head_dim * 2
    seq_tokens = (
        min(model.context, input_tokens + output_tokens)
        if model.context
        else (input_tokens + output_tokens)
    )
    kv_gb_per_seq = kv_bytes_per_token * seq_tokens / 1e9
    usable_gb = hw.memory_gb * devices * _USABLE_MEMORY - _RUNTIME_GB * devices
    free_gb = usable_gb - weights_gb
    max_sequences = int(free_gb // kv_gb_per_seq) if free_gb > 0 and kv_gb_per_seq > 0 else 0
    if max_sequences < 1:
        inf = math.inf
        return LlmEstimate(False, devices, weights_gb, kv_gb_per_seq, 0, inf, 0.0, inf, 0.0)
    batch = min(concurrency, max_sequences)
    scale = devices * _TP_EFFICIENCY.get(devices, 0.6)
    allreduce_s = 2 * model.layers * _ALLREDUCE_S if devices > 1 else 0.0
    bandwidth = hw.bandwidth_gbs * 1e9 * DECODE_BANDWIDTH_EFFICIENCY * scale
    flops = hw.bf16_tflops * 1e12 * MFU * scale
    params = model.params_b * 1e9
    # A sequence is on average half way through its output while decoding.
    kv_read = batch * kv_bytes_per_token * (input_tokens + output_tokens / 2)
    step_s = max((weights_gb * 1e9 + kv_read) / bandwidth, 2 * params * batch / flops)
    step_s += _STEP_OVERHEAD_S + allreduce_s
    # Prefill reads the weights at least once, however short the prompt.
    prefill_s = max(2 * params * input_tokens / flops, weights_gb * 1e9 / bandwidth) + allreduce_s
    ttft_s = prefill_s + step_s  # a new prompt waits for the step already running
    life_s = batch * prefill_s + output_tokens * step_s
    rps = batch / life_s
    # Beyond what fits in memory requests queue: a closed loop of C over rps waits C / rps.
    mean_s = concurrency / rps if concurrency > batch else life_s
    tokens_per_s = output_tokens / max(life_s - prefill_s, 1e-9)
    return LlmEstimate(
        fits=True,
        devices=devices,
        weights_gb=weights_gb,
        kv_gb_per_seq=kv_gb_per_seq,
        max_sequences=max_sequences,
        ttft_ms=ttft_s * 1000 + (mean_s - life_s) * 1000,
        tokens_per_s=tokens_per_s,
        p95_ms=mean_s * P95_OVER_MEAN * 1000,
        rps_per_replica=rps,
    )
