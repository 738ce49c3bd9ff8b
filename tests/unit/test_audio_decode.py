"""The transcription worker refuses a recording over the limit from its header."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from modelport.core.errors import InvalidRequest, PayloadTooLarge
from modelport.worker.openai import _decode_audio


def _wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    tone = np.sin(np.linspace(0, 2 * np.pi * 440 * seconds, int(rate * seconds)))
    soundfile.write(buffer, tone.astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def test_a_recording_over_the_limit_is_413_naming_it() -> None:
    with pytest.raises(PayloadTooLarge) as refused:
        _decode_audio(_wav(2.0), max_seconds=1.0)
    assert "2.0 s of audio" in refused.value.message
    assert "MODELPORT_MAX_AUDIO_SECONDS" in refused.value.message
    assert refused.value.details["param"] == "file"


def test_a_recording_within_the_limit_is_decoded() -> None:
    samples, rate = _decode_audio(_wav(2.0), max_seconds=5.0)
    assert rate == 8000 and samples.shape == (16000,) and samples.dtype == np.float32


def test_not_audio_is_400() -> None:
    with pytest.raises(InvalidRequest, match="not a WAV or FLAC"):
        _decode_audio(b"RIFF....not audio", max_seconds=5.0)
