"""The conversation: messages kept, and found again by meaning."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.person import PersonAgent
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c


def register(box: ToolBox, person: PersonAgent) -> None:
    @box.tool(c.SAVE_MESSAGE, "Keep one message of the conversation (the person's or the agent's).")
    async def save_message(
        role: Literal["user", "assistant"],
        text: Annotated[str, Field(min_length=1, max_length=100_000)],
        channel: Annotated[
            str, Field(max_length=32, description="web, telegram, terminal…")
        ] = "chat",
    ) -> c.SavedMessage:
        return await person.memory.save(role, text, channel)

    @box.tool(
        c.SEARCH_CONVERSATION,
        "Find past messages closest in meaning to a query (semantic search).",
    )
    async def search_conversation(
        query: Annotated[str, Field(min_length=1, max_length=8_000)],
        limit: Annotated[int, Field(ge=1, le=50)] = 5,
        role: Literal["user", "assistant"] | None = None,
    ) -> c.ConversationMatches:
        return c.ConversationMatches(matches=await person.memory.search(query, limit, role))

    @box.tool(
        c.CONVERSATION_DIGEST,
        "The folded part of the rolling conversation summary, and what was folded since a "
        "model last wrote it.",
    )
    async def conversation_digest() -> c.ConversationDigest:
        return person.memory.digest()

    @box.tool(
        c.WRITE_SUMMARY,
        "Replace the summary of the first `upto` messages with one a model wrote.",
    )
    async def write_summary(
        text: Annotated[str, Field(min_length=1, max_length=20_000)],
        upto: Annotated[int, Field(ge=1)],
    ) -> c.ConversationDigest:
        await person.memory.write_summary(text, upto)
        return person.memory.digest()
