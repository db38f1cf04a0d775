"""Private-endpoint authentication as pure checks (emulator.auth)."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

import jwt
import pytest

from upbit_fanout.emulator.auth import AuthError, NonceMemory, make_token, verify_authorization

ACCESS = "test-access-key-0123456789"
SECRET = "s3cr3t-" * 10  # 70 bytes: long enough for PyJWT's HS512 key-length check


def check(
    header: str | None, nonces: NonceMemory | None = None, **keys: str | None
) -> dict[str, Any]:
    return verify_authorization(
        header,
        access_key=keys.get("access_key", ACCESS),
        secret_key=keys.get("secret_key", SECRET),
        nonces=nonces if nonces is not None else NonceMemory(),
    )


@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
def test_pyjwt_tokens_are_accepted(algorithm: str) -> None:
    token = jwt.encode({"access_key": ACCESS, "nonce": "n-1"}, SECRET, algorithm=algorithm)
    assert check(f"Bearer {token}") == {"access_key": ACCESS, "nonce": "n-1"}


def test_an_upbit_length_secret_works_without_base64_decoding() -> None:
    secret = "A" * 40  # Upbit secrets are 40 characters, used as raw bytes
    token = make_token(ACCESS, secret, algorithm="HS512")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        claims = jwt.decode(token, secret, algorithms=["HS512"])  # an independent check
    assert claims["access_key"] == ACCESS
    assert claims["nonce"]
    assert check(f"Bearer {token}", secret_key=secret)["access_key"] == ACCESS


def _forged(alg: str) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': alg})}.{enc({'access_key': ACCESS, 'nonce': 'x'})}."


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        ("Basic abc", "Authorization is not a Bearer token"),
        ("Bearer ", "Authorization is not a Bearer token"),
        ("Bearer a.b", "malformed JWT"),
        ("Bearer !!.!!.!!", "malformed JWT"),
        (f"Bearer {_forged('none')}", "unsupported JWT algorithm (use HS512 or HS256)"),
        (f"Bearer {_forged('HS384')}", "unsupported JWT algorithm (use HS512 or HS256)"),
        (f"Bearer {make_token(ACCESS, 'wrong-secret')}", "bad JWT signature"),
        (f"Bearer {make_token('someone-else', SECRET)}", "unknown access_key"),
        (f"Bearer {make_token(ACCESS, SECRET, nonce='')}", "missing nonce"),
    ],
)
def test_refusals_say_why(header: str | None, reason: str) -> None:
    with pytest.raises(AuthError) as caught:
        check(header)
    assert caught.value.reason == reason
    assert SECRET not in str(caught.value)


def test_a_reused_nonce_is_refused_and_memory_is_bounded() -> None:
    nonces = NonceMemory(capacity=2)
    token = make_token(ACCESS, SECRET, nonce="same")
    check(f"Bearer {token}", nonces)
    with pytest.raises(AuthError, match="reused nonce"):
        check(f"Bearer {token}", nonces)
    for nonce in ("b", "c"):
        check(f"Bearer {make_token(ACCESS, SECRET, nonce=nonce)}", nonces)
    assert len(nonces) == 2
    assert "same" not in nonces


def test_a_refused_token_does_not_burn_its_nonce() -> None:
    nonces = NonceMemory()
    with pytest.raises(AuthError):
        check(f"Bearer {make_token('other', SECRET, nonce='n')}", nonces)
    check(f"Bearer {make_token(ACCESS, SECRET, nonce='n')}", nonces)


def test_without_configured_keys_everyone_is_refused() -> None:
    token = make_token(ACCESS, SECRET)
    with pytest.raises(AuthError, match="disabled"):
        check(f"Bearer {token}", access_key=None, secret_key=None)
