"""
Reading a response body with at most one read of the socket, on every urllib3 we accept.

A result file is read in pieces of "whatever arrived, up to N bytes": a read that waited for a
full N bytes would let a server drip a file under the read timeout, past the throughput floor of
:class:`~.downloads.ThroughputFloor`. urllib3 2.1+ has ``HTTPResponse.read1`` for that; urllib3
2.0.x, which users of Zuora's own ``zuora-sdk`` get (it caps urllib3 < 2.1), has not.
"""

from __future__ import annotations

import urllib3.exceptions
import urllib3.response

#: Whether this urllib3 reads a body piece by piece itself (2.1+).
NATIVE_READ1 = hasattr(urllib3.response.HTTPResponse, "read1")


def read1(response: urllib3.response.HTTPResponse, amt: int) -> bytes:
    """
    At most ``amt`` raw (not decoded) bytes of the body, from at most one read of the socket;
    ``b""`` at its end. A body that ends before its ``Content-Length`` raises urllib3's
    ``ProtocolError``, and a socket timeout its ``ReadTimeoutError``, as urllib3 2.1+ does.
    """
    if NATIVE_READ1:
        return response.read1(amt, decode_content=False)
    return _read1_urllib3_20(response, amt)


def _read1_urllib3_20(response: urllib3.response.HTTPResponse, amt: int) -> bytes:
    """
    What urllib3 2.1's ``read1(amt, decode_content=False)`` does, on urllib3 2.0.x: one
    ``read1`` of the ``http.client`` response underneath (which undoes chunked transfer
    encoding), inside urllib3's own error mapping and with its ``Content-Length`` bookkeeping.
    Private urllib3 names, of a release line that no longer changes.
    """
    fp = response._fp
    if fp is None:
        return b""
    with response._error_catcher():
        data = b"" if getattr(fp, "closed", False) else fp.read1(amt)
        if not data:
            fp.close()  # http.client does not always close itself at the end: the connection goes back to the pool
            remaining = response.length_remaining
            if response.enforce_content_length and remaining not in (None, 0):
                raise urllib3.exceptions.IncompleteRead(response._fp_bytes_read, remaining)
    response._fp_bytes_read += len(data)
    if response.length_remaining is not None:
        response.length_remaining -= len(data)
    return data
