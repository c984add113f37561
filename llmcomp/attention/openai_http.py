"""The HTTP client under the OpenAI SDK, and the limits a hostile server meets there.

The ``AsyncOpenAI`` client gets an HTTP client of its own whose response hook caps every body at
``MAX_BODY_BYTES`` (error bodies and redirects included, before they are read in full) and refuses compressed
bodies: we ask for none, since a 1 MB gzip body can inflate to a gigabyte. The wall-clock deadline of a request
is the caller's (``asyncio.timeout`` around it): the SDK's own timeout applies to each read, so a body sent one
byte a second would never time out.
"""

from __future__ import annotations

import sys
from typing import Any

#: The largest response body read (bytes); a real answer is a few kilobytes.
MAX_BODY_BYTES = 1_000_000
#: The largest batch output or error file read (bytes): a full batch's answers are some hundreds of MB.
MAX_FILE_BYTES = 2_000_000_000


class BodyTooLarge(Exception):
    """A body over the cap (or compressed though we asked for none): the request fails with this reason."""


def build_sdk(base_url: str, key: str, timeout: float, max_body: int = MAX_BODY_BYTES) -> Any:
    """An ``AsyncOpenAI`` client that retries nothing (the chat client does) and reads bodies up to ``max_body``."""
    import functools

    import openai

    # no redirects: a server a visitor names could otherwise send the request on to an address the
    # base-URL check refused (169.254.169.254, loopback); a 3xx fails the request with its status
    http = openai.DefaultAsyncHttpxClient(
        event_hooks={"response": [functools.partial(_cap_body, limit=max_body)]}, follow_redirects=False
    )
    return openai.AsyncOpenAI(
        api_key=key,
        base_url=base_url,
        max_retries=0,
        timeout=timeout,
        http_client=http,
        default_headers={"Accept-Encoding": "identity"},
    )


def too_large(e: BaseException) -> BodyTooLarge | None:
    """The ``BodyTooLarge`` behind an exception, as raised or as an SDK that wraps it left it."""
    while e is not None:
        if isinstance(e, BodyTooLarge):
            return e
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return None


async def _cap_body(response: Any, limit: int = MAX_BODY_BYTES) -> None:
    """Response hook (before the body is read): refuse what is known too large, cap what is not yet known."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise BodyTooLarge(f"the server sent a {encoding[:20]}-compressed body though asked for none")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"the server's answer is {int(length):,} bytes, larger than the {_size(limit)} cap")
    response.stream = _capped_stream_class(response)(response.stream, limit)


_CLASSES: dict[type, type] = {}


def _capped_stream_class(response: Any) -> type:
    """A byte stream of the response's own HTTP library (httpx or a fork) that stops at the cap."""
    base = sys.modules[type(response).__module__.partition(".")[0]].AsyncByteStream
    if base not in _CLASSES:

        class Capped(base):  # type: ignore[misc, valid-type]
            def __init__(self, inner: Any, limit: int):
                self.inner, self.limit = inner, limit

            async def __aiter__(self) -> Any:
                read = 0
                async for chunk in self.inner:
                    read += len(chunk)
                    if read > self.limit:
                        raise BodyTooLarge(f"the server's answer is larger than the {_size(self.limit)} cap")
                    yield chunk

            async def aclose(self) -> None:
                await self.inner.aclose()

        _CLASSES[base] = Capped
    return _CLASSES[base]


def _size(n: int) -> str:
    return f"{n / 1e9:g} GB" if n >= 1e9 else f"{n / 1e6:g} MB"
