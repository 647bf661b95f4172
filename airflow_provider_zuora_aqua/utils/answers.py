"""
Read an answer body within bounds, for the sync and the async client alike.

An AQuA answer (job JSON, token, error) is small: a body over :data:`MAX_ANSWER_BYTES`, before
or after gzip decoding, is refused instead of growing the worker's memory; gzip is decoded
with a bounded decompressor, so a small "gzip bomb" cannot expand. The body also has to
arrive before the exchange's wall-clock deadline. Transport-free: callers feed the raw chunks.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from typing import cast

from airflow_provider_zuora_aqua.exceptions import AquaInvalidAnswerError, AquaTransportError
from airflow_provider_zuora_aqua.utils.protocol import REQUEST_ID_HEADER, short_text

#: Largest answer accepted, raw or decoded. Job JSON of 50 queries is a few hundred kilobytes.
MAX_ANSWER_BYTES = 10 * 1024 * 1024
#: Size of the reads from the connection.
READ_CHUNK_BYTES = 64 * 1024


class AnswerReader:
    """
    Collect one answer's body: decode ``Content-Encoding`` (gzip, deflate), count raw and
    decoded bytes against ``limit``, and check the deadline at every chunk.

    :param status: HTTP status of the answer, for errors.
    :param headers: its headers (``Content-Encoding``, ``Zuora-Request-Id``).
    :param what: the call, for errors, e.g. ``"GET /v1/batch-query/jobs/..."``.
    :param deadline: ``time.monotonic()`` after which the answer is given up (None: no bound).
    :param limit: most bytes accepted, raw or decoded.
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        what: str,
        deadline: float | None,
        limit: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._status = status
        self._request_id = short_text(headers.get(REQUEST_ID_HEADER))
        self._what = what
        self._deadline = deadline
        self._limit = limit
        self._raw = 0
        self._parts: list[bytes] = []
        self._size = 0
        encoding = headers.get("Content-Encoding")
        self._wbits = _decoder_wbits(encoding)
        if self._wbits == _UNSUPPORTED:
            raise self._invalid(f"its Content-Encoding {short_text(encoding)!r} is not one this client asked for")
        self._decoder = None if self._wbits is None else zlib.decompressobj(self._wbits)

    def feed(self, chunk: bytes) -> None:
        """Add raw bytes from the connection."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise AquaTransportError(f"{self._what}: the answer did not arrive in time", request_sent=True)
        self._raw += len(chunk)
        if self._raw > self._limit:
            raise self._too_large()
        if self._decoder is None:
            self._keep(chunk)
            return
        try:
            while chunk:
                self._keep(self._decoder.decompress(chunk, self._limit - self._size + 1))
                if self._decoder.eof:  # gzip allows several members one after the other
                    chunk = self._decoder.unused_data
                    if chunk:
                        # Only an encoded answer has a decoder, so its window bits are set.
                        self._decoder = zlib.decompressobj(cast(int, self._wbits))
                else:
                    chunk = self._decoder.unconsumed_tail
        except zlib.error:
            raise self._invalid("its compressed body is corrupt") from None

    def finish(self) -> bytes:
        """The decoded body; a compressed body that ended early is refused."""
        if self._decoder is not None and self._raw and not self._decoder.eof:
            raise self._invalid("its compressed body is truncated")
        return b"".join(self._parts)

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise self._too_large()
        if data:
            self._parts.append(data)

    def _too_large(self) -> AquaInvalidAnswerError:
        return self._invalid(f"it is larger than {self._limit // (1024 * 1024)} MB, which no AQuA answer needs")

    def _invalid(self, why: str) -> AquaInvalidAnswerError:
        return AquaInvalidAnswerError(
            f"Zuora's answer to {self._what} was refused: {why}",
            status_code=self._status,
            request_id=self._request_id,
        )


_UNSUPPORTED = -1


def decode_prefix(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """At most ``limit`` decoded bytes of a body that may be cut short: for error messages only."""
    wbits = _decoder_wbits(content_encoding)
    if wbits is None or wbits == _UNSUPPORTED:
        return raw[:limit]
    try:
        return zlib.decompressobj(wbits).decompress(raw, limit)
    except zlib.error:
        return b""


def _decoder_wbits(content_encoding: str | None) -> int | None:
    """zlib ``wbits`` for the encoding: None for identity, :data:`_UNSUPPORTED` for one we do not decode."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return 16 + zlib.MAX_WBITS
    if codings == ["deflate"]:
        return 32 + zlib.MAX_WBITS  # zlib or gzip wrapped, told apart by its header
    return _UNSUPPORTED
