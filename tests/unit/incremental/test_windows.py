"""Half-open windows in whole UTC seconds: parsing bounds, tiling, gaps, the watermark."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.incremental import windows
from airflow_provider_zuora_aqua.incremental.windows import (
    MAX_PLANNED_WINDOWS,
    ONE_SECOND,
    UTC,
    Window,
    contiguous_end,
    cut,
    duration,
    iso,
    plan_exports,
    plan_windows,
    split_window,
    validate_max_window,
    validate_start,
    whole_second,
)
from airflow_provider_zuora_aqua.jobs.limits import ZuoraLimit

DAY = timedelta(days=1)


def at(day: int, hour: int = 0, second: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, 0, second, tzinfo=UTC)


class TestBounds:
    @pytest.mark.parametrize(
        "value",
        ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", "2024-01-01T00:00:00.999999+00:00"],
    )
    def test_strings_with_an_offset_become_whole_utc_seconds(self, value):
        assert whole_second(value, field="start") == at(1)

    def test_a_date_time_without_a_zone_is_refused_naming_the_field(self):
        with pytest.raises(AquaConfigurationError, match=r"start=.*no time zone.*2024-01-01T00:00:00Z"):
            whole_second("2024-01-01T00:00:00", field="start")
        with pytest.raises(AquaConfigurationError, match="start"):
            whole_second(datetime(2024, 1, 1), field="start")

    @pytest.mark.parametrize("value", ["yesterday", 17, None])
    def test_other_values_are_refused(self, value):
        with pytest.raises(AquaConfigurationError, match="start"):
            whole_second(value, field="start")

    def test_iso_carries_an_explicit_offset(self):
        assert iso(datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == "2024-01-01T00:00:00+00:00"

    @pytest.mark.parametrize(("value", "seconds"), [(timedelta(minutes=5), 300), (90, 90), (1.9, 1)])
    def test_durations_in_whole_seconds(self, value, seconds):
        assert duration(value, field="lag") == timedelta(seconds=seconds)

    @pytest.mark.parametrize("value", [-1, timedelta(seconds=-5), float("nan"), True, "5m"])
    def test_bad_durations_are_refused(self, value):
        with pytest.raises(AquaConfigurationError, match="lag"):
            duration(value, field="lag")


class TestWindow:
    def test_bounds_must_be_whole_utc_seconds_in_order(self):
        with pytest.raises(ValueError, match="whole UTC seconds"):
            Window(at(1).replace(microsecond=5), at(2))
        with pytest.raises(ValueError, match="ends after it starts"):
            Window(at(2), at(2))

    def test_bisect_splits_on_a_whole_second_and_the_halves_tile(self):
        first, second = Window(at(1), at(1, second=3)).bisect()
        assert (first.start, first.end, second.end) == (at(1), at(1, second=1), at(1, second=3))

    def test_a_one_second_window_cannot_be_split(self):
        with pytest.raises(AquaIntegrityError, match="one second"):
            Window(at(1), at(1, second=1)).bisect()

    def test_json_round_trip_and_slug(self):
        window = Window(at(1), at(2))
        data = window.to_json("UpdatedDate")
        assert data == {
            "cursor": "UpdatedDate",
            "start": "2024-01-01T00:00:00+00:00",
            "end": "2024-01-02T00:00:00+00:00",
        }
        assert Window.from_json(data) == window
        assert window.slug == "20240101T000000Z_20240102T000000Z"

    @pytest.mark.parametrize("data", [None, {}, {"start": "x", "end": "2024-01-02T00:00:00Z"}, {"start": 1, "end": 2}])
    def test_odd_manifest_windows_are_refused(self, data):
        with pytest.raises(ValueError):
            Window.from_json(data)


class TestPlanning:
    def test_cut_tiles_the_span_with_a_shorter_last_window(self):
        windows = cut(at(1), at(3, hour=12), DAY)
        assert [(w.start, w.end) for w in windows] == [(at(1), at(2)), (at(2), at(3)), (at(3), at(3, hour=12))]

    def test_nothing_published_plans_the_whole_span(self):
        assert plan_windows([], at(1), at(3), DAY) == [Window(at(1), at(2)), Window(at(2), at(3))]

    def test_gaps_between_published_windows_are_planned_and_published_ones_are_not(self):
        published = [Window(at(1), at(2)), Window(at(3), at(4))]  # a run died after publishing the third day
        assert plan_windows(published, at(1), at(5), DAY) == [Window(at(2), at(3)), Window(at(4), at(5))]

    def test_planned_and_published_windows_tile_the_span_exactly(self):
        published = [Window(at(2, hour=5), at(2, hour=7)), Window(at(4), at(6))]
        planned = plan_windows(published, at(1), at(8), DAY)
        ordered = sorted(planned + published)
        assert ordered[0].start == at(1) and ordered[-1].end == at(8)
        assert all(left.end == right.start for left, right in zip(ordered, ordered[1:]))

    def test_overlapping_published_windows_are_an_error(self):
        with pytest.raises(AquaIntegrityError, match="overlap"):
            plan_windows([Window(at(1), at(3)), Window(at(2), at(4))], at(1), at(5), DAY)

    def test_the_mark_stops_at_the_first_gap(self):
        published = [Window(at(1), at(2)), Window(at(2), at(3)), Window(at(4), at(5))]
        assert contiguous_end(published, at(1)) == at(3)
        assert contiguous_end([], at(1)) == at(1)
        assert contiguous_end(published[2:], at(1)) == at(1)


class TestStart:
    @pytest.mark.parametrize(
        "value",
        [
            "2000-01-01T00:00:00Z",
            datetime(2000, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            "2024-05-01T12:00:00.5Z",
        ],
    )
    def test_zuoras_initial_high_water_mark_and_later_are_accepted_in_whole_utc_seconds(self, value):
        start = validate_start(value)
        assert start >= datetime(2000, 1, 1, tzinfo=UTC)
        assert start.utcoffset() == timedelta(0) and start.microsecond == 0

    @pytest.mark.parametrize(
        "value",
        [
            "1999-12-31T23:59:59Z",
            "2000-01-01T00:30:00+01:00",  # 1999-12-31T23:30:00Z
            datetime(1, 1, 1, tzinfo=UTC),
            "0001-01-01T00:00:00Z",
        ],
    )
    def test_a_start_before_2000_is_refused_naming_start_and_the_earliest_value(self, value):
        expected = r"start=.*before 2000-01-01.*write start='2000-01-01T00:00:00Z'"
        with pytest.raises(AquaConfigurationError, match=expected):
            validate_start(value)

    def test_a_start_without_a_zone_is_still_refused(self):
        with pytest.raises(AquaConfigurationError, match="no time zone"):
            validate_start("2024-01-01T00:00:00")


class TestSlug:
    @pytest.mark.parametrize("year", [1, 999, 1000, 2024, 9998])
    def test_years_are_zero_padded_and_the_slug_reads_back(self, year):
        window = Window(datetime(year, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
        start, _, end = window.slug.partition("_")
        assert len(start) == len(end) == len("20240101T000000Z")
        assert start.startswith(f"{year:04d}0203T040506")
        assert Window.from_slug(window.slug) == window

    def test_slugs_sort_in_time_order(self):
        windows = [Window(datetime(y, 1, 1, tzinfo=UTC), datetime(y, 1, 2, tzinfo=UTC)) for y in (5, 999, 2024)]
        assert sorted(w.slug for w in windows) == [w.slug for w in windows]

    @pytest.mark.parametrize(
        "slug",
        [
            "notes",
            "9990101T000000Z_9990102T000000Z",  # the old unpadded form of year 999
            "20240101T000000Z_20240101T000000Z",  # empty
            "20240102T000000Z_20240101T000000Z",  # backwards
            "20241301T000000Z_20241302T000000Z",  # month 13
            "20240101T000000Z-20240102T000000Z",
            "20240101T000000Z_20240102T000000",
            " 20240101T000000Z_20240102T000000Z",
        ],
    )
    def test_anything_else_is_not_a_window_folder(self, slug):
        with pytest.raises(ValueError):
            Window.from_slug(slug)


class TestPlanBounds:
    @pytest.mark.parametrize("value", [timedelta(minutes=1), 60, timedelta(days=30), 90.5])
    def test_a_max_window_of_a_minute_or_more_is_whole_seconds(self, value):
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        assert validate_max_window(value) == timedelta(seconds=int(seconds))

    @pytest.mark.parametrize("value", [1, 59, timedelta(seconds=59.9), 0])
    def test_a_max_window_under_a_minute_is_refused_with_what_to_write(self, value):
        with pytest.raises(AquaConfigurationError, match=r"max_window=.*under one minute.*at least 60 seconds"):
            validate_max_window(value)

    @pytest.mark.parametrize("value", [-5, "1h", None, float("inf")])
    def test_a_max_window_that_is_no_duration_is_refused(self, value):
        with pytest.raises(AquaConfigurationError, match="max_window"):
            validate_max_window(value)

    def test_the_limit_is_ten_thousand_windows(self):
        assert MAX_PLANNED_WINDOWS == 10_000

    def test_a_plan_at_the_limit_is_planned(self):
        assert len(plan_windows([], at(1), at(4), DAY, max_windows=3)) == 3

    def test_a_plan_over_the_limit_is_refused_with_its_count_and_the_fix(self):
        published = [Window(at(2), at(3))]  # gaps [1, 2) and [3, 5): 1 + 2 windows
        assert len(plan_windows(published, at(1), at(5), DAY, max_windows=3)) == 3
        with pytest.raises(AquaConfigurationError, match=r"4 windows.*over the 3.*later start.*larger max_window"):
            plan_windows(published, at(1), at(5, hour=1), DAY, max_windows=3)

    def test_a_huge_plan_is_refused_before_any_window_is_made(self, monkeypatch):
        def no_windows(*args):
            raise AssertionError("windows were materialised before the plan was counted")

        monkeypatch.setattr(windows, "cut", no_windows)
        with pytest.raises(AquaConfigurationError, match=r"864,000 windows") as raised:
            plan_windows([], at(1), at(11), ONE_SECOND)  # ten days of one-second windows
        assert "max_window" in str(raised.value) and "start" in str(raised.value)

    def test_the_bound_is_on_all_queries_together(self):
        taken = {"Account": [], "Invoice": [Window(at(1), at(2))]}
        assert plan_exports(taken, at(1), at(4), DAY, max_windows=5) == {
            "Account": [Window(at(1), at(2)), Window(at(2), at(3)), Window(at(3), at(4))],
            "Invoice": [Window(at(2), at(3)), Window(at(3), at(4))],
        }
        with pytest.raises(AquaConfigurationError, match=r"5 windows.*over the 4"):
            plan_exports(taken, at(1), at(4), DAY, max_windows=4)

    def test_an_end_before_the_start_plans_nothing(self):
        assert plan_windows([], at(3), at(1), DAY) == []


class TestSplit:
    @pytest.mark.parametrize("limit", list(ZuoraLimit))
    def test_a_window_is_halved_whatever_the_limit(self, limit):
        assert split_window(Window(at(1), at(3)), limit, query="Account") == (
            Window(at(1), at(2)),
            Window(at(2), at(3)),
        )

    @pytest.mark.parametrize(
        ("limit", "named"),
        [(ZuoraLimit.FILE_SIZE, "2,047 MB file size cap"), (ZuoraLimit.PROCESSING_TIME, "3 hours of processing time")],
    )
    def test_a_one_second_window_names_the_limit_and_what_to_change(self, limit, named):
        with pytest.raises(AquaConfigurationError) as raised:
            split_window(Window(at(1), at(1, second=1)), limit, query="Account")
        message = str(raised.value)
        assert message.startswith("queries['Account']: ")
        assert "[2024-01-01T00:00:00+00:00, 2024-01-01T00:00:01+00:00) is one second long" in message
        assert named in message
        assert "select fewer columns" in message and "narrow its 'where'" in message
        # Advice that cannot help a one-second window is not given.
        assert "max_window" not in message and "retry" not in message.lower()

    def test_only_a_window_of_two_seconds_or_more_is_splittable(self):
        assert Window(at(1), at(1, second=2)).splittable
        assert not Window(at(1), at(1, second=1)).splittable
