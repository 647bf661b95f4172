"""The ``/_simulator/`` control surface, for driving a simulator run as a separate process.

No authentication, never faulted, never recorded:

* ``GET /_simulator/requests``: the request log, a JSON list.
* ``DELETE /_simulator/requests``: clear the log.
* ``POST /_simulator/faults``: ``{"route", "kind", "count", "rate", "retry_after", "delay"}``.
* ``DELETE /_simulator/faults``: remove every fault.
* ``GET /_simulator/jobs``: the JSON of every job, a list in submit order.
* ``POST /_simulator/jobs/{id}/finish``: ``{"status", "message"}``, answers the job JSON.
* ``POST /_simulator/files/purge``: ``{"job_id": ...}`` (optional; default every job): their
  result files answer 404 from now on. Answers ``{"purged": <number of file ids>}``.
* ``POST /_simulator/tokens/expire``: every token issued so far is refused from now on.
* ``GET /_simulator/tokens``: ``{"tokens_issued": n}``.
* The tenant's clock and tables: see :mod:`.control_tenant`.

Bad requests answer 400, unknown jobs, tables or rows 404, each with ``{"error": ...}``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from . import control_tenant
from .control_tenant import body as _body
from .replies import Reply, json_reply

if TYPE_CHECKING:
    from .server import AquaSimulator

_FINISH = re.compile(r"/_simulator/jobs/(?P<job_id>[^/]+)/finish/?")
_FAULT_SETTINGS = ("route", "kind", "count", "rate", "retry_after", "delay")


def handle(simulator: AquaSimulator, method: str, path: str, raw_body: bytes, query: str = "") -> Reply:
    """Answer a control request (``query``: the URL's query string)."""
    endpoint = (method, path.rstrip("/"))
    try:
        tenant_reply = control_tenant.handle(simulator, method, path.rstrip("/"), query, raw_body)
    except KeyError as exc:
        return json_reply(404, {"error": f"unknown table or row: {exc.args[0]}"})
    except (TypeError, ValueError) as exc:
        return json_reply(400, {"error": str(exc)})
    if tenant_reply is not None:
        return tenant_reply
    try:
        if endpoint == ("GET", "/_simulator/requests"):
            return json_reply(200, [dataclasses.asdict(entry) for entry in simulator.requests])
        if endpoint == ("DELETE", "/_simulator/requests"):
            simulator.clear_requests()
            return json_reply(200, {"cleared": True})
        if endpoint == ("POST", "/_simulator/faults"):
            settings = _body(raw_body)
            unknown = set(settings) - set(_FAULT_SETTINGS)
            if unknown:
                raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
            route, kind = settings.pop("route", None), settings.pop("kind", None)
            if route is None or kind is None:
                raise ValueError("'route' and 'kind' are required")
            simulator.add_fault(route, kind, **settings)
            return json_reply(200, {"added": True})
        if endpoint == ("DELETE", "/_simulator/faults"):
            simulator.clear_faults()
            return json_reply(200, {"cleared": True})
        if endpoint == ("POST", "/_simulator/tokens/expire"):
            return json_reply(200, {"expired": simulator.expire_tokens()})
        if endpoint == ("GET", "/_simulator/tokens"):
            return json_reply(200, {"tokens_issued": simulator.tokens_issued})
        if endpoint == ("GET", "/_simulator/jobs"):
            return json_reply(200, simulator.jobs())
        if endpoint == ("POST", "/_simulator/files/purge"):
            settings = _body(raw_body)
            unknown = set(settings) - {"job_id"}
            if unknown:
                raise ValueError(f"unknown purge settings: {', '.join(sorted(unknown))}")
            job_id = settings.get("job_id")
            if job_id is not None and not isinstance(job_id, str):
                raise ValueError("'job_id' must be a string")
            return json_reply(200, {"purged": simulator.purge_files(job_id)})
        finish = _FINISH.fullmatch(path)
        if method == "POST" and finish:
            settings = _body(raw_body)
            job_id = finish.group("job_id")
            simulator.finish_job(job_id, settings.get("status", ""), settings.get("message", ""))
            return json_reply(200, simulator.get_job(job_id))
    except KeyError as exc:
        return json_reply(404, {"error": f"unknown job {exc.args[0]}"})
    except (TypeError, ValueError) as exc:
        return json_reply(400, {"error": str(exc)})
    return json_reply(404, {"error": f"no control endpoint {method} {path}"})
