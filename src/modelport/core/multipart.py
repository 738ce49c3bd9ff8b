"""A small ``multipart/form-data`` parser for bodies already in memory (audio uploads).

Boundaries are random strings chosen by the client, so splitting on them is exact for
well-formed bodies; anything else is refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelport.core.errors import InvalidRequest

__all__ = ["FormField", "parse_form"]


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


def _param(header: str, key: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == key:
            return value.strip().strip('"')
    return None


def parse_form(body: bytes, content_type: bytes | str) -> dict[str, FormField]:
    """Fields by name. Raises ``InvalidRequest`` when the body is not multipart/form-data."""
    ctype = content_type.decode() if isinstance(content_type, bytes) else content_type
    boundary = _param(ctype, "boundary")
    if not ctype.lower().startswith("multipart/form-data") or not boundary:
        raise InvalidRequest(
            "send this request as multipart/form-data (fields 'file' and 'model')", param="file"
        )
    fields: dict[str, FormField] = {}
    delimiter = b"--" + boundary.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, separator, data = part.partition(b"\r\n\r\n")
        if not separator:
            raise InvalidRequest("malformed multipart body: a part has no header end")
        headers = {}
        for line in head.decode(errors="replace").strip().split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = _param(disposition, "name")
        if name is None:
            raise InvalidRequest("malformed multipart body: a part has no name")
        fields[name] = FormField(
            name=name,
            data=data[:-2] if data.endswith(b"\r\n") else data,
            filename=_param(disposition, "filename"),
            content_type=headers.get("content-type"),
        )
    return fields
