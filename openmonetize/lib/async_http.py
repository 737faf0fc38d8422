"""The asyncio transport of `AsyncEventsApi`: `AsyncApiClient`, over aiohttp (the `async` extra).

`AsyncApiClient` is the generated `ApiClient` with an async `call_api`: request building (`param_serialize`,
auth headers from the `Configuration`, the body serialized once by pydantic), answer reading
(`response_deserialize`: the same `ApiException` subclasses and `InvalidResponseError`) and direct retries
(`Configuration.max_retries`, `direct_retry.py`) are the sync client's own; only the HTTP exchange differs.

Why aiohttp: it was measured. Its HTTP parser and writer are compiled, so a call spends less of the loop's
time in the transport: bench/ingest.py posts the same bodies over both libraries side by side, and the bare
httpx floor (pure Python: h11, httpcore, anyio) makes 0.80-0.84x the events/s of the bare aiohttp one; over
aiohttp, `AsyncEventsApi.ingest` makes 1.04-1.05x the events/s of the sync `EventsApi.ingest` (BENCHMARKS.md).
The cost is compiled dependencies (multidict, yarl, frozenlist, ...), with wheels for the usual platforms.

- The `aiohttp.ClientSession` is made on the first request, inside the running loop: an `AsyncApiClient`
  belongs to the event loop it first sends on (another loop gets a `RuntimeError`; make one client per loop).
- A number as `_request_timeout` is a deadline for the whole request (connect, send, the whole answer:
  `asyncio.wait_for`), reported as `ApiTimeoutError`; a `(connect, read)` pair keeps per-operation limits
  (aiohttp's `sock_connect` / `sock_read`). No redirects are followed; proxies and certificates come from the
  `Configuration` alone (`trust_env=False`); our User-Agent replaces aiohttp's.
- Every aiohttp and OS failure below the answer becomes `ApiConnectionError` / `ApiTimeoutError`, with the
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
    import aiohttp
    from multidict import CIMultiDictProxy

__all__ = ["AsyncApiClient", "AsyncRESTClient", "AsyncRESTResponse"]


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError as exc:  # pragma: no cover - the extra is part of "dev"
        raise ImportError("AsyncApiClient needs aiohttp: pip install 'openmonetize[async]'") from exc
    return aiohttp


class AsyncRESTResponse:
    """An answer read whole, shaped like the generated `rest.RESTResponse` that `response_deserialize` reads."""

    __slots__ = ("data", "headers", "reason", "response", "status")

    def __init__(self, response: aiohttp.ClientResponse, data: bytes) -> None:
        self.response = response
        self.status: int = response.status
        self.reason: str = response.reason or ""
        # looked up case-insensitively; listed with lower-case names (`ApiResponse.headers` is a plain dict)
        self.headers: CIMultiDictProxy[str] = _lower(response.headers)
        self.data: bytes = data

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> CIMultiDictProxy[str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        value: str | None = self.headers.get(name, default)
        return value


class AsyncRESTClient:
    """One `aiohttp.ClientSession` configured from a `Configuration` the way `rest.RESTClientObject` is.

    The session is made on the first request, inside the running loop (aiohttp binds it to that loop): an
    `AsyncApiClient` belongs to the event loop it first sends on.
    """

    def __init__(self, configuration: Configuration) -> None:
        _aiohttp()  # fail at construction, not at the first request, when the extra is missing
        self._ssl: ssl.SSLContext | bool = False
        if configuration.verify_ssl:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert,
                                                 cadata=configuration.ca_cert_data)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if configuration.assert_hostname is False:
                context.check_hostname = False
            self._ssl = context
        self._proxy: str | None = None
        self._proxy_headers: dict[str, str] | None = None
        if configuration.proxy and not _bypass(configuration):
            self._proxy = configuration.proxy
            self._proxy_headers = dict(configuration.proxy_headers or {}) or None
        self._size: int = configuration.connection_pool_maxsize
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None:
            if loop is not self._loop:
                raise RuntimeError("this AsyncApiClient belongs to another event loop: make one per loop")
            return self._session
        if self._closed:
            raise RuntimeError("this AsyncApiClient is closed")
        aiohttp = _aiohttp()
        self._loop = loop
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._size, ssl=self._ssl),
            # like urllib3: no limit unless the call sets `_request_timeout` (aiohttp's default is 300 s)
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,  # like the sync client: the Configuration alone decides proxies and certificates
            cookie_jar=aiohttp.DummyCookieJar(),  # like urllib3: an answer's cookies are not sent back
        )
        return self._session

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
        if isinstance(body, str):
            body = body.encode()
        headers = {str(k): str(v) for k, v in (headers or {}).items()}
        scope = http_deadline.RequestScope(http_deadline._origin(url), _request_timeout, None,
                                           _secrets(headers))
        aiohttp = _aiohttp()
        session = self._open()
        timeout: Any = None
        deadline: float | None = None
        if isinstance(_request_timeout, tuple) and len(_request_timeout) == 2:
            connect, read = _request_timeout
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        elif isinstance(_request_timeout, (int, float)) and not isinstance(_request_timeout, bool) \
                and _request_timeout > 0:
            deadline = float(_request_timeout)

        async def exchange() -> AsyncRESTResponse:
            response = await session.request(method, url, data=body, headers=headers, timeout=timeout,
                                             allow_redirects=False, proxy=self._proxy,
                                             proxy_headers=self._proxy_headers)
            try:
                data = await response.read()  # the whole answer; then the connection goes back to the pool
            except BaseException:
                response.close()  # cancelled or failed mid-answer: the connection is closed, never reused
                raise
            return AsyncRESTResponse(response, data)

        try:
            if deadline is None:
                return await exchange()
            return await asyncio.wait_for(exchange(), deadline)
        except aiohttp.ServerTimeoutError as exc:  # sock_connect / sock_read (before TimeoutError: a subclass)
            raise ApiTimeoutError(f"no complete answer from {scope.host}: {_describe(scope, exc)} (timeout "
                                  f"{http_deadline._seconds(_request_timeout)} per socket operation)",
                                  host=scope.host, timeout=_request_timeout) from exc
        except asyncio.TimeoutError as exc:  # before OSError: TimeoutError is one since Python 3.11
            raise ApiTimeoutError(f"no complete answer from {scope.host} within the "
                                  f"{http_deadline._seconds(_request_timeout)} request deadline",
                                  host=scope.host, timeout=_request_timeout) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiConnectionError(f"could not complete the request to {scope.host}: {_describe(scope, exc)}",
                                     host=scope.host) from exc

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


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


def _lower(headers: CIMultiDictProxy[str]) -> CIMultiDictProxy[str]:
    from multidict import CIMultiDict, CIMultiDictProxy

    return CIMultiDictProxy(CIMultiDict((name.lower(), value) for name, value in headers.items()))


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
