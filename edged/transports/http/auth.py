"""Who may ask: peer credentials on the Unix socket, a bearer API key on TCP."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from edged.ports import ApiKeyPort
from edged.transports.http.errors import Response, error_response
from edged.transports.http.request import HttpRequest
from edged.transports.peer import peer_of_socket, plaintext_allowed

# Paths any connected peer may read on the Unix socket (the socket's file mode already limits who connects).
OPEN_ON_UNIX = frozenset({"/health", "/metrics"})


@dataclass(frozen=True)
class Caller:
    peer: str             # for logs and per-peer rate limits
    client: str | None    # the API key's label on TCP


CALLER = "caller"  # HttpRequest.state key


class Access:
    def __init__(self, plaintext_uids: set[int], plaintext_gids: set[int], keys: ApiKeyPort) -> None:
        self._uids = plaintext_uids
        self._gids = plaintext_gids
        self.keys = keys

    def check(self, request: HttpRequest) -> Caller | Response:
        """The caller, or the 401/403 response to send instead."""
        sock = request.sock
        if sock is None:
            return error_response("cancelled", "the client went away")
        if sock.family == socket.AF_UNIX:
            peer = peer_of_socket(sock)
            if request.path not in OPEN_ON_UNIX and not plaintext_allowed(peer, self._uids, self._gids):
                return error_response("permission_denied",
                                      f"uid {peer.uid} may not send requests on this socket; add it to "
                                      "socket.plaintext_uids (or its group to socket.plaintext_gids)")
            return Caller(peer=str(peer), client=None)
        host, port = (request.peername or ("?", 0))[:2]
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error_response("unauthorized", "send an API key as `Authorization: Bearer <key>`; make one "
                                                  "on the device with `edged keys api-key new LABEL`",
                                  {"WWW-Authenticate": 'Bearer realm="edged"'})
        label = self.keys.check(token.strip())
        if label is None:
            return error_response("unauthorized", "unknown or revoked API key",
                                  {"WWW-Authenticate": 'Bearer realm="edged", error="invalid_token"'})
        return Caller(peer=f"tcp:{host}:{port}", client=label)
