"""The model writes the rolling conversation summary, when one is configured.

The agent folds older messages into its summary extractively as they are saved (no model
in the person's jail: it holds no API key). The gateway, which does, asks the agent after
a turn what was folded since a model last wrote the digest; once that is
``gateway.summary_model_after`` messages or more, the turn's model rewrites the digest
from them and the agent keeps the result in place of the extractive lines. One model
call every so many turns, counted against the person's budget like any other.
"""

from __future__ import annotations

from dexorder.contracts import agent_tools as contract
from gateway.harness.agent_link import AgentLink
from gateway.harness.model import ChatModel, ModelReply, UserMessage

#: what the digest may hold (the agent cuts it there too)
DIGEST_CHARS = 2_000

SYSTEM = (
    "You keep the running summary of a conversation between a trader and their trading "
    "agent. Write at most 1,800 characters, one short fact per line, no preamble: "
    "decisions taken, orders and alerts, strategies and indicators worked on, preferences "
    "and risk stated, tickers and numbers that matter, questions left open. Keep what the "
    "earlier summary says unless the new messages change it; drop small talk."
)


def prompt(digest: contract.ConversationDigest) -> str:
    earlier = "\n".join(f"- {line}" for line in digest.lines) or "(none yet)"
    new = "\n".join(f"- {m}" for m in digest.unwritten)
    return f"Earlier summary:\n{earlier}\n\nMessages to fold in:\n{new}"


async def resummarise(link: AgentLink, model: ChatModel, after: int) -> ModelReply | None:
    """Have ``model`` rewrite the digest if ``after`` messages or more wait for it."""
    if model.offline:
        return None
    outcome = await link.call(contract.CONVERSATION_DIGEST.name, {})
    digest = outcome.value
    if not isinstance(digest, contract.ConversationDigest) or len(digest.unwritten) < after:
        return None
    reply = await model.reply(SYSTEM, [UserMessage(role="user", content=prompt(digest))], [])
    text = reply.text.strip()[:DIGEST_CHARS]
    if text:
        await link.call(contract.WRITE_SUMMARY.name, {"text": text, "upto": digest.folded})
    return reply
