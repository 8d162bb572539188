"""Claude through Anthropic's official SDK, streaming its text as it comes."""

from __future__ import annotations

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
        try:
            async with self.client.messages.stream(
                model=self.name,
                max_tokens=self.max_tokens,
                system=system,
                messages=[to_api(m) for m in messages],
                tools=[t.to_api() for t in tools] if tools else anthropic.omit,
            ) as stream:
                async for text in stream.text_stream:
                    if on_text is not None:
                        await on_text(text)
                final = await stream.get_final_message()
        except anthropic.RateLimitError:
            raise ModelError("the model is busy (rate limited); try again in a moment") from None
        except anthropic.APIStatusError as exc:
            raise ModelError(f"the model refused the request ({exc.status_code})") from None
        except anthropic.APIError as exc:
            raise ModelError(f"the model could not be reached ({type(exc).__name__})") from None
        return ModelReply(
            text="".join(b.text for b in final.content if b.type == "text"),
            tool_calls=[
                ToolCall(b.id, b.name, dict(b.input)) for b in final.content if b.type == "tool_use"
            ],
            model=final.model,
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
        )
