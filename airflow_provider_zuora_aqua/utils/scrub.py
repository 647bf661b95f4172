"""
Remove the client secret and tokens from server-derived text.

A hostile or careless server can echo what it received: the form body of the token exchange
(``client_secret=p%40ss...``, URL-encoded), the ``Authorization`` header, or a token in a job
field. Airflow's secrets masker covers logs of the process that registered a secret, but not an
exception raised elsewhere, nor a trigger event, which Airflow stores. So every error and every
JSON answer the hook returns passes through a :class:`Scrubber` first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.exceptions import AquaError

#: What a secret is replaced with (as Airflow's masker does).
MASK = "***"


def secret_forms(secret: str) -> set[str]:
    """The ways ``secret`` can appear in text: raw, URL-encoded (both styles), repr and JSON escaped."""
    forms = {
        secret,
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    forms.discard("")
    return forms


class Scrubber:
    """
    Replace every form of the given secrets (case-insensitively: percent-encoding may use
    either case) with :data:`MASK`.

    :param secrets: the client secret and the tokens in use; empty values are ignored.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms = sorted({form for secret in secrets if secret for form in secret_forms(secret)}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, forms)), re.IGNORECASE) if forms else None

    def text(self, value: str | None) -> str | None:
        if value is None or self._pattern is None:
            return value
        return self._pattern.sub(MASK, value)

    def json(self, value: Any) -> Any:
        """A copy of a JSON value with every string (keys too) scrubbed; no recursion, whatever the nesting."""
        if self._pattern is None:
            return value
        root: list[Any] = [None]
        pending: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while pending:
            source, target, slot = pending.pop()
            if isinstance(source, str):
                target[slot] = self.text(source)
            elif isinstance(source, dict):
                mapping: dict[Any, Any] = {}
                target[slot] = mapping
                for key, item in source.items():
                    clean_key = self.text(key) if isinstance(key, str) else key
                    mapping[clean_key] = None
                    pending.append((item, mapping, clean_key))
            elif isinstance(source, list):
                items: list[Any] = [None] * len(source)
                target[slot] = items
                pending.extend((item, items, index) for index, item in enumerate(source))
            else:
                target[slot] = source
        return root[0]

    def error(self, exc: AquaError) -> AquaError:
        """Scrub an error in place (message, codes, job JSON) and return it, to be raised again."""
        exc.message = self.text(exc.message) or ""
        exc.error_code = self.text(exc.error_code)
        exc.request_id = self.text(exc.request_id)
        job = getattr(exc, "job", None)
        if job is not None:
            exc.job = self.json(job)  # type: ignore[attr-defined]
        exc.args = (exc._describe(),)
        return exc
