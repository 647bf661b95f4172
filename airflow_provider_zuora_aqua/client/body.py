"""
Reading an answer's body within bounds: a size cap on the raw and the decoded bytes, a
deadline checked at every chunk, and ``Content-Encoding`` (gzip, deflate) decoded by the
provider in pieces of bounded size, whatever the compression ratio.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Mapping
from typing import cast

from airflow_provider_zuora_aqua.client.answers import REQUEST_ID_HEADER, short_text
from airflow_provider_zuora_aqua.exceptions import AquaInvalidAnswerError, AquaTransportError

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
        try:
            self._decoder = BodyDecoder(headers.get("Content-Encoding"))
        except UnsupportedEncodingError as exc:
            raise self._invalid(str(exc)) from None

    def feed(self, chunk: bytes) -> None:
        """Add raw bytes from the connection."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise AquaTransportError(f"{self._what}: the answer did not arrive in time", request_sent=True)
        self._raw += len(chunk)
        if self._raw > self._limit:
            raise self._too_large()
        try:
            for piece in self._decoder.decode(chunk):
                self._keep(piece)
        except CorruptEncodingError as exc:
            raise self._invalid(str(exc)) from None

    def finish(self) -> bytes:
        """The decoded body; a compressed body that ended early is refused."""
        try:
            self._decoder.finish()
        except CorruptEncodingError as exc:
            raise self._invalid(str(exc)) from None
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
#: Largest piece of decoded data a :class:`BodyDecoder` hands over at once, whatever the ratio.
DECODED_PIECE_BYTES = 1024 * 1024


class UnsupportedEncodingError(Exception):
    """A ``Content-Encoding`` this client did not ask for (the message says which)."""


class CorruptEncodingError(Exception):
    """A body whose ``Content-Encoding`` cannot be decoded: corrupt, or cut short."""


class BodyDecoder:
    """
    Decode the ``Content-Encoding`` (gzip, deflate; identity passes through) of a body read
    raw, in pieces of at most ``piece_bytes``: memory stays bounded whatever the compression
    ratio, and whatever the HTTP library would have done (urllib3 decodes a read in one go).

    :raises UnsupportedEncodingError: for any other encoding.
    """

    def __init__(self, content_encoding: str | None, *, piece_bytes: int = DECODED_PIECE_BYTES) -> None:
        self._wbits = _decoder_wbits(content_encoding)
        if self._wbits == _UNSUPPORTED:
            raise UnsupportedEncodingError(
                f"its Content-Encoding {short_text(content_encoding)!r} is not one this client asked for"
            )
        self._piece = piece_bytes
        self._inflate = None if self._wbits is None else zlib.decompressobj(self._wbits)
        self._pending = False

    def decode(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next raw ``chunk``."""
        if self._inflate is None:
            if chunk:
                yield chunk
            return
        self._pending = self._pending or bool(chunk)
        try:
            while chunk:
                piece = self._inflate.decompress(chunk, self._piece)
                if piece:
                    yield piece
                if self._inflate.eof:  # gzip allows several members one after the other
                    chunk = self._inflate.unused_data
                    self._pending = bool(chunk)
                    if chunk:
                        self._inflate = zlib.decompressobj(cast(int, self._wbits))
                else:
                    chunk = self._inflate.unconsumed_tail
        except zlib.error:
            raise CorruptEncodingError("its compressed body is corrupt") from None

    def finish(self) -> None:
        """The body ended: a compressed body must have ended with its stream."""
        if self._inflate is not None and self._pending:
            raise CorruptEncodingError("its compressed body is truncated")


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
