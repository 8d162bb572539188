"""Claude through Anthropic's official SDK, streaming its text as it comes.

Retries are the SDK's own (``max_retries``: 429, 529 overloaded and 5xx, with exponential
backoff, jitter and the API's ``retry-after`` honoured); what it cannot retry, an
``overloaded_error`` arriving inside a stream that had begun, is told as *busy* too, so
the router's fallback takes over (:class:`gateway.harness.router.RoutedModel`).
"""

from __future__ import annotations

import contextvars
from typing import Any

import anthropic

from gateway.harness.model import (
    Message,
    ModelError,
    ModelReply,
    OnText,
    ToolCall,
    ToolSpec,
    to_api,
)

#: the SDK's retries of the request under way in this task (its retry-count header)
_retries: contextvars.ContextVar[int] = contextvars.ContextVar("model_retries", default=0)
#: error types the API sends when it is busy rather than when the request is wrong
_BUSY = {"overloaded_error", "rate_limit_error", "api_error", "timeout_error"}


async def _count_retries(request: Any) -> None:
    """httpx request hook: the SDK numbers each attempt in ``x-stainless-retry-count``."""
    _retries.set(int(request.headers.get("x-stainless-retry-count", "0") or 0))


def client(api_key: str, base_url: str | None, max_retries: int) -> anthropic.AsyncAnthropic:
    """One client for all turns (connection pooling), counting its retries per call."""
    http = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [_count_retries]})
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, max_retries=max_retries, http_client=http
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
