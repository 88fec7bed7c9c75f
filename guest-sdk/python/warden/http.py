"""Outgoing HTTP over ``wasi:http``: blocking requests. The host decides
which hosts the run may reach (``--allow-http``); a refused request raises
:class:`HttpError` with ``denied`` set::

    from warden import http

    page = http.get("https://example.com/")
    print(page.status, page.text)
    created = http.post("https://api.example.com/items", {"a": 1}).json()

Redirects are not followed: a 3xx comes back as a :class:`Response`, and
following it (a new request, checked by the host again) is up to you.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from componentize_py_types import Err
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as t
from wit_world.imports.streams import StreamError_Closed

from ._errors import HttpError

__all__ = ["HttpError", "Response", "get", "post", "request"]

Headers = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass
class Response:
    """A complete response."""

    status: int
    headers: list[tuple[str, str]]
    """Name and value pairs, in order (values as text, invalid UTF-8 replaced)."""
    body: bytes

    @property
    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body decoded from JSON; raises :class:`HttpError` if it is not."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise HttpError(f"response body is not the expected JSON: {e}") from None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def get(url: str, headers: Headers | None = None) -> Response:
    """``GET url``."""
    return request("GET", url, headers)


def post(url: str, body: Any, headers: Headers | None = None) -> Response:
    """``POST url``. ``body`` as bytes or text is sent as is; any other value
    is sent as JSON (with ``content-type: application/json`` unless
    ``headers`` sets one)."""
    if isinstance(body, (bytes, bytearray, str)):
        return request("POST", url, headers, body)
    pairs = _pairs(headers)
    if not any(k.lower() == "content-type" for k, _ in pairs):
        pairs.append(("content-type", "application/json"))
    return request("POST", url, pairs, json.dumps(body, separators=(",", ":")))


_DESCRIBE = {
    "HttpRequestDenied": "denied: the URL is not on the run's HTTP allow-list",
    "ConnectionLimitReached": "denied: the run's HTTP request budget is spent",
    "DestinationIpProhibited": "denied: the destination resolves to an address agents may "
    "not reach (loopback, private, link-local or metadata)",
    "HttpResponseBodySize": "the run's HTTP response byte budget is spent",
    "DnsTimeout": "the host name did not resolve in time",
    "DnsError": "the host name does not resolve",
    "DestinationNotFound": "the host name does not resolve",
    "ConnectionRefused": "the server refused the connection",
    "ConnectionTimeout": "the connection timed out",
    "ConnectionTerminated": "the server closed the connection",
    "HttpResponseTimeout": "the server did not answer in time",
    "TlsCertificateError": "the server's TLS certificate is not valid for its name",
    "TlsProtocolError": "the TLS handshake with the server failed",
    "TlsAlertReceived": "the TLS handshake with the server failed",
    "HttpRequestUriInvalid": "the URL is not valid",
}


def _describe(code: object) -> str:
    """An ``error-code`` in words: ``ErrorCode_HttpResponseIncomplete`` is
    "http response incomplete"."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    if isinstance(code, t.ErrorCode_InternalError) and code.value:
        return f"the host failed: {code.value}"
    return _DESCRIBE.get(name) or _words(name)


def _words(name: str) -> str:
    """``HttpResponseIncomplete`` is "http response incomplete"."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _pairs(headers: Headers | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


_METHODS: dict[str, Callable[[], t.Method]] = {
    "GET": t.Method_Get,
    "HEAD": t.Method_Head,
    "POST": t.Method_Post,
    "PUT": t.Method_Put,
    "DELETE": t.Method_Delete,
    "PATCH": t.Method_Patch,
    "OPTIONS": t.Method_Options,
}


def _parse_url(url: str) -> tuple[t.Scheme, str, str]:
    scheme, sep, rest = url.partition("://")
    schemes: dict[str, t.Scheme] = {"http": t.Scheme_Http(), "https": t.Scheme_Https()}
    split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:split], rest[split:]
    if not sep or scheme.lower() not in schemes or not authority:
        raise HttpError(f"`{url}` is not an http(s) URL")
    return schemes[scheme.lower()], authority, path or "/"


def request(
    method: str,
    url: str,
    headers: Headers | None = None,
    body: bytes | bytearray | str | None = None,
) -> Response:
    """Sends one request and reads the whole response. Raises
    :class:`HttpError` when it cannot be sent or is refused; an HTTP error
    status is a :class:`Response` like any other."""
    scheme, authority, path = _parse_url(url)
    fields = t.Fields()
    for k, v in _pairs(headers):
        try:
            fields.append(k, v.encode())
        except Err as e:
            fields.__exit__(None, None, None)
            why = type(e.value).__name__.removeprefix("HeaderError_")
            raise HttpError(f"bad header {k}: {_words(why)}") from None
    req = t.OutgoingRequest(fields)
    upper = method.upper()
    wit_method: t.Method = _METHODS[upper]() if upper in _METHODS else t.Method_Other(upper)
    try:
        what = "method"
        req.set_method(wit_method)
        what = "scheme"
        req.set_scheme(scheme)
        what = "host"
        req.set_authority(authority)
        what = "path"
        req.set_path_with_query(path)
    except Err:
        req.__exit__(None, None, None)
        raise HttpError(f"invalid {what}") from None
    out_body = req.body()

    try:
        pending = outgoing_handler.handle(req, None)
    except Err as e:
        out_body.__exit__(None, None, None)
        raise HttpError(_describe(e.value)) from None
    with pending:
        if body:
            data = body.encode() if isinstance(body, str) else bytes(body)
            with out_body.write() as stream:
                for i in range(0, len(data), 4096):
                    try:
                        stream.blocking_write_and_flush(data[i : i + 4096])
                    except Err as e:
                        raise HttpError(f"cannot send the body: {e.value}") from None
        try:
            t.OutgoingBody.finish(out_body, None)
        except Err as e:
            raise HttpError(_describe(e.value)) from None

        while (result := pending.get()) is None:
            with pending.subscribe() as ready:
                ready.block()
    if isinstance(result, Err):
        raise HttpError("the response was already taken")
    if isinstance(result.value, Err):
        raise HttpError(_describe(result.value.value))

    with result.value.value as response:
        status = response.status()
        with response.headers() as fields:
            headers_out = [(k, v.decode(errors="replace")) for k, v in fields.entries()]
        incoming = response.consume()
        chunks: list[bytes] = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(64 * 1024))
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    error = e.value.value
                    code = t.http_error_code(error)
                    detail = error.to_debug_string() if code is None else _describe(code)
                    raise HttpError(f"reading the response failed: {detail}") from None
        with t.IncomingBody.finish(incoming):
            pass
    return Response(status, headers_out, b"".join(chunks))
