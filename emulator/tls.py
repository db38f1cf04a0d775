"""TLS for the emulator: a throwaway certificate authority and a certificate for loopback.

Some Upbit clients refuse anything but ``wss://`` URLs. ``Emulator(tls=True)`` (and
``upbit-fanout emulator --tls``) serves ``wss://`` and ``https://`` with a certificate issued, at
start, by a certificate authority made for this one run (with ``trustme``, an optional extra:
``pip install 'upbit-fanout[tls]'``). The certificate names ``127.0.0.1``, ``::1`` and
``localhost``. A client trusts it by trusting the authority's PEM file, e.g. through
``SSL_CERT_FILE=PATH`` (OpenSSL's default verify paths: ``ssl.create_default_context()``,
websockets, the collector) or ``ssl.create_default_context(cafile=PATH)``.

Nothing here is for production: the key lives in memory for the emulator's lifetime, and the
authority is trusted only by whoever is handed its file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from upbit_fanout.subscriptions.errors import UpbitFanoutError

__all__ = ["LOOPBACK_NAMES", "TLSUnavailableError", "TestCertificates", "make_certificates"]

LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


class TLSUnavailableError(UpbitFanoutError, RuntimeError):
    """``trustme`` is not installed; the message says how to install it."""


@dataclass(frozen=True)
class TestCertificates:
    """The server's TLS context and the PEM text of the authority that signed its certificate."""

    __test__ = False  # not a pytest test class, despite the name

    server_context: ssl.SSLContext
    ca_pem: bytes

    def write_ca(self, path: str | Path) -> Path:
        """Write the authority's certificate (PEM) to ``path``; returns the path."""
        target = Path(path)
        target.write_bytes(self.ca_pem)
        return target

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this authority (for tests and tools)."""
        context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        return context


def make_certificates(names: tuple[str, ...] = LOOPBACK_NAMES) -> TestCertificates:
    """A new authority and a server certificate for ``names``."""
    try:
        import trustme  # noqa: PLC0415 - an optional extra, needed only with TLS
    except ImportError as exc:
        raise TLSUnavailableError(
            "the emulator's TLS needs trustme: pip install 'upbit-fanout[tls]'"
        ) from exc
    authority = trustme.CA(organization_name="upbit-fanout emulator")
    certificate = authority.issue_cert(*names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return TestCertificates(server_context=context, ca_pem=authority.cert_pem.bytes())
