"""The AQuA endpoints: token, submit, get, cancel, last stateful job, file download."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qs

from . import errors, idempotency
from .byteranges import UnsatisfiableRangeError, parse_range
from .errors import AquaError, general_error
from .files import FileStore, FileStoreClosedError, FileTooLargeError
from .idempotency import IdempotencyStore
from .replies import GZIP_THRESHOLD, FileBody, Reply, accepts_gzip, json_reply
from .results import FileContent
from .routing import RouteMatch
from .state import AquaState
from .submit import parse_submit

#: How a submit past the tenant's concurrent-job limit is refused (see ``AquaSimulator``).
JOB_LIMIT_ANSWERS = ("body", "429")

_UNAUTHORIZED = {"message": "Authentication error"}
# Zuora's OAuth endpoint forbids caching token answers, like any OAuth server.
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_XML_CONTENT_TYPE = "application/xml;charset=UTF-8"


def _no_wait() -> None:
    """The default ``hold``: answer at once."""


@dataclass(frozen=True)
class Incoming:
    """A request as the endpoints see it: body already un-gzipped."""

    method: str
    path: str
    headers: Message
    body: bytes


class AquaApi:
    """Answers AQuA requests from :class:`AquaState`, result files from a :class:`FileStore`.

    ``errors_as_200`` answers the job-id refusals (90002, 90003) with HTTP 200 instead of
    404/400, since Zuora is known to send AQuA errors either way. ``file_transport_gzip``
    gzips file downloads over 1000 bytes for clients that accept it.
    """

    def __init__(
        self,
        state: AquaState,
        errors_as_200: bool,
        files: FileStore,
        idempotency_keys: IdempotencyStore,
        file_transport_gzip: bool = False,
        job_limit_answer: str = "body",
    ) -> None:
        self._state = state
        self._errors_as_200 = errors_as_200
        self._files = files
        self._idempotency_keys = idempotency_keys
        self._file_transport_gzip = file_transport_gzip
        self._job_limit_answer = job_limit_answer

    def handle(self, match: RouteMatch, request: Incoming, hold: Callable[[], None] = _no_wait) -> Reply:
        """Answer a request on a known route; everything but the token needs a bearer token.

        ``hold`` runs once a submit is processed and before its answer is final: while it
        runs, the job exists and its ``Idempotency-Key`` is still in flight.
        """
        if match.route == "token":
            return self._token(request)
        if not self._authorized(request):
            return json_reply(401, _UNAUTHORIZED)
        params = match.params
        if match.route == "submit":
            return self._submit(request, hold)
        if match.route == "get_job":
            return self._job_lookup(lambda: self._state.job(params["job_id"]))
        if match.route == "delete_job":
            return self._cancel(params["job_id"])
        if match.route == "stateful_last_job":
            return self._job_lookup(lambda: self._state.last_completed(params["partner"], params["project"]))
        return self._file(params["file_id"], request)

    def _authorized(self, request: Incoming) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        return scheme.lower() == "bearer" and bool(token) and self._state.token_valid(token)

    def _token(self, request: Incoming) -> Reply:
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        client_id = form.get("client_id", [None])[0]
        client_secret = form.get("client_secret", [None])[0]
        if client_id is None and client_secret is None:
            client_id, client_secret = _basic_credentials(request.headers.get("Authorization", ""))
        if client_id is None or client_secret is None or not self._state.credentials_match(client_id, client_secret):
            return json_reply(
                401, {"error": "invalid_client", "error_description": "Bad client credentials"}, _TOKEN_HEADERS
            )
        grant_type = form.get("grant_type", [""])[0]
        if grant_type != "client_credentials":
            return json_reply(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Unsupported grant type: {grant_type or '(missing)'}",
                },
                _TOKEN_HEADERS,
            )
        return json_reply(200, self._state.issue_token(), _TOKEN_HEADERS)

    def _submit(self, request: Incoming, hold: Callable[[], None]) -> Reply:
        key = request.headers.get(idempotency.HEADER)
        if key is None:
            reply = self._create_job(request.body)
            hold()
            return reply
        refusal = idempotency.key_error(key)
        if refusal is not None:
            return refusal
        saved = self._idempotency_keys.claim(key, idempotency.fingerprint(request.body))
        if saved is not None:
            hold()
            return saved
        try:
            reply = self._create_job(request.body)
            hold()
        except BaseException:
            self._idempotency_keys.release(key)
            raise
        if reply.status == 429:
            self._idempotency_keys.release(key)  # refused before the key was looked at
        else:
            self._idempotency_keys.save(key, reply)
        return reply

    def _create_job(self, body: bytes) -> Reply:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return json_reply(
                400, general_error(errors.GENERAL_MALFORMED_REQUEST, f"The request body is not valid JSON: {exc}")
            )
        try:
            return json_reply(200, self._state.submit(parse_submit(payload)))
        except AquaError as exc:
            if exc.code == errors.CONCURRENT_JOB_LIMIT and self._job_limit_answer == "429":
                return json_reply(429, exc.body(), {"Retry-After": "1"})
            return json_reply(200, exc.body())

    def _job_lookup(self, lookup: Callable[[], dict[str, object]]) -> Reply:
        try:
            return json_reply(200, lookup())
        except KeyError:
            return json_reply(200 if self._errors_as_200 else 404, errors.invalid_job_id().body())

    def _cancel(self, job_id: str) -> Reply:
        try:
            return json_reply(200, self._state.cancel(job_id))
        except AquaError as exc:
            return json_reply(200 if self._errors_as_200 else 400, exc.body())

    def _file(self, file_id: str, request: Incoming) -> Reply:
        try:
            content = self._state.file_content(file_id)
        except KeyError:
            return json_reply(404, general_error(errors.GENERAL_NOT_FOUND, f"File {file_id} not found."))
        try:
            return self._file_reply(file_id, content, request)
        except FileTooLargeError as exc:
            body = f"<security:max-object-size>{exc.cap_megabytes}MB</security:max-object-size>"
            return Reply(403, body.encode("utf-8"), _XML_CONTENT_TYPE)
        except FileStoreClosedError:
            return json_reply(503, general_error(errors.GENERAL_INTERNAL_ERROR, "The simulator is stopping."))

    def _file_reply(self, file_id: str, content: FileContent, request: Incoming) -> Reply:
        stored = self._files.stored(file_id, content)
        headers = {"Content-Disposition": f'attachment; filename="{content.filename}"'}
        if self._file_transport_gzip:
            headers["Vary"] = "Accept-Encoding"
            if stored.size > GZIP_THRESHOLD and accepts_gzip(request.headers.get("Accept-Encoding", "")):
                # Transport compression of the whole file: no byte ranges of it.
                encoded = self._files.transport_gzip(file_id, stored)
                headers["Content-Encoding"] = "gzip"
                return Reply(200, b"", content.content_type, headers, file=FileBody(encoded.path, 0, encoded.size))
        try:
            span = parse_range(request.headers.get("Range"), stored.size)
        except UnsatisfiableRangeError:
            headers["Content-Range"] = f"bytes */{stored.size}"
            message = f"The requested range is not satisfiable: the file has {stored.size} bytes."
            return json_reply(416, general_error(errors.GENERAL_INVALID_VALUE, message), headers)
        headers["Accept-Ranges"] = "bytes"
        if span is None:
            return Reply(200, b"", content.content_type, headers, file=FileBody(stored.path, 0, stored.size))
        headers["Content-Range"] = span.content_range
        return Reply(206, b"", content.content_type, headers, file=FileBody(stored.path, span.start, span.length))


def _basic_credentials(authorization: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, client_secret = decoded.partition(":")
    return (client_id, client_secret) if sep else (None, None)
