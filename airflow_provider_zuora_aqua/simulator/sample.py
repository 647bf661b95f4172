"""A tenant that looks like Zuora out of the box: seeded Account and Subscription rows.

``python -m airflow_provider_zuora_aqua.simulator`` loads them unless told ``--no-sample-data``
(in-process: ``AquaSimulator(sample_data=True)``). Fields are named as Zuora's Account and
Subscription data sources name them (``AccountNumber``, ``BillCycleDay``, ``TermType``, ...), with
values of the same shapes: 32-hex ids, ``A00000042`` account numbers, ``A-S00000042`` subscription
numbers, Zuora's own status words (an Account is ``Canceled``, a Subscription ``Cancelled``).

Values come from ``random.Random(seed)``; times are relative to the tenant's clock when loaded:
``UpdatedDate`` spread over the last 28 days, so an ``UpdatedDate`` window exports real-looking
rows. A few late commits are included: rows stamped one to two and a half hours ago that the
export index shows only 10, 30 and 90 minutes after the start, as Zuora warns ("it might take a
long time for some transactions to be completed").
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from .tenant import Tenant, whole_second

ACCOUNTS = 240
SUBSCRIPTIONS = 360
SPREAD = timedelta(days=28)
#: (table, seconds stamped before the start, seconds after the start it becomes visible)
LATE_COMMITS = (("Account", 5400, 600), ("Subscription", 7200, 1800), ("Account", 9000, 5400))

_NAME_FIRST = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent", "Tyrell")
_NAME_SECOND = ("Labs", "Systems", "Foods", "Logistics", "Media", "Health", "Energy", "Partners", "Retail", "Cloud")
_NAME_SUFFIX = ("Inc.", "LLC", "GmbH", "Ltd", "S.A.", "Corp.")
_TERMS = ("Net 30", "Net 30", "Net 15", "Due Upon Receipt", "Net 60")


def load_sample(tenant: Tenant, seed: int | None = 0) -> None:
    """Insert the sample Account and Subscription rows, and the late commits, into ``tenant``."""
    rng = random.Random(seed)
    now = tenant.clock.now()
    accounts = [_account(rng, now, number) for number in range(1, ACCOUNTS + 1)]
    tenant.insert_many("Account", accounts, index_delay=0)
    subscriptions = [_subscription(rng, now, number, rng.choice(accounts)) for number in range(1, SUBSCRIPTIONS + 1)]
    tenant.insert_many("Subscription", subscriptions, index_delay=0)
    for table, late_by, visible_in in LATE_COMMITS:
        row = sample_row(table, rng, now, rng.choice(accounts))
        tenant.insert(table, row, index_delay=visible_in, late_by=late_by)


def sample_row(table: str, rng: random.Random, now: datetime, account: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new row for ``table`` without stamps (the write stamps it): realistic for Account and Subscription.

    A Subscription belongs to ``account`` (default: a new, unsaved one).
    """
    number = rng.randrange(100_000, 999_999)
    if table.lower() == "account":
        row = _account(rng, now, number)
    elif table.lower() == "subscription":
        row = _subscription(rng, now, number, account or _account(rng, now, number))
    else:
        row = {"Id": _zuora_id(rng)}
    row.pop("CreatedDate", None)
    row.pop("UpdatedDate", None)
    return row


def _zuora_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _stamps(rng: random.Random, now: datetime, created_before: timedelta) -> dict[str, datetime]:
    updated = whole_second(now - timedelta(seconds=rng.uniform(60, SPREAD.total_seconds())))
    created = whole_second(updated - timedelta(seconds=rng.uniform(0, created_before.total_seconds())))
    return {"CreatedDate": created, "UpdatedDate": updated}


def _account(rng: random.Random, now: datetime, number: int) -> dict[str, Any]:
    name = f"{rng.choice(_NAME_FIRST)} {rng.choice(_NAME_SECOND)} {rng.choice(_NAME_SUFFIX)}"
    return {
        "Id": _zuora_id(rng),
        "AccountNumber": f"A{number:08d}",
        "Name": name,
        "Status": rng.choices(("Active", "Draft", "Canceled"), weights=(85, 5, 10))[0],
        "Currency": rng.choices(("USD", "EUR", "GBP"), weights=(70, 20, 10))[0],
        "Balance": round(rng.choice((0.0, 0.0, rng.uniform(10, 5000))), 2),
        "CreditBalance": 0.0,
        "AutoPay": rng.random() < 0.6,
        "BillCycleDay": rng.randint(1, 28),
        "PaymentTerm": rng.choice(_TERMS),
        "Batch": f"Batch{rng.randint(1, 5)}",
        "InvoiceDeliveryPrefsEmail": True,
        **_stamps(rng, now, timedelta(days=400)),
    }


def _subscription(rng: random.Random, now: datetime, number: int, account: dict[str, Any]) -> dict[str, Any]:
    start = (now - timedelta(days=rng.randint(30, 700))).date()
    evergreen = rng.random() < 0.2
    term_months = rng.choice((12, 12, 24, 36))
    end = None if evergreen else _add_months(start, term_months)
    status = rng.choices(("Active", "Cancelled", "Expired", "Suspended"), weights=(75, 12, 10, 3))[0]
    return {
        "Id": _zuora_id(rng),
        "Name": f"A-S{number:08d}",
        "AccountId": account["Id"],
        "Status": status,
        "Version": rng.randint(1, 4),
        "TermType": "EVERGREEN" if evergreen else "TERMED",
        "InitialTerm": 0 if evergreen else term_months,
        "RenewalTerm": 0 if evergreen else 12,
        "AutoRenew": not evergreen and rng.random() < 0.7,
        "ContractEffectiveDate": start,
        "SubscriptionStartDate": start,
        "SubscriptionEndDate": end,
        "TermStartDate": start,
        "TermEndDate": end,
        **_stamps(rng, now, timedelta(days=60)),
    }


def _add_months(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    return date(day.year + year, month + 1, min(day.day, 28))
