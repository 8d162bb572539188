"""Calls between the platform's own parts (functions → gateway), with a platform token.

The token is an Ed25519 agent token whose subject is :data:`PLATFORM`: only holders of
the platform's private key can make one, and no person can have that id.
"""

from __future__ import annotations

from dexorder.config import Settings
from dexorder.tokens import InvalidToken, TokenKeys, mint_token, token_keys, verify_token

PLATFORM = "platform"


def platform_token(keys: TokenKeys, ttl_s: int = 300) -> str:
    return mint_token(keys, PLATFORM, "service", ttl_s)


def calling_token(cfg: Settings) -> str:
    """The token a function calls the gateway with.

    In the cluster a function holds only the token *public* key: its own platform token
    (subject ``platform``, made by whoever holds the private key, with an expiry) comes
    in its Secret as ``agent.service_token``. On one machine, where the function runs in
    the gateway's process and the key is at hand, it makes a short-lived one.
    """
    if cfg.agent.service_token:
        return cfg.agent.service_token
    return platform_token(token_keys(cfg))


def is_platform_token(keys: TokenKeys, token: str) -> bool:
    try:
        return verify_token(keys, token).user == PLATFORM
    except InvalidToken:
        return False
