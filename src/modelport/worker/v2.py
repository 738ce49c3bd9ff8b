"""The replica's Open Inference Protocol (V2) handler: tabular, vision and custom models."""

from __future__ import annotations

from modelport.core.asgi import Receive, Scope, Send, header, read_body, send_bytes, send_json
from modelport.core.errors import NotFound
from modelport.core.replica import ReplicaSpec
from modelport.core.usage import UNITS_HEADER, Units
from modelport.runtimes import ModelRuntime
from modelport.runtimes.batching import AdaptiveBatcher, BatchingConfig
from modelport.runtimes.codecs import (
    RequestLimits,
    check_inputs,
    check_outputs,
    decode_request,
    encode_response,
)
from modelport.runtimes.v2_validation import parse_header_length

__all__ = ["V2Handler"]

_JSON = (b"content-type", b"application/json")


class V2Handler:
    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self._batcher: AdaptiveBatcher | None = None
        self._prefix = f"/v2/models/{spec.endpoint}"
        self._version = spec.revision  # the V2 "version" of an endpoint is its revision
        self._limits = RequestLimits(
            max_rows=spec.max_request_rows, max_tensor_elements=spec.max_tensor_elements
        )

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, runtime: ModelRuntime | None
    ) -> None:
        path: str = scope["path"]
        if not path.startswith(self._prefix):
            raise NotFound(f"this replica serves '{self.spec.endpoint}' only")
        rest = path[len(self._prefix) :]
        if rest == "/infer" and scope["method"] == "POST":
            if runtime is None:
                await send_json(send, 503, {"error": "model is still loading"})
                return
            await self._infer(scope, receive, send, runtime)
        elif rest == "/ready":
            ready = runtime is not None
            await send_json(
                send, 200 if ready else 503, {"name": self.spec.endpoint, "ready": ready}
            )
        elif rest == "":
            await send_json(
                send,
                200,
                {
                    "name": self.spec.endpoint,
                    "versions": [self._version],
                    "platform": self.spec.runtime,
                    **self.spec.signature.to_v2_metadata(),
                },
            )
        else:
            raise NotFound(f"no route {scope['method']} {path}")

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, runtime: ModelRuntime
    ) -> None:
        # Every field is checked before the model sees the request: a client's mistake is a
        # 400 naming the field, never a runtime's 500.
        length = parse_header_length(header(scope, b"inference-header-content-length"))
        body = await read_body(receive, self.spec.max_body_bytes)
        request = decode_request(body, length, self._limits)
        check_inputs(request, self.spec.signature)
        check_outputs(request, self.spec.signature)
        if self.spec.batching is not None:
            if self._batcher is None:
                config = BatchingConfig(**self.spec.batching)
                self._batcher = AdaptiveBatcher(runtime.predict, config)
            outputs = await self._batcher.predict(request.inputs)
        else:
            outputs = await runtime.predict(request.inputs)
        payload, header_length = encode_response(
            request, outputs, model_name=self.spec.endpoint, model_version=self._version
        )
        units = Units(rows=request.rows)
        if self.spec.task == "vision":
            units.images = request.rows
        headers = [(UNITS_HEADER, units.encode())]
        if header_length is None:
            headers.append(_JSON)
        else:
            headers.append((b"content-type", b"application/octet-stream"))
            headers.append((b"inference-header-content-length", str(header_length).encode()))
        await send_bytes(send, 200, payload, headers)
