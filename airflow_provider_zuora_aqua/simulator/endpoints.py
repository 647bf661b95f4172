"""The AQuA endpoints: token, submit, get, cancel, last stateful job, file download."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qs

from . import errors, results
from .errors import AquaError, general_error
from .replies import Reply, json_reply
from .routing import RouteMatch
from .state import AquaState
from .submit import parse_submit

_UNAUTHORIZED = {"message": "Authentication error"}
# Zuora's OAuth endpoint forbids caching token answers, like any OAuth server.
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Incoming:
    """A request as the endpoints see it: body already un-gzipped."""

    method: str
    path: str
    headers: Message
    body: bytes


class AquaApi:
    """Answers AQuA requests from :class:`AquaState`.

    ``errors_as_200`` answers the job-id refusals (90002, 90003) with HTTP 200 instead of
    404/400, since Zuora is known to send AQuA errors either way.
    """

    def __init__(self, state: AquaState, errors_as_200: bool) -> None:
        self._state = state
        self._errors_as_200 = errors_as_200

    def handle(self, match: RouteMatch, request: Incoming) -> Reply:
        """Answer a request on a known route; everything but the token needs a bearer token."""
        if match.route == "token":
            return self._token(request)
        if not self._authorized(request):
            return json_reply(401, _UNAUTHORIZED)
        params = match.params
        if match.route == "submit":
            return self._submit(request)
        if match.route == "get_job":
            return self._job_lookup(lambda: self._state.job(params["job_id"]))
        if match.route == "delete_job":
            return self._cancel(params["job_id"])
        if match.route == "stateful_last_job":
            return self._job_lookup(lambda: self._state.last_completed(params["partner"], params["project"]))
        return self._file(params["file_id"])

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

    def _submit(self, request: Incoming) -> Reply:
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            return json_reply(
                400, general_error(errors.GENERAL_MALFORMED_REQUEST, f"The request body is not valid JSON: {exc}")
            )
        try:
            return json_reply(200, self._state.submit(parse_submit(payload)))
        except AquaError as exc:
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

    def _file(self, file_id: str) -> Reply:
        try:
            source = self._state.file_source(file_id)
        except KeyError:
            return json_reply(404, general_error(errors.GENERAL_NOT_FOUND, f"File {file_id} not found."))
        data = results.csv_bytes(
            source.spec.parsed, source.record_count, source.use_query_labels, source.null_replacement
        )
        result = results.package(source.spec.name, data, source.file_format)
        disposition = {"Content-Disposition": f'attachment; filename="{result.filename}"'}
        return Reply(200, result.content, result.content_type, disposition)


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
