"""Private-endpoint authentication (docs/upbit-protocol.md §8), as pure checks.

The upgrade request to ``/websocket/v1/private`` must carry ``Authorization: Bearer <JWT>``. The
token is HS256 or HS512 signed with the *raw* secret string (no Base64 decoding) and its payload
carries ``access_key`` (the configured one) and a fresh ``nonce``. :func:`verify_authorization`
checks all of that and records the nonce in a bounded :class:`NonceMemory`, so a reused token is
refused. The checks are done here with :mod:`hmac` rather than PyJWT because PyJWT warns on
secrets shorter than the hash (Upbit's are 40 characters), and the emulator must accept them.

:func:`make_token` builds such a token (for tests, demos and the collector's own tests).
Nothing here logs, and no error message contains a token or a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from upbit_fanout.subscriptions.errors import UpbitFanoutError

__all__ = [
    "ALGORITHMS",
    "AuthError",
    "NonceMemory",
    "make_token",
    "query_hash",
    "verify_authorization",
]

ALGORITHMS: Final[Mapping[str, Any]] = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}
"""Accepted ``alg`` values: HS512 is what Upbit recommends, HS256 what ccxt uses (§8)."""


class AuthError(UpbitFanoutError):
    """The private handshake is refused; ``reason`` says why (never contains a secret)."""

    def __init__(self, reason: str, name: str = "jwt_verification") -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name
        """Upbit's REST error name for this refusal (``jwt_verification``, ``nonce_used``,
        ``invalid_query_payload``, ``invalid_access_key``); the REST endpoints answer it."""


class NonceMemory:
    """The last ``capacity`` nonces seen, to refuse a token used twice (bounded, oldest go)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str) -> None:
        self._seen[nonce] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def verify_authorization(
    header: str | None,
    *,
    access_key: str | None,
    secret_key: str | None,
    nonces: NonceMemory,
    query: str | None = None,
) -> dict[str, Any]:
    """Check an ``Authorization`` header value; return the token's payload.

    ``query`` (REST only): the request's query string. When it is not empty the token must
    carry ``query_hash`` = hex SHA-512 of exactly that string and ``query_hash_alg`` =
    ``SHA512`` (docs/upbit-protocol.md §13), else ``invalid_query_payload``; without a query, a
    ``query_hash`` is not checked.

    Raises :class:`AuthError` when the emulator has no keys, the header is missing or not a
    Bearer token, the token is malformed, its algorithm is not HS256/HS512, its signature does not
    match ``secret_key``, its ``access_key`` is not ours, its ``nonce`` is missing, or the nonce
    was used before. The nonce is remembered only when everything else is right.
    """
    if not access_key or not secret_key:
        raise AuthError("the private endpoint is disabled: no access and secret key configured")
    if not header:
        raise AuthError("missing Authorization header")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization is not a Bearer token")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise AuthError("malformed JWT")
    try:
        head = json.loads(_b64decode(parts[0]))
        payload = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except ValueError:
        raise AuthError("malformed JWT") from None
    if not isinstance(head, dict) or not isinstance(payload, dict):
        raise AuthError("malformed JWT")
    digest = ALGORITHMS.get(head.get("alg"))  # type: ignore[arg-type]
    if digest is None:
        raise AuthError("unsupported JWT algorithm (use HS512 or HS256)")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    expected = hmac.new(secret_key.encode("utf-8"), signing_input, digest).digest()
    if not hmac.compare_digest(expected, signature):
        raise AuthError("bad JWT signature")
    if payload.get("access_key") != access_key:
        raise AuthError("unknown access_key", "invalid_access_key")
    nonce = payload.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise AuthError("missing nonce", "invalid_query_payload")
    if query is not None:
        _check_query_hash(payload, query)
    if nonce in nonces:
        raise AuthError("reused nonce", "nonce_used")
    nonces.add(nonce)
    return payload


def query_hash(query: str) -> str:
    """Hex SHA-512 of a query string, as Upbit's ``query_hash`` claim wants it (§13)."""
    return hashlib.sha512(query.encode("utf-8")).hexdigest()


def _check_query_hash(payload: Mapping[str, Any], query: str) -> None:
    claimed = payload.get("query_hash")
    if not query:
        return
    if claimed is None:
        raise AuthError("missing query_hash for a request with a query", "invalid_query_payload")
    if payload.get("query_hash_alg", "SHA512") != "SHA512":
        raise AuthError("query_hash_alg must be SHA512", "invalid_query_payload")
    if not isinstance(claimed, str) or not hmac.compare_digest(claimed, query_hash(query)):
        raise AuthError("query_hash does not match the query string", "invalid_query_payload")


def make_token(
    access_key: str,
    secret_key: str,
    *,
    algorithm: str = "HS512",
    nonce: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A JWT as Upbit's private WebSocket wants it: ``access_key`` + a fresh ``nonce`` (§8)."""
    digest = ALGORITHMS[algorithm]
    head = _b64encode(json.dumps({"alg": algorithm, "typ": "JWT"}, separators=(",", ":")).encode())
    fresh = str(uuid.uuid4()) if nonce is None else nonce
    claims = {"access_key": access_key, "nonce": fresh, **(extra or {})}
    body = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret_key.encode(), f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{_b64encode(signature)}"
