"""The asyncio transport of `AsyncEventsApi`: `AsyncApiClient`, over httpx (the `async` extra).

`AsyncApiClient` is the generated `ApiClient` with an async `call_api`: request building (`param_serialize`,
auth headers from the `Configuration`, the body serialized once by pydantic), answer reading
(`response_deserialize`: the same `ApiException` subclasses and `InvalidResponseError`) and direct retries
(`Configuration.max_retries`, `direct_retry.py`) are the sync client's own; only the HTTP exchange differs.

Why httpx: it is what the openai and anthropic SDKs are built on (a service metering their calls already has
it), it is typed, has one pure-Python dependency tree (httpcore, h11, anyio) and keeps the urllib3 client's
semantics we rely on (an answer read whole, a connection closed on cancellation). aiohttp would be a second
HTTP stack beside the LLM SDKs' one, with several compiled dependencies (multidict, yarl, frozenlist, ...).

- A number as `_request_timeout` is a deadline for the whole request (connect, send, the whole answer:
  `asyncio.wait_for`), reported as `ApiTimeoutError`; a `(connect, read)` pair keeps per-operation limits.
- Every httpx and OS failure below the answer becomes `ApiConnectionError` / `ApiTimeoutError`, with the
  credentials kept out of the text.
- A cancelled call closes its connection: the server never sees a request completed after the cancel, and a
  request it did complete is deduplicated on its event ids when the caller sends the events again.
- `async with AsyncApiClient(config) as client:` (or `await client.close()`) closes the connection pool.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from openmonetize.api_client import ApiClient
from openmonetize.configuration import Configuration
from openmonetize.exceptions import ApiConnectionError, ApiTimeoutError, ApiValueError
from openmonetize.lib import http_deadline

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncApiClient", "AsyncRESTClient", "AsyncRESTResponse"]


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the extra is part of "dev"
        raise ImportError("AsyncApiClient needs httpx: pip install 'openmonetize[async]'") from exc
    return httpx


class AsyncRESTResponse:
    """An answer read whole, shaped like the generated `rest.RESTResponse` that `response_deserialize` reads."""

    __slots__ = ("data", "headers", "reason", "response", "status")

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status: int = response.status_code
        self.reason: str = response.reason_phrase
        self.headers: httpx.Headers = response.headers
        self.data: bytes = response.content

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> httpx.Headers:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        value: str | None = self.headers.get(name, default)
        return value


class AsyncRESTClient:
    """One `httpx.AsyncClient` configured from a `Configuration` the way `rest.RESTClientObject` is."""

    def __init__(self, configuration: Configuration) -> None:
        hx = _httpx()
        verify: ssl.SSLContext | bool = False
        if configuration.verify_ssl:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert,
                                                 cadata=configuration.ca_cert_data)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if configuration.assert_hostname is False:
                context.check_hostname = False
            verify = context
        proxy = None
        if configuration.proxy and not _bypass(configuration):
            proxy = hx.Proxy(configuration.proxy, headers=configuration.proxy_headers)
        size = configuration.connection_pool_maxsize
        self.client: httpx.AsyncClient = hx.AsyncClient(
            verify=verify,
            proxy=proxy,
            limits=hx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=hx.Timeout(None),  # like urllib3: no limit unless the call sets `_request_timeout`
            trust_env=False,  # like the sync client: the Configuration alone decides proxies and certificates
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> AsyncRESTResponse:
        """Send one request and read its whole answer; transport failures become `ApiConnectionError`."""
        if post_params:
            raise ApiValueError("AsyncApiClient sends JSON bodies only (no form parameters)")
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        headers = dict(headers or {})
        scope = http_deadline.RequestScope(http_deadline._origin(url), _request_timeout, None,
                                           _secrets(headers))
        httpx = _httpx()
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        deadline: float | None = None
        if isinstance(_request_timeout, tuple) and len(_request_timeout) == 2:
            connect, read = _request_timeout
            timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
        elif isinstance(_request_timeout, (int, float)) and not isinstance(_request_timeout, bool) \
                and _request_timeout > 0:
            deadline = float(_request_timeout)
        exchange = self.client.request(method, url, content=body, headers=headers, timeout=timeout)
        try:
            if deadline is None:
                response = await exchange
            else:
                response = await asyncio.wait_for(exchange, deadline)
        except asyncio.TimeoutError as exc:
            raise ApiTimeoutError(f"no complete answer from {scope.host} within the "
                                  f"{http_deadline._seconds(_request_timeout)} request deadline",
                                  host=scope.host, timeout=_request_timeout) from exc
        except httpx.TimeoutException as exc:
            raise ApiTimeoutError(f"no complete answer from {scope.host}: {_describe(scope, exc)} (timeout "
                                  f"{http_deadline._seconds(_request_timeout)} per socket operation)",
                                  host=scope.host, timeout=_request_timeout) from exc
        except (httpx.TransportError, OSError) as exc:
            raise ApiConnectionError(f"could not complete the request to {scope.host}: {_describe(scope, exc)}",
                                     host=scope.host) from exc
        return AsyncRESTResponse(response)

    async def close(self) -> None:
        await self.client.aclose()


class AsyncApiClient(ApiClient):
    """The generated `ApiClient` whose `call_api` is awaited: use it with `AsyncEventsApi`.

    `async with AsyncApiClient(config) as client:` closes its connections at the end; so does `close()`.
    """

    def __init__(self, configuration: Configuration | None = None, header_name: str | None = None,
                 header_value: str | None = None, cookie: str | None = None) -> None:
        super().__init__(configuration, header_name, header_value, cookie)
        self.async_rest_client = AsyncRESTClient(self.configuration)

    async def call_api(  # type: ignore[override]
        self,
        method: str,
        url: str,
        header_params: Mapping[str, Any] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> AsyncRESTResponse:
        """Send the request, resending transient failures (`Configuration.max_retries`) with the same bytes."""
        rest_client = self.async_rest_client
        return await self.retry.acall(
            lambda: rest_client.request(method, url, headers=header_params, body=body, post_params=post_params,
                                        _request_timeout=_request_timeout),
            self.configuration.max_retries,
        )

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        await self.async_rest_client.close()

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> AsyncApiClient:
        raise TypeError("AsyncApiClient is an async context manager: use `async with AsyncApiClient(...)`")


def _secrets(headers: Mapping[str, Any]) -> list[str]:
    """Credential header values (and the key after `Bearer `), to keep out of failure texts."""
    found = [str(v) for k, v in headers.items() if str(k).lower() in http_deadline._CREDENTIAL_HEADERS and v]
    return found + [part for s in list(found) for part in s.split(" ", 1)[1:]]


def _describe(scope: http_deadline.RequestScope, exc: BaseException) -> str:
    root: BaseException = exc
    while root.__cause__ is not None and isinstance(root.__cause__, OSError):
        root = root.__cause__
    text = " ".join(str(root).split())[:300]
    return scope._redact(f"{type(root).__name__}: {text}" if text else type(root).__name__)


def _bypass(configuration: Configuration) -> bool:
    from openmonetize.rest import should_bypass_proxies

    return bool(should_bypass_proxies(configuration.host, configuration.no_proxy or ""))
