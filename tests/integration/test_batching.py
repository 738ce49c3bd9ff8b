"""Adaptive batching on a real endpoint: concurrent requests merged, each gets its own rows."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from modelport.client import Client, ModelportClientError
from tests.integration.conftest import RunningServer

pytestmark = pytest.mark.integration


def test_batched_endpoint_answers_each_request_exactly(
    server: RunningServer, admin: Client, data_client: Client, api_key: str
) -> None:
    created = admin.create_endpoint(
        "bc-batched", "breast-cancer:1", batching={"max_batch_size": 64, "max_wait_ms": 20}
    )
    assert created["batching"] == {"max_batch_size": 64, "max_wait_ms": 20.0}
    admin.wait_ready("bc-batched")
    rows = load_breast_cancer().data[:48].astype(np.float32)
    expected = data_client.infer("breast-cancer", {"input": rows})["probabilities"]

    async def fire() -> list[dict]:
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:

            async def one(i: int) -> dict:
                body = {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": [1, 30],
                            "data": rows[i].tolist(),
                        }
                    ]
                }
                response = await http.post("/v2/models/bc-batched/infer", json=body)
                assert response.status_code == 200, response.text
                return response.json()

            return await asyncio.gather(*(one(i) for i in range(len(rows))))

    answers = asyncio.run(fire())
    for i, answer in enumerate(answers):
        probabilities = next(o for o in answer["outputs"] if o["name"] == "probabilities")
        assert probabilities["shape"] == [1, 2]
        np.testing.assert_allclose(probabilities["data"], expected[i], rtol=1e-5)
    admin.delete_endpoint("bc-batched")


def test_batching_is_refused_for_generative_endpoints(admin: Client) -> None:
    with pytest.raises(ModelportClientError) as info:
        admin.create_endpoint("chat-batched", "chat-small:1", batching={"max_batch_size": 8})
    assert info.value.status == 400
    assert "batching applies to tabular and vision" in info.value.message
    with pytest.raises(ModelportClientError) as bad:
        admin.create_endpoint("bc-bad", "breast-cancer:1", batching={"max_batch_size": 0})
    assert bad.value.status == 422
