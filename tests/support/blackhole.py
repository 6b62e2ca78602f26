"""A peer that vanished, made on loopback without privileges: a classic BPF socket filter that
drops every packet arriving at one socket. TCP runs the socket's filter before it looks at a
segment, so the socket's kernel neither sees nor acknowledges anything more from its peer (data,
keepalive probes, a RST), exactly as if the network between them had gone; what it sends still
leaves. Attach it to one end and, to the other end, that end is dead."""
from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K with k = 0: keep 0 bytes


def drop_incoming(sock) -> None:
    """From now on `sock` (a socket, or uvloop's stand-in for one) receives nothing."""
    program = ctypes.create_string_buffer(_DROP_ALL)
    # struct sock_fprog: the instruction count and a pointer to them (the kernel copies both)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("@HP", 1, ctypes.addressof(program)))
