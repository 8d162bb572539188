"""The Telegram webhook: Bot API updates in, replies through the Bot API.

Only requests carrying the webhook secret are read. The webhook answers at once and the
turn runs beside it (Telegram re-sends an update that is not answered quickly); an
update id seen before is ignored.
"""

from __future__ import annotations

import hmac

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dexorder.contracts.chat import ServerFrame, StatusFrame
from dexorder.json_input import text_problem
from gateway.accounts.store import AccountError
from gateway.api.common import answers_refusals, body, gateway_of
from gateway.service import Caller, Gateway, Refused
from gateway.telegram import IncomingMessage, TelegramError, parse_update

log = structlog.get_logger(part="gateway")

GREETING = (
    "Hello! I am your DexOrder trading agent. To start, link this chat to your account: "
    "log in on the web page, get a link code, and send it here as /link CODE."
)


@answers_refusals
async def webhook(request: Request) -> Response:
    gw = gateway_of(request)
    secret = gw.cfg.gateway.telegram_webhook_secret
    if gw.bot is None or not secret:
        raise Refused(404, "Telegram is not configured on this platform")
    given = request.headers.get("x-telegram-bot-api-secret-token", "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Refused(401, "wrong or missing X-Telegram-Bot-Api-Secret-Token")
    # a Telegram update carries what its sender typed in their name, too: its strings
    # are not refused wholesale (a 400 makes Telegram re-send the update, holding up the
    # bot's later ones); the message text, the only one used, is checked in ``_handle``
    msg = parse_update(await body(request, check_text=False))
    if msg is not None and gw.telegram_updates.first_time(msg.update_id):
        gw.spawn(handle(gw, msg))
    return JSONResponse({"ok": True})


async def handle(gw: Gateway, msg: IncomingMessage) -> None:
    assert gw.bot is not None
    try:
        await _handle(gw, msg)
    except (TelegramError, OSError, TimeoutError) as exc:
        log.warning("telegram reply failed", chat=msg.chat_id, error=str(exc))
    except Exception:
        log.exception("telegram update failed", chat=msg.chat_id)


async def _handle(gw: Gateway, msg: IncomingMessage) -> None:
    assert gw.bot is not None
    text = msg.text.strip()
    if msg.chat_id != msg.user_id:
        await gw.bot.send_text(msg.chat_id, "Talk to me in a private chat, please.")
        return
    problem = text_problem(text)
    if problem:
        await gw.bot.send_text(msg.chat_id, f"Message refused: {problem}.")
        return
    if text.startswith("/start"):
        await gw.bot.send_text(msg.chat_id, GREETING)
        return
    if text.startswith("/link"):
        await _link(gw, msg, text.removeprefix("/link").strip())
        return
    linked = gw.accounts.account_for_telegram(msg.user_id)
    if linked is None:
        await gw.bot.send_text(msg.chat_id, GREETING)
        return
    await gw.bot.typing(msg.chat_id)

    async def progress(frame: ServerFrame) -> None:
        if isinstance(frame, StatusFrame):  # the rest Telegram cannot stream
            await gw.bot.send_text(msg.chat_id, frame.text)  # type: ignore[union-attr]

    try:
        result = await gw.chat(Caller(linked, "token"), text, "telegram", progress)
    except Refused as exc:
        await gw.bot.send_text(msg.chat_id, exc.message)
        return
    await gw.bot.send_text(msg.chat_id, result.reply or "(no answer)")
    if result.attachments:
        await gw.hub.send_attachments(msg.chat_id, result.attachments)


async def _link(gw: Gateway, msg: IncomingMessage, code: str) -> None:
    """Redeem a link code, with wrong codes throttled per chat (a code is 32 bits and
    lives ten minutes: unthrottled, a script could try them all)."""
    assert gw.bot is not None
    keyed = (f"link:{msg.chat_id}", gw.throttle.policies.link)
    verdict = await gw.throttle.attempt(keyed)
    if not verdict.allowed:
        minutes = max(1, round(verdict.retry_after_s / 60))
        await gw.bot.send_text(
            msg.chat_id, f"Too many link attempts from this chat; try again in {minutes} min."
        )
        return
    try:
        account = gw.accounts.redeem_link_code(code, msg.user_id)
    except AccountError as exc:
        await gw.throttle.failed(keyed)
        await gw.bot.send_text(msg.chat_id, f"Linking failed: {exc}.")
        return
    await gw.throttle.succeeded(forget=(keyed[0],))
    await gw.bot.send_text(msg.chat_id, f"Linked to {account.email}. Ask me anything.")
    await gw.deliver_held(account.id)  # what came while they had no channel: here now


routes = [Route("/telegram/webhook", webhook, methods=["POST"])]
