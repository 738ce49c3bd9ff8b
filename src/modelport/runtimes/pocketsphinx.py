"""Speech recognition with CMU PocketSphinx (the model directory shipped in its wheel).

Audio arrives as mono float32 at any rate and is resampled to the model's 16 kHz here.
"""

from __future__ import annotations

import asyncio
import os
import threading
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.errors import InvalidRequest
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


class PocketSphinxRuntime(ModelRuntime):
    max_concurrency = 2

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        _files(artifact_dir)
        return Signature(
            inputs=[TensorSpec(name="file", datatype="BYTES", shape=[1])],
            outputs=[TensorSpec(name="text", datatype="BYTES", shape=[1])],
        )

    async def load(self) -> None:
        from pocketsphinx import Decoder

        files = {k: str(v) for k, v in _files(self.settings.artifact_dir).items()}
        self._decoder = await asyncio.to_thread(Decoder, samprate=_RATE, logfn=os.devnull, **files)
        self._lock = threading.Lock()  # a decoder holds one utterance at a time

    def _transcribe(self, audio: np.ndarray, rate: int) -> Transcription:
        samples = _resample(audio, rate)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        with self._lock:
            # The decoder adapts its feature normalisation from one utterance to the next;
            # resetting it makes each transcript depend on its own audio alone.
            self._decoder.reinit_feat()
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        duration = len(audio) / rate
        segments = (
            [{"id": 0, "start": 0.0, "end": round(duration, 3), "text": text}] if text else []
        )
        return Transcription(text=text, duration_s=duration, segments=segments)

    async def transcribe(self, audio: np.ndarray, sample_rate: int) -> Transcription:
        return await asyncio.to_thread(self._transcribe, audio, sample_rate)
