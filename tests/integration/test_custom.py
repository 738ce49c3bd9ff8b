"""A custom Python model: the user's class, shipped in the artifact, served over V2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelport.client import Client, ModelportClientError
from tests.integration.conftest import model_directory, register_python

pytestmark = pytest.mark.integration

MODEL = """
import numpy as np

from helpers import weights


class Scorer:
    def load(self):
        self.w = weights()

    async def predict(self, inputs):
        x = inputs["features"]
        return {"score": x @ self.w, "rows": np.arange(len(x))}
"""

INPUTS = {"features": [-1, 3]}
OUTPUTS = {"score": [-1]}


@pytest.fixture
def custom_dir(tmp_path: Path) -> Path:
    directory = model_directory(tmp_path, "scorer", MODEL)
    (directory / "helpers.py").write_text(
        "import numpy as np\n\n\ndef weights():\n    return np.array([1.0, 2.0, 3.0], 'f4')\n"
    )
    return directory


def test_custom_class_is_served(admin: Client, data_client: Client, custom_dir: Path) -> None:
    version = register_python(admin, "scorer", custom_dir, "model:Scorer", INPUTS, OUTPUTS)
    assert version["signature"]["inputs"][0]["name"] == "features"
    admin.create_endpoint("scorer", "scorer:1")
    admin.wait_ready("scorer")
    outputs = data_client.infer("scorer", {"features": np.array([[1, 1, 1], [0, 0, 2]], "f4")})
    np.testing.assert_allclose(outputs["score"], [6.0, 6.0])
    admin.delete_endpoint("scorer")


def test_custom_runtime_needs_a_class_and_a_signature(admin: Client, custom_dir: Path) -> None:
    with pytest.raises(ModelportClientError) as no_class:
        admin.register("scorer-x", custom_dir, task="custom", runtime="python")
    assert "class='module:Class'" in no_class.value.message
    with pytest.raises(ModelportClientError) as no_signature:
        admin.register(
            "scorer-x",
            custom_dir,
            task="custom",
            runtime="python",
            runtime_options={"class": "model:Scorer"},
        )
    assert "pass a signature" in no_signature.value.message
    with pytest.raises(ModelportClientError) as missing:
        register_python(admin, "scorer-x", custom_dir, "nothere:Scorer", INPUTS, OUTPUTS)
    assert "not a file in the artifact" in missing.value.message
