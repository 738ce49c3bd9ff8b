"""Where external endpoints may point: never at metadata services or at Modelport itself."""

from __future__ import annotations

import pytest

from modelport.control.upstream_policy import check_upstream_url
from modelport.core.errors import InvalidRequest

OWN = ("127.0.0.1", 8600)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local or cloud metadata"),
        ("http://[fd00:ec2::254]/v1", "link-local or cloud metadata"),
        ("http://169.254.10.1:8000/v1", "link-local or cloud metadata"),
        ("http://[fe80::1]:8000/v1", "link-local or cloud metadata"),
        ("http://metadata.google.internal/computeMetadata", "cloud metadata service"),
        ("http://127.0.0.1:8600/v1", "this Modelport server itself"),
        ("http://localhost:8600/v1", "this Modelport server itself"),
        ("http://0.0.0.0:8600", "this Modelport server itself"),
        ("http://127.0.0.1:bad/v1", "invalid port"),
    ],
)
def test_internal_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_upstream_url(url, own=OWN, allow_internal=False)
    assert reason in refused.value.message
    assert refused.value.details["field"] == "runtime_options.url"
    if "port" not in reason:
        assert "MODELPORT_ALLOW_INTERNAL_UPSTREAMS" in refused.value.message
        check_upstream_url(url, own=OWN, allow_internal=True)  # the setting allows it


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",  # another server on this machine: a local vLLM
        "http://10.0.0.5:8000/v1",  # a private network
        "https://api.example.com/v1",  # unresolvable here: checked again when called
    ],
)
def test_other_servers_are_allowed(url: str) -> None:
    check_upstream_url(url, own=OWN, allow_internal=False)


def test_a_server_on_every_interface_owns_every_address_on_its_port() -> None:
    with pytest.raises(InvalidRequest):
        check_upstream_url("http://10.1.2.3:8600/v1", own=("0.0.0.0", 8600), allow_internal=False)
    check_upstream_url("http://10.1.2.3:8601/v1", own=("0.0.0.0", 8600), allow_internal=False)
