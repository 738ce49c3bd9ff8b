"""Python client for Modelport. Imports nothing from the server: ``pip install modelport``
on a laptop is enough to drive a remote deployment."""

from modelport.client._client import Client, ModelportClientError

__all__ = ["Client", "ModelportClientError"]
