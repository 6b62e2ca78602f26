"""TLS termination for the client listener, with certificate reload that drops no connection.

One ssl.SSLContext lives for the whole process and is handed to the listener once. Every new
connection makes its SSL object from the context as it is at accept time, and an established
connection keeps the certificate it was made with. So a reload loads the new chain into that
same context: new handshakes present the new certificate, existing sessions are untouched.

A reload first loads the pair into a scratch context: a key that does not match its
certificate (a half-copied renewal) is refused there, and the live context keeps serving the
old pair. Replace the files atomically (write, then rename) so both reads see the same pair.
"""
from __future__ import annotations

import logging
import ssl

from switchboard.config import ConfigError, TlsConfig

log = logging.getLogger(__name__)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class ServerTls:
    def __init__(self, config: TlsConfig) -> None:
        self._cert = config.cert
        self._key = config.key
        self.min_version = _VERSIONS[config.min_version]
        self.context = self._new_context()
        self.reloads = 0
        try:
            self.context.load_cert_chain(self._cert, self._key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.cert/tls.key: cannot load {self._cert} with {self._key}: "
                              f"{exc}") from None

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.set_alpn_protocols(["http/1.1"])
        return context

    def reload(self) -> None:
        """Swap in the chain and key now on disk for new handshakes; raises (and keeps the old
        pair) when they do not load."""
        self._new_context().load_cert_chain(self._cert, self._key)
        self.context.load_cert_chain(self._cert, self._key)
        self.reloads += 1
        log.info("tls certificate reloaded from %s", self._cert)
