"""SQL models on given rows: catalog mapping, health components, suggestions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from tasks import catalog, transform
from tasks.settings import DEFAULT_CATALOG, ScoreWeights

AS_OF = date(2026, 11, 24)


def _events(rows):
    return pl.DataFrame(
        rows,
        schema={
            "event_id": pl.String,
            "user_key": pl.String,
            "event_name": pl.String,
            "url_path": pl.String,
            "occurred_at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )


def stage(con, events: pl.DataFrame, tickets=None, bugs=None, errors=None):
    """Create staging tables directly from frames (what build_staging would produce)."""
    con.register("ev", events)
    con.execute("""create or replace table staging.stg_usage_events as
        select event_id, 'posthog' as source, occurred_at::timestamptz as occurred_at,
               now() as ingested_at, user_key, 'acct-' || user_key as account_key, event_name,
               url_path, '{}'::json as properties from ev""")
    con.execute("""create or replace table staging.stg_support_tickets (
        ticket_id varchar, source varchar, created_at timestamptz, updated_at timestamptz,
        status varchar, priority varchar, channel varchar, subject varchar, body varchar,
        tags varchar[], requester_key varchar, account_key varchar, is_deleted boolean,
        url varchar)""")
    for t in tickets or []:
        con.execute(
            "insert into staging.stg_support_tickets values "
            "(?, 'zendesk', ?, ?, 'open', ?, 'email', ?, '', ?, 'r', 'a', ?, null)",
            t,
        )
    con.execute("""create or replace table staging.stg_bug_issues (
        issue_id varchar, source varchar, url varchar, title varchar, state varchar,
        severity varchar, labels varchar[], components varchar[], created_at timestamptz,
        updated_at timestamptz, closed_at timestamptz, votes integer, is_deleted boolean,
        state_reason varchar)""")
    for b in bugs or []:
        con.execute(
            "insert into staging.stg_bug_issues values "
            "(?, 'github', 'u', 't', ?, ?, ?, [], ?, ?, null, 0, false, null)",
            b,
        )
    con.execute("""create or replace table staging.stg_error_signals (
        issue_id varchar, source varchar, url varchar, title varchar, culprit varchar,
        level varchar, status varchar, n_events bigint, n_users bigint,
        first_seen_at timestamptz, last_seen_at timestamptz, url_path varchar,
        components varchar[], is_deleted boolean)""")
    for e in errors or []:
        con.execute(
            "insert into staging.stg_error_signals values "
            "(?, 'sentry', 'u', 't', 'c', 'error', ?, ?, ?, ?, ?, ?, ?, false)",
            e,
        )
    catalog.publish_catalog(con, catalog.load_catalog(DEFAULT_CATALOG))
    transform.build_marts(
        con, transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "run-1")
    )


def ts(days_ago: int, hour: int = 12) -> datetime:
    d = AS_OF - timedelta(days=days_ago)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def test_catalog_maps_events_by_name_then_path(con):
    stage(
        con,
        _events(
            [
                ("e1", "u1", "export_started", "/home", ts(1)),
                ("e2", "u1", "$pageview", "/dashboards/42", ts(1)),
                ("e3", "u1", "$pageview", "/home", ts(1)),
                ("e4", "u1", "exportstarted", "/x", ts(1)),  # no glob match: '_' is literal
            ]
        ),
    )
    mapped = dict(
        con.sql(
            "select event_name || ' ' || url_path, feature_key "
            "from intermediate.int_event_feature_map"
        ).fetchall()
    )
    assert mapped == {
        "export_started /home": "exports",
        "$pageview /dashboards/42": "dashboards",
        "$pageview /home": None,
        "exportstarted /x": None,
    }
    cov = con.sql(
        "select n_records, n_mapped from marts.catalog_coverage where signal = 'events'"
    ).fetchall()
    assert cov == [(4, 2)]


def test_ticket_tag_beats_keyword_and_bug_labels_map(con):
    stage(
        con,
        _events([("e1", "u1", "search_performed", "/search", ts(1))]),
        tickets=[
            ("zendesk:1", ts(2), ts(2), "high", "Search is slow", ["exports"], False),
            ("zendesk:2", ts(2), ts(2), "low", "Search is slow", [], False),
            ("zendesk:3", ts(2), ts(2), "low", "Cannot log in", [], False),
        ],
        bugs=[("github:A", "open", "s1", ["bug", "area:alerts"], ts(3), ts(3))],
    )
    tickets = dict(
        con.sql("select ticket_id, feature_key from intermediate.int_tickets_mapped").fetchall()
    )
    assert tickets == {"zendesk:1": "exports", "zendesk:2": "search", "zendesk:3": None}
    assert con.sql("select feature_key from intermediate.int_bugs_mapped").fetchall() == [
        ("alerts",)
    ]


def _usage(feature_event: str, users_by_week: dict[int, int]) -> list[tuple]:
    """users_by_week: weeks_ago -> number of distinct users active on the feature that week."""
    rows = []
    for weeks_ago, n in users_by_week.items():
        for u in range(n):
            rows.append(
                (
                    f"{feature_event}-{weeks_ago}-{u}",
                    f"user-{u}",
                    feature_event,
                    "/",
                    ts(weeks_ago * 7 + 1),
                )
            )
            rows.append(
                (f"pv-{weeks_ago}-{u}", f"user-{u}", "$pageview", "/home", ts(weeks_ago * 7 + 1))
            )
    return rows


def test_components_sum_to_score_and_trend_follows_the_drop(con):
    # exports halves in the last two weeks; search is stable.
    rows = _usage("export_started", {0: 50, 1: 50, 2: 100, 3: 100, 4: 100, 5: 100, 6: 100})
    rows += _usage("search_performed", {w: 80 for w in range(7)})
    stage(con, _events(rows))
    comps = con.sql("""select feature_key, component, score, weight, contribution
                       from marts.feature_health_components""").pl()
    health = con.sql(
        "select feature_key, health_score, trend_score, usage_trend, "
        "formula_version from marts.feature_health"
    ).pl()
    sums = comps.group_by("feature_key").agg(pl.col("contribution").sum())
    joined = health.join(sums, on="feature_key")
    for row in joined.iter_rows(named=True):
        assert row["health_score"] == pytest.approx(row["contribution"], abs=0.05)
    assert comps["weight"].sum() / comps["feature_key"].n_unique() == pytest.approx(1.0)
    by = {r["feature_key"]: r for r in health.iter_rows(named=True)}
    assert by["exports"]["usage_trend"] == pytest.approx(-0.5)
    assert by["exports"]["trend_score"] == 0  # -50% is the floor of the trend component
    assert by["search"]["trend_score"] == 100
    assert by["exports"]["formula_version"] == transform.FORMULA_VERSION


def test_regression_with_new_severe_bug_becomes_a_fix_suggestion(con):
    rows = _usage("export_started", {0: 40, 1: 40, 2: 100, 3: 100, 4: 100, 5: 100, 6: 100})
    rows += _usage("dashboard_viewed", {w: 300 for w in range(7)})
    stage(
        con,
        _events(rows),
        tickets=[
            (f"zendesk:{i}", ts(3), ts(3), "high", "export broken", ["exports"], False)
            for i in range(12)
        ],
        bugs=[
            ("github:B1", "open", "s1", ["area:exports"], ts(5), ts(5)),
            ("github:B2", "open", "s4", ["area:dashboards"], ts(40), ts(40)),
        ],
    )
    sugg = con.sql(
        "select fingerprint, priority_rank, is_blocked, evidence::varchar "
        "from marts.backlog_suggestions order by priority_rank"
    ).fetchall()
    assert sugg[0][:3] == ("fix:exports", 1, False)
    assert "github:B1" in sugg[0][3] and "zendesk:" in sugg[0][3]
    assert "fix:dashboards" not in [s[0] for s in sugg]
    ranks = dict(con.sql("select feature_key, health_rank from marts.feature_health").fetchall())
    assert ranks["exports"] < ranks["dashboards"]


def test_rerun_for_the_same_day_replaces_rows(con):
    stage(con, _events(_usage("export_started", {w: 10 for w in range(7)})))
    n = con.sql("select count(*) from marts.feature_health").fetchall()[0][0]
    transform.build_marts(
        con, transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "run-2")
    )
    assert con.sql("select count(*) from marts.feature_health").fetchall()[0][0] == n
    transform.build_marts(
        con,
        transform.ScoreParams(AS_OF - timedelta(days=1), 28, ScoreWeights().normalised(), "run-3"),
    )
    assert con.sql(
        "select count(distinct as_of_date), count(*) from marts.feature_health"
    ).fetchall() == [(2, 2 * n)]


def test_catalog_file_errors_are_readable(tmp_path: Path):
    bad = tmp_path / "features.yaml"
    bad.write_text("version: 1\nfeatures:\n  - key: Bad Key\n    name: x\n")
    with pytest.raises(Exception, match="features.0.key"):
        catalog.load_catalog(bad)
    with pytest.raises(Exception, match="not found"):
        catalog.load_catalog(tmp_path / "missing.yaml")


def test_error_signals_map_to_features_by_path_then_component(con):
    stage(
        con,
        _events([("e1", "u1", "export_started", "/exports", ts(1))]),
        errors=[
            ("sentry:1", "unresolved", 120, 30, ts(3), ts(1), "/exports/new", []),
            ("sentry:2", "unresolved", 5, 2, ts(40), ts(2), None, ["Alerts"]),
            ("sentry:3", "resolved", 9, 9, ts(3), ts(3), "/exports", []),
            ("sentry:4", "unresolved", 1, 1, ts(3), ts(3), "/nowhere", []),
        ],
    )
    mapped = dict(
        con.sql("select issue_id, feature_key from intermediate.int_errors_mapped").fetchall()
    )
    assert mapped == {
        "sentry:1": "exports",
        "sentry:2": "alerts",
        "sentry:3": "exports",
        "sentry:4": None,
    }
    errors = {
        r[0]: r[1:]
        for r in con.sql(
            "select feature_key, n_unresolved_issues, n_error_events, n_new_issues_14d "
            "from marts.feature_errors"
        ).fetchall()
    }
    assert errors["exports"] == (1, 120, 2)  # new in 14 days, resolved or not
    assert errors["alerts"] == (1, 5, 0)
    assert errors["search"] == (0, 0, 0)
