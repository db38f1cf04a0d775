"""Private-endpoint JWT (docs/upbit-protocol.md §8): HS512, ``access_key`` + a fresh ``nonce``.

A new token is minted for every connection attempt (Upbit asks for a new nonce per request, and
the emulator refuses a reused one). The secret is signed as the raw string (no Base64 decoding).

Secrets never appear in a log line, a status field or an exception message: :class:`Credentials`
hides both keys from ``repr`` and errors are re-raised without the original message.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from dataclasses import dataclass, field

import jwt

from upbit_fanout.subscriptions.errors import UpstreamError

__all__ = ["Credentials", "authorization_header", "mint_token"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Upbit API keys; ``repr`` shows neither of them."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise ValueError("both Upbit API keys must be non-empty")


def mint_token(
    credentials: Credentials, *, nonce: str | None = None, query: str | None = None
) -> str:
    """A fresh HS512 JWT carrying ``access_key`` and a new uuid4 ``nonce``; for a REST request
    with a ``query`` string also ``query_hash`` (hex SHA-512 of exactly that string) and
    ``query_hash_alg`` ``SHA512`` (docs/upbit-protocol.md §13)."""
    payload = {"access_key": credentials.access_key, "nonce": nonce or str(uuid.uuid4())}
    if query:
        payload["query_hash"] = hashlib.sha512(query.encode("utf-8")).hexdigest()
        payload["query_hash_alg"] = "SHA512"
    try:
        with warnings.catch_warnings():
            # Upbit secrets are 40 characters, shorter than PyJWT's advice for HS512 (64 bytes);
            # the length is Upbit's choice, not ours, so the warning would only be noise.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            return jwt.encode(payload, credentials.secret_key, algorithm="HS512")
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        # Never chain the original message: it could quote the key.
        raise UpstreamError(f"cannot sign the Upbit JWT ({type(exc).__name__})") from None


def authorization_header(credentials: Credentials, *, query: str | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <fresh JWT>"}`` for one private connection attempt, or one
    REST request (``query``: its query string, hashed into the token)."""
    return {"Authorization": f"Bearer {mint_token(credentials, query=query)}"}
