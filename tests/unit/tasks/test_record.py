"""Identifiers of a task try: Track-Id (64 characters) and Idempotency-Key (255 characters)."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.client.wire import validate_idempotency_key, validate_track_id
from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.tasks.record import task_idempotency_key, task_track_id
from tests.support.fakes import FakeTaskInstance


def test_the_key_names_the_try_and_differs_by_try_and_map_index():
    key = task_idempotency_key(FakeTaskInstance("export", try_number=3))
    assert key == "airflow-aqua-submit.dag.export.manual__2026-11-25T10-00-00+00-00.3"
    assert key != task_idempotency_key(FakeTaskInstance("export", try_number=4))
    assert key != task_idempotency_key(FakeTaskInstance("export", try_number=3, map_index=0))


def test_long_ids_are_cut_with_a_digest_that_keeps_them_apart():
    first, second = FakeTaskInstance("t" * 300), FakeTaskInstance("t" * 299 + "u")
    keys = [task_idempotency_key(first), task_idempotency_key(second)]
    assert all(len(key) == 255 and "~" in key for key in keys) and keys[0] != keys[1]
    assert validate_idempotency_key(keys[0]) == keys[0]
    assert validate_track_id(task_track_id(first)) == task_track_id(first)


@pytest.mark.parametrize("key", ["", " k", "k ", "k\n", "é", "k" * 256, None, 5])
def test_invalid_keys_are_refused_before_sending(key):
    with pytest.raises(AquaConfigurationError, match="Idempotency-Key"):
        validate_idempotency_key(key)
