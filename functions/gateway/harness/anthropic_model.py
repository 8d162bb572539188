"""Claude through Anthropic's official SDK, streaming its text as it comes.

Retries are the SDK's own (``max_retries``: 429, 529 overloaded and 5xx, with exponential
backoff, jitter and the API's ``retry-after`` honoured up to ``retry_after_max_s``: the SDK
waits out any ``retry-after`` however long, while a person watches the turn, so a longer
one is told as *busy* at once, by :class:`RetryAfterCap`); what it cannot retry, an
``overloaded_error`` arriving inside a stream that had begun, is told as *busy* too, so
the router's fallback takes over (:class:`gateway.harness.router.RoutedModel`).
"""

from __future__ import annotations

import contextvars
import email.utils
import time
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic import APIRequest, AsyncAPIResponse, AsyncCallNext, Middleware

from gateway.harness.model import (
    Message,
    ModelError,
    ModelReply,
    OnText,
    ToolCall,
    ToolSpec,
    to_api,
)

#: the SDK's retries of the request under way in this task (counted by RetryAfterCap)
_retries: contextvars.ContextVar[int] = contextvars.ContextVar("model_retries", default=0)
#: error types the API sends when it is busy rather than when the request is wrong
_BUSY = {"overloaded_error", "rate_limit_error", "api_error", "timeout_error"}


class RetryAfterTooLong(Exception):
    """The API asked for a wait longer than a turn should hold the person for."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the API asks to wait {seconds:.0f} s")
        self.seconds = seconds


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait an answer asks for: ``retry-after-ms``, else ``retry-after`` in seconds or
    as an HTTP date (the forms the SDK itself reads); None when it asks for none."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            parsed = email.utils.parsedate_tz(value) if scale == 1.0 else None
            if parsed is not None:
                return float(email.utils.mktime_tz(parsed) - time.time())
    return None


class RetryAfterCap(Middleware):
    """Counts the SDK's retries of the call under way, and turns a retryable answer whose
    ``retry-after`` exceeds ``max_s`` into :class:`RetryAfterTooLong` before the SDK's
    retry loop sleeps on it.

    Runs inside the SDK's retry loop, once per attempt (its public middleware); an
    exception of our own type is not one the SDK retries, so it reaches :meth:`reply`. On
    the last attempt the SDK would not wait anyway, so the answer goes on as it is.
    """

    def __init__(self, max_s: float, max_retries: int) -> None:
        self.max_s, self.max_retries = max_s, max_retries

    async def handle_async(
        self, request: APIRequest, call_next: AsyncCallNext
    ) -> AsyncAPIResponse[Any]:
        _retries.set(request.retries_taken)
        response = await call_next(request)
        retryable = response.status_code in (408, 409, 429) or response.status_code >= 500
        if retryable and request.retries_taken < self.max_retries:
            wait = retry_after_seconds(response.headers)
            if wait is not None and wait > self.max_s:
                await response.close()
                raise RetryAfterTooLong(wait)
        return response


def client(
    api_key: str, base_url: str | None, max_retries: int, retry_after_max_s: float = 10.0
) -> anthropic.AsyncAnthropic:
    """One client for all turns (connection pooling), counting its retries per call."""
    return anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=max_retries,
        middleware=[RetryAfterCap(retry_after_max_s, max_retries)],
    )


def _busy(exc: anthropic.APIStatusError) -> bool:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return exc.status_code == 429 or exc.status_code >= 500 or kind in _BUSY


class AnthropicModel:
    """One Claude model; ``client`` is shared by all turns (connection pooling)."""

    offline = False

    def __init__(self, client: anthropic.AsyncAnthropic, model: str, max_tokens: int = 4096):
        self.client, self.name, self.max_tokens = client, model, max_tokens

    async def reply(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: OnText | None = None,
    ) -> ModelReply:
        _retries.set(0)
        streamed = False
        try:
            async with self.client.messages.stream(
                model=self.name,
                max_tokens=self.max_tokens,
                system=system,
                messages=[to_api(m) for m in messages],
                tools=[t.to_api() for t in tools] if tools else anthropic.omit,
            ) as stream:
                async for text in stream.text_stream:
                    streamed = True
                    if on_text is not None:
                        await on_text(text)
                final = await stream.get_final_message()
        except RetryAfterTooLong as exc:
            raise ModelError(
                f"the model is busy ({exc}); try again later",
                busy=not streamed,
                retries=_retries.get(),
            ) from None
        except anthropic.RateLimitError:
            raise ModelError(
                "the model is busy (rate limited); try again in a moment",
                busy=not streamed,
                retries=_retries.get(),
            ) from None
        except anthropic.APIStatusError as exc:
            status = "overloaded" if _busy(exc) and exc.status_code < 400 else exc.status_code
            raise ModelError(
                f"the model refused the request ({status})",
                # once the person has seen part of an answer, another model's would repeat it
                busy=_busy(exc) and not streamed,
                retries=_retries.get(),
            ) from None
        except anthropic.APIError as exc:
            raise ModelError(
                f"the model could not be reached ({type(exc).__name__})",
                busy=not streamed,
                retries=_retries.get(),
            ) from None
        return ModelReply(
            text="".join(b.text for b in final.content if b.type == "text"),
            tool_calls=[
                ToolCall(b.id, b.name, dict(b.input)) for b in final.content if b.type == "tool_use"
            ],
            model=final.model,
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            retries=_retries.get(),
        )
