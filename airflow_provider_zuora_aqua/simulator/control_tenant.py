"""The tenant's ``/_simulator/`` routes: its clock and its tables, for a simulator run as a process.

Rows travel as JSON objects; ``UpdatedDate`` and ``CreatedDate`` as ISO 8601 strings with an
offset (answers use ``2024-01-01T00:00:00Z``). Other fields keep their JSON type.

* ``GET /_simulator/tenant``: ``{"now", "frozen", "skew", "time_zone", "index_delay",
  "denied_objects", "tables": {name: live rows}}`` (``skew``: seconds from the real clock, null
  while the clock is set).
* ``POST /_simulator/tenant/clock``: ``{"now": "<ISO 8601>", "running": false}`` sets the clock
  (frozen unless ``running``); ``{"now": null}`` follows the real clock again; ``{"advance":
  <seconds>}`` moves it on; ``{"skew": <seconds>}`` follows the real clock that far ahead
  (negative: behind). Answers ``{"now", "frozen"}``.
* ``POST /_simulator/tenant/denied``: ``{"objects": ["Invoice", ...]}`` sets the objects the API
  user may not read (``[]``: none); a query touching one is dropped from its job (90018).
  Answers ``{"denied_objects"}``.
* ``POST /_simulator/tables/{table}``: create an empty table.
* ``GET /_simulator/tables/{table}/rows[?deleted=true][&visible=true]``: the rows
  (:meth:`.tenant.Tenant.rows`), a JSON list.
* ``POST /_simulator/tables/{table}/rows``: ``{"rows": [{...}, ...], "index_delay": s, "late_by":
  s}`` (or ``"row": {...}``) inserts; answers the stored rows.
* ``PATCH /_simulator/tables/{table}/rows/{id}``: ``{"changes": {...}, "index_delay": s,
  "stamp": true, "late_by": s}`` updates; answers the row.
* ``DELETE /_simulator/tables/{table}/rows/{id}``: ``{"index_delay": s, "late_by": s}``
  (optional) deletes; answers the row's last fields.

``late_by`` makes a write a late commit: stamped that many seconds ago, visible ``index_delay``
seconds from now (see :mod:`.tenant`).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from .replies import Reply, json_reply
from .tenant import iso_utc, row_to_json

if TYPE_CHECKING:
    from .server import AquaSimulator

_TABLE = re.compile(r"/_simulator/tables/(?P<table>[^/]+)(?P<rows>/rows(?:/(?P<row_id>[^/]+))?)?")
_TRUE = ("1", "true", "yes")


def body(raw: bytes) -> dict[str, Any]:
    """A control request's JSON object body (empty: ``{}``); ValueError otherwise."""
    payload = json.loads(raw or b"{}")
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


def _known(settings: dict[str, Any], *names: str) -> dict[str, Any]:
    unknown = set(settings) - set(names)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    return settings


def _delay(settings: dict[str, Any]) -> float | None:
    delay = settings.get("index_delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))):
        raise ValueError("'index_delay' must be a number of seconds")
    return delay


def _late_by(settings: dict[str, Any]) -> float:
    late_by = settings.get("late_by", 0)
    if isinstance(late_by, bool) or not isinstance(late_by, (int, float)):
        raise ValueError("'late_by' must be a number of seconds")
    return late_by


def handle(simulator: AquaSimulator, method: str, path: str, query: str, raw_body: bytes) -> Reply | None:
    """Answer a tenant control request; None if ``path`` is not one of these routes.

    Raises KeyError (unknown table or row) and ValueError/TypeError (bad request) for the
    caller to answer.
    """
    tenant = simulator.tenant
    clock = tenant.clock
    if (method, path) == ("GET", "/_simulator/tenant"):
        return json_reply(
            200,
            {
                "now": iso_utc(clock.now()),
                "frozen": clock.frozen,
                "skew": clock.skew_seconds,
                "time_zone": tenant.zone.key,
                "index_delay": tenant.index_delay,
                "denied_objects": tenant.denied_objects,
                "tables": tenant.tables(),
            },
        )
    if (method, path) == ("POST", "/_simulator/tenant/clock"):
        settings = _known(body(raw_body), "now", "running", "advance", "skew")
        if "skew" in settings:
            clock.skew(settings["skew"])
        elif "advance" in settings:
            clock.advance(float(settings["advance"]))
        elif settings.get("now") is None:
            clock.reset()
        else:
            clock.set(settings["now"], running=bool(settings.get("running", False)))
        return json_reply(200, {"now": iso_utc(clock.now()), "frozen": clock.frozen})
    if (method, path) == ("POST", "/_simulator/tenant/denied"):
        objects = _known(body(raw_body), "objects").get("objects")
        if not isinstance(objects, list) or not all(isinstance(name, str) and name.isidentifier() for name in objects):
            raise ValueError("'objects' must be a list of object names such as 'Invoice'")
        tenant.allow()
        tenant.deny(*objects)
        return json_reply(200, {"denied_objects": tenant.denied_objects})
    found = _TABLE.fullmatch(path)
    if found is None:
        return None
    table, row_id = unquote(found.group("table")), found.group("row_id")
    row_id = None if row_id is None else unquote(row_id)
    if found.group("rows") is None:
        if method != "POST":
            return None
        tenant.create_table(table)
        return json_reply(200, {"created": table})
    if row_id is None and method == "GET":
        flags = {name: values[-1].lower() in _TRUE for name, values in parse_qs(query).items()}
        current = tenant.rows(table, deleted=flags.get("deleted", False), visible=flags.get("visible", False))
        return json_reply(200, [row_to_json(row) for row in current])
    if row_id is None and method == "POST":
        settings = _known(body(raw_body), "rows", "row", "index_delay", "late_by")
        rows: object = settings["rows"] if "rows" in settings else [settings.get("row")]
        if not isinstance(rows, list):
            raise ValueError("'rows' must be a list of row objects")
        stored = tenant.insert_many(table, rows, _delay(settings), _late_by(settings))
        return json_reply(200, [row_to_json(row) for row in stored])
    if row_id is not None and method == "PATCH":
        settings = _known(body(raw_body), "changes", "index_delay", "stamp", "late_by")
        changes = settings.get("changes")
        if not isinstance(changes, dict):
            raise ValueError("'changes' must be an object of fields")
        stamp = bool(settings.get("stamp", True))
        row = tenant.update(table, row_id, changes, _delay(settings), stamp=stamp, late_by=_late_by(settings))
        return json_reply(200, row_to_json(row))
    if row_id is not None and method == "DELETE":
        settings = _known(body(raw_body), "index_delay", "late_by")
        return json_reply(200, row_to_json(tenant.delete(table, row_id, _delay(settings), _late_by(settings))))
    return None
