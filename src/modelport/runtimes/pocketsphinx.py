"""Speech recognition with CMU PocketSphinx (the model directory shipped in its wheel).

Audio arrives as mono float32 at any rate and is resampled to the model's 16 kHz here.

The decoder is C code that holds the GIL for as long as it decodes: a 10-minute recording
held it for minutes, the replica stopped answering its health probe and was killed. Decoding
therefore runs in child processes, one decoder each: the replica's event loop keeps answering
probes and other requests, and two recordings decode in parallel. Input is capped at
``max_audio_seconds`` (``MODELPORT_MAX_AUDIO_SECONDS``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.errors import InvalidRequest, PayloadTooLarge
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime
from modelport.runtimes.tasks import Transcription

__all__ = ["PocketSphinxRuntime"]

_RATE = 16000


def _files(artifact_dir: Path) -> dict[str, Path]:
    """The acoustic model (a directory with mdef), language model and dictionary."""
    hmm = next((p.parent for p in sorted(artifact_dir.rglob("mdef"))), None)
    lm = next(
        iter(sorted(p for p in artifact_dir.rglob("*.lm.bin") if "phone" not in p.name)), None
    )
    dic = next(iter(sorted(artifact_dir.rglob("*.dict"))), None)
    if hmm is None or lm is None or dic is None:
        raise InvalidRequest(
            "a pocketsphinx artifact needs an acoustic model directory (with mdef), "
            "a *.lm.bin language model and a *.dict dictionary"
        )
    return {"hmm": hmm, "lm": lm, "dict": dic}


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == _RATE:
        return audio
    from scipy.signal import resample_poly

    factor = gcd(rate, _RATE)
    return np.asarray(resample_poly(audio, _RATE // factor, rate // factor), dtype=np.float32)


# -- in a decoding process ----------------------------------------------------------------------

# The decoder of this decoding process: a process pool hands its initializer's work to the
# tasks only through module state, and each such process serves this one runtime.
_decoder: Any = None


def _start_decoder(files: dict[str, str]) -> None:
    global _decoder  # see _decoder
    from pocketsphinx import Decoder

    _decoder = Decoder(samprate=_RATE, logfn=os.devnull, **files)


def _ping() -> bool:
    return _decoder is not None


def _decode(audio: np.ndarray, rate: int) -> str:
    samples = _resample(audio, rate)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    # The decoder adapts its feature normalisation from one utterance to the next; resetting
    # it makes each transcript depend on its own audio alone.
    _decoder.reinit_feat()
    _decoder.start_utt()
    _decoder.process_raw(pcm, full_utt=True)
    _decoder.end_utt()
    hypothesis = _decoder.hyp()
    return str(hypothesis.hypstr) if hypothesis is not None else ""


# -- in the replica -----------------------------------------------------------------------------


class PocketSphinxRuntime(ModelRuntime):
    max_concurrency = 2  # decoding processes

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        _files(artifact_dir)
        return Signature(
            inputs=[TensorSpec(name="file", datatype="BYTES", shape=[1])],
            outputs=[TensorSpec(name="text", datatype="BYTES", shape=[1])],
        )

    async def load(self) -> None:
        self._files = {k: str(v) for k, v in _files(self.settings.artifact_dir).items()}
        self._max_seconds = self.settings.max_audio_seconds
        self._pool = self._start_pool()
        # Start every decoder now: the replica turns ready only once they can answer, and a
        # model that does not load fails the replica's start, not its first request.
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ping) for _ in range(self.max_concurrency))
        )

    def _start_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.max_concurrency,
            # Not fork: the replica's event loop and threads must not be copied mid-flight.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_decoder,
            initargs=(self._files,),
        )

    async def transcribe(self, audio: np.ndarray, sample_rate: int) -> Transcription:
        duration = len(audio) / sample_rate
        if duration > self._max_seconds:
            raise PayloadTooLarge(
                f"'file' holds {duration:.1f} s of audio; this server transcribes at most "
                f"{self._max_seconds:g} s per request (MODELPORT_MAX_AUDIO_SECONDS): "
                "split the recording",
                param="file",
                limit_seconds=self._max_seconds,
            )
        pool = self._pool
        try:
            text = await asyncio.get_running_loop().run_in_executor(
                pool, _decode, audio, sample_rate
            )
        except BrokenProcessPool:
            # A decoder died (killed, out of memory): start fresh ones for the next request.
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start_pool()
            raise
        segments = (
            [{"id": 0, "start": 0.0, "end": round(duration, 3), "text": text}] if text else []
        )
        return Transcription(text=text, duration_s=duration, segments=segments)

    async def unload(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
