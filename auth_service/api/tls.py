"""Server TLS: certificate, key and (for mTLS) the CA client certificates must chain to.

The PEM files are checked with the standard library's `ssl` at start-up (a key
that does not match its certificate is a configuration error, not a failed
handshake later). They are re-read when they change on disk: gRPC asks for the
current certificates on every new connection, `ServerTLS` answers from a cache
keyed by the files' stat, so a renewed certificate (cert-manager, a rotated secret)
is served to new connections without a restart. A half-written rotation (key not
matching the certificate yet) keeps the previous pair until the files agree.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc

from auth_service.addresses import is_loopback, parse_host_port
from auth_service.config import ConfigError, Settings

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

_Signature = tuple[tuple[int, int, int], ...]


def insecure_listen_problem(settings: Settings) -> str | None:
    """Why `serve` must not start with these settings, in one line; None when fine.

    Plaintext is refused on anything but a loopback address unless ALLOW_INSECURE
    says a proxy or service mesh in front terminates TLS.
    """
    if settings.tls_cert_file or settings.allow_insecure:
        return None
    host, _ = parse_host_port(settings.listen)
    if is_loopback(host.strip("[]")):
        return None
    return (
        f"refusing to listen on {settings.listen} without TLS: set TLS_CERT_FILE and "
        "TLS_KEY_FILE, or ALLOW_INSECURE=true if a proxy or mesh in front terminates TLS"
    )


class ServerTLS:
    """gRPC server credentials from PEM files, re-read when the files change."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self._paths = tuple(Path(p) for p in (cert_file, key_file, client_ca_file) if p)
        self._cert = Path(cert_file)
        self._key = Path(key_file)
        self._client_ca = Path(client_ca_file) if client_ca_file else None
        self._lock = threading.Lock()
        self._unusable: _Signature | None = None
        self.reloads = 0
        try:
            self._signature = self._stat()
            self._config = self._read()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError({"TLS_CERT_FILE": f"cannot use the TLS files: {exc}"}) from exc

    @property
    def mutual(self) -> bool:
        """True when clients must present a certificate signed by the client CA."""
        return self._client_ca is not None

    def _stat(self) -> _Signature:
        out = []
        for path in self._paths:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def _read(self) -> grpc.ServerCertificateConfiguration:
        # The stdlib loader fails when the key does not belong to the certificate or
        # a file is not PEM; gRPC would only fail later, at a handshake.
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        check.load_cert_chain(self._cert, self._key)
        root: bytes | None = None
        if self._client_ca is not None:
            check.load_verify_locations(cafile=self._client_ca)
            root = self._client_ca.read_bytes()
        return grpc.ssl_server_certificate_configuration(
            [(self._key.read_bytes(), self._cert.read_bytes())], root_certificates=root
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC (on its own thread) for each new connection: a new
        configuration when the files changed, else None (keep the current one)."""
        with self._lock:
            try:
                signature = self._stat()
                if signature in (self._signature, self._unusable):
                    return None
                config = self._read()
            except Exception as exc:
                # Logged once per state of the files, not on every connection.
                self._unusable = signature if "signature" in locals() else None
                log.warning("TLS files changed but cannot be used, keeping the previous: %s", exc)
                return None
            self._signature = signature
            self._config = config
            self.reloads += 1
        log.info("TLS certificate reloaded from %s", self._cert)
        return config

    def credentials(self) -> grpc.ServerCredentials:
        # grpc-stubs say the fetcher must return a configuration; gRPC documents
        # None as "keep the current one".
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._config, fetch, require_client_authentication=self.mutual
        )


def server_tls(settings: Settings) -> ServerTLS | None:
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None
    return ServerTLS(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
