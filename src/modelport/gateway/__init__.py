"""The data plane: authenticates, routes and forwards inference requests, all in memory."""

from modelport.gateway.app import GatewayApp
from modelport.gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse

__all__ = ["GatewayApp", "UpstreamError", "UpstreamPool", "UpstreamResponse"]
