"""Calls between the platform's own parts (functions → gateway), with a platform token.

The token is an Ed25519 agent token whose subject is :data:`PLATFORM`: only holders of
the platform's private key can make one, and no person can have that id.
"""

from __future__ import annotations

from dexorder.tokens import InvalidToken, TokenKeys, mint_token, verify_token

PLATFORM = "platform"


def platform_token(keys: TokenKeys, ttl_s: int = 300) -> str:
    return mint_token(keys, PLATFORM, "service", ttl_s)


def is_platform_token(keys: TokenKeys, token: str) -> bool:
    try:
        return verify_token(keys, token).user == PLATFORM
    except InvalidToken:
        return False
