"""SQL models on given rows: catalog mapping, health components, suggestions."""

from __future__ import annotations

import dataclasses
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
    con.execute("""create or replace table staging.stg_usage_events__unvalidated as
        select event_id, 'posthog' as source, occurred_at::timestamptz as occurred_at,
               now() as ingested_at, user_key, 'acct-' || user_key as account_key, event_name,
               url_path, '{}'::json as properties, 1::bigint as n_events from ev""")
    con.execute("""create or replace view staging.stg_usage_events as
        select * from staging.stg_usage_events__unvalidated where event_id not in (
            select record_key from quality.quarantine where stage = 'validate'
            and table_name = 'staging.stg_usage_events')""")
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
    con.execute(  # what build_staging leaves when no accounts source is configured
        "create view if not exists staging.stg_accounts as select null::varchar as account_key, "
        "null::double as arr, null::varchar as plan, null::varchar as segment where false"
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


def _daily(
    days: int = 70,
    product: int | dict[int, int] = 1000,
    features: dict[str, object] | None = None,
) -> pl.DataFrame:
    """Daily usage: `product` users open the app each day (a `$pageview`), and for each feature
    event, the first n of them use the feature. features maps an event name to a function
    days_ago -> n (or a constant). A dict for `product` overrides single days."""
    rows = []
    for days_ago in range(days - 1, -1, -1):
        p = product.get(days_ago, 1000) if isinstance(product, dict) else product
        for u in range(p):
            rows.append((f"pv-{days_ago}-{u}", f"user-{u}", "$pageview", "/home", ts(days_ago, 9)))
        for event, n_of in (features or {}).items():
            n = n_of(days_ago) if callable(n_of) else n_of
            for u in range(min(int(n), p)):
                rows.append((f"{event}-{days_ago}-{u}", f"user-{u}", event, "/", ts(days_ago)))
    return _events(rows)


def _problems(con, as_of: date | None = None) -> dict[tuple[str, str], dict]:
    if as_of is not None:
        transform.build_marts(
            con, transform.ScoreParams(as_of, 28, ScoreWeights().normalised(), f"r-{as_of}")
        )
    rel = con.sql("select * from intermediate.int_feature_problems")
    cols = rel.columns
    return {(r[1], r[2]): dict(zip(cols, r, strict=True)) for r in rel.fetchall()}


def _noisy(base: float, seed: int = 7):
    """A deterministic +-5 % wobble per day, so the robust spread is not zero."""
    import random

    rnd = random.Random(seed)
    wobble = {d: rnd.uniform(-0.05, 0.05) for d in range(400)}
    return lambda d: base * (1 + wobble[d])


def test_components_sum_to_score_and_trend_follows_the_drop(con):
    # exports loses 40 % of its daily users from 6 days ago; search is stable.
    exports = _noisy(300)
    stage(
        con,
        _daily(
            features={
                "export_started": lambda d: exports(d) * (0.6 if d <= 5 else 1),
                "search_performed": _noisy(250, 3),
            }
        ),
    )
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
    assert by["exports"]["usage_trend"] == pytest.approx(-0.4, abs=0.05)
    assert by["exports"]["trend_score"] == pytest.approx(20, abs=10)  # 0 at -50 %
    assert by["search"]["trend_score"] == 100
    assert by["exports"]["formula_version"] == transform.FORMULA_VERSION == "health-v2"


def test_regression_with_new_severe_bug_becomes_a_fix_suggestion(con):
    exports = _noisy(300)
    stage(
        con,
        _daily(
            features={
                "export_started": lambda d: exports(d) * (0.6 if d <= 5 else 1),
                "dashboard_viewed": _noisy(500, 5),
            }
        ),
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
        "select fingerprint, kind, priority_rank, is_blocked, onset_date, evidence::varchar "
        "from marts.backlog_suggestions order by priority_rank"
    ).fetchall()
    assert sugg[0][:4] == ("health:exports", "fix", 1, False)
    assert sugg[0][4] == AS_OF - timedelta(days=5)  # the onset is the first low day
    assert "github:B1" in sugg[0][5] and "zendesk:" in sugg[0][5]
    assert "dashboards" not in " ".join(s[0] for s in sugg)
    ranks = dict(con.sql("select feature_key, health_rank from marts.feature_health").fetchall())
    assert ranks["exports"] < ranks["dashboards"]


def test_quiet_drop_on_a_popular_feature_opens_two_nights_after_onset(con):
    """35 % of daily actives, -20 % from `onset` on: seen the next night, opened the one after
    (open_after_days = 2), although weekly distinct users would hardly move."""
    base = _noisy(350)
    onset = 4  # days before AS_OF
    stage(
        con, _daily(features={"dashboard_viewed": lambda d: base(d) * (0.8 if d <= onset else 1)})
    )
    night = {n: _problems(con, AS_OF - timedelta(days=onset - n)) for n in range(4)}
    key = ("dashboards", "health")
    assert not night[0][key]["is_open"]
    assert not night[1][key]["is_open"]
    assert night[2][key]["is_open"] and night[2][key]["had_usage_drop"]
    assert night[2][key]["onset_date"] == AS_OF - timedelta(days=onset)
    assert night[3][key]["is_open"]
    assert night[3][key]["kind"] == "investigate"  # no bug or ticket behind it (yet)


def test_one_day_blip_and_a_product_wide_dip_are_not_problems(con):
    """A -60 % day on one feature, and three days where every user stays away (a holiday)."""
    exports, search = _noisy(300), _noisy(250, 3)
    holiday = {8: 600, 9: 600, 10: 600}  # the whole product at -40 %
    stage(
        con,
        _daily(
            product=holiday,
            features={
                "export_started": lambda d: (
                    exports(d) * (0.4 if d == 3 else 1) * (0.6 if d in holiday else 1)
                ),
                "search_performed": lambda d: search(d) * (0.6 if d in holiday else 1),
            },
        ),
    )
    for n in range(12):
        problems = _problems(con, AS_OF - timedelta(days=n))
        assert not any(p["is_open"] for p in problems.values()), (n, problems)


def test_weekday_seasonality_is_not_a_drop(con):
    """A feature used almost only on Mondays, the product quieter at weekends."""

    def product(d):
        return 300 if ts(d).isoweekday() >= 6 else 1000

    rows = _daily(
        product={d: product(d) for d in range(70)},
        features={
            "alert_created": lambda d: 400 if ts(d).isoweekday() == 1 else 20,
            "search_performed": _noisy(200),
        },
    )
    stage(con, rows)
    for n in range(10):
        problems = _problems(con, AS_OF - timedelta(days=n))
        assert not any(p["is_open"] for p in problems.values()), (n, problems)


def _tickets(feature_tag: str, per_day: dict[int, int], prefix: str):
    out = []
    for days_ago, n in per_day.items():
        for i in range(n):
            out.append(
                (
                    f"zendesk:{prefix}{days_ago}-{i}",
                    ts(days_ago, 10),
                    ts(days_ago, 10),
                    "normal",
                    "help",
                    [feature_tag],
                    False,
                )
            )
    return out


def test_ticket_excess_is_judged_against_exposure_not_volume(con):
    """Search: a steady 6 tickets a day for months. Exports: ~1 a day, then 11x for 5 days."""
    steady = _tickets("search", {d: 6 for d in range(70)}, "s")
    spike = _tickets(
        "exports", {d: (11 if d <= 4 else (1 if d % 2 else 0)) for d in range(70)}, "e"
    )
    stage(
        con,
        _daily(features={"export_started": _noisy(300), "search_performed": _noisy(300, 4)}),
        tickets=steady + spike,
    )
    problems = _problems(con)
    assert not problems[("search", "health")]["is_open"]
    assert problems[("exports", "health")]["is_open"]
    assert problems[("exports", "health")]["kind"] == "investigate"
    assert problems[("exports", "health")]["had_ticket_excess"]
    support = dict(
        con.sql("select feature_key, support_score from marts.feature_health").fetchall()
    )
    assert support["search"] > 60
    assert support["exports"] < 40


def test_hysteresis_needs_three_healthy_days_to_resolve(con):
    base = _noisy(300)
    low = {11, 10, 9, 8, 7, 6, 4}  # a drop, one good day (5), low again, then recovered (3..0)
    stage(con, _daily(features={"export_started": lambda d: base(d) * (0.6 if d in low else 1)}))
    key = ("exports", "health")
    states = {n: _problems(con, AS_OF - timedelta(days=n))[key]["state"] for n in range(0, 9)}
    assert states[8] == "active"
    assert states[5] == "active"  # one good day neither is evidence of recovery nor closes it
    assert states[4] == "active"
    assert states[3] == "recovering" and states[2] == "recovering"  # 1 and 2 healthy days
    assert states[1] == "none" and states[0] == "none"  # 3 healthy days: resolved


def test_weak_adoption_and_the_launch_ramp(con, tmp_path):
    """ai_assistant is used by 2 % of daily actives for months: weak. A feature launched 20 days
    ago at 3 % is in its launch ramp: not judged."""
    stage(
        con,
        _daily(
            features={
                "dashboard_viewed": _noisy(300),
                "export_started": _noisy(200, 2),
                "search_performed": _noisy(150, 3),
                "assistant_prompt_sent": _noisy(20, 4),
                "alert_created": lambda d: 30 if d < 20 else 0,
            }
        ),
    )
    problems = _problems(con)
    assert problems[("ai_assistant", "adoption")]["is_open"]
    assert problems[("ai_assistant", "adoption")]["kind"] == "improve"
    assert not problems[("alerts", "adoption")]["is_open"]
    assert problems[("alerts", "adoption")]["is_in_launch_ramp"]
    sugg = dict(con.sql("select fingerprint, kind from marts.backlog_suggestions").fetchall())
    assert sugg == {"adoption:ai_assistant": "improve"}


def test_rerun_for_the_same_day_replaces_rows(con):
    stage(con, _daily(days=30, features={"export_started": 10}))
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


def _regression_world(con, bugs=None, accounts=None):
    exports, dashboards = _noisy(300), _noisy(600, 5)
    stage(
        con,
        _daily(
            features={
                "export_started": lambda d: exports(d) * (0.6 if d <= 5 else 1),
                "dashboard_viewed": lambda d: dashboards(d) * (0.6 if d <= 5 else 1),
            }
        ),
        bugs=bugs,
    )


def test_a_new_severe_bug_turns_investigate_into_fix_under_the_same_fingerprint(con):
    _regression_world(con)
    before = dict(con.sql("select fingerprint, kind from marts.backlog_suggestions").fetchall())
    assert before["health:exports"] == "investigate"
    con.execute(
        "insert into staging.stg_bug_issues values ('github:N', 'github', 'u', 't', 'open', 's1', "
        "['area:exports'], [], ?, ?, null, 0, false, null)",
        [ts(1), ts(1)],
    )
    transform.build_marts(con, transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "r2"))
    after = dict(con.sql("select fingerprint, kind from marts.backlog_suggestions").fetchall())
    assert after["health:exports"] == "fix"
    assert after["health:dashboards"] == "investigate"


def test_reach_is_weighted_by_arr_when_accounts_are_loaded(con):
    """Every user is its own account (acct-<user>); exports' users are the first ~315 of them,
    dashboards' the first ~630. Give the first 200 accounts 10x the ARR."""
    _regression_world(con)
    plain = dict(con.sql("select fingerprint, reach from marts.backlog_suggestions").fetchall())
    con.execute("drop view staging.stg_accounts")
    con.execute(
        "create table staging.stg_accounts as select 'acct-user-' || i as account_key, "
        "case when i < 200 then 10000.0 else 1000.0 end as arr, 'pro' as plan, 'smb' as segment "
        "from range(1000) as t(i)"
    )
    transform.build_marts(con, transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "r2"))
    rows = {
        r[0]: r[1:]
        for r in con.sql(
            "select fingerprint, reach, reach_users, reach_weight, reach_arr "
            "from marts.backlog_suggestions"
        ).fetchall()
    }
    reach, users, weight, arr = rows["health:exports"]
    assert users == plain["health:exports"]
    assert weight > 1.5 and reach == round(users * weight)
    assert arr == pytest.approx(10000.0 * min(users, 200) + 1000.0 * max(users - 200, 0))
    assert rows["health:dashboards"][2] < weight  # its users reach into the small accounts
    transform.build_marts(
        con,
        transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "r3", reach="users"),
    )
    assert con.sql(
        "select reach from marts.backlog_suggestions where fingerprint = 'health:exports'"
    ).fetchall() == [(plain["health:exports"],)]


def test_effort_from_the_tracker_divides_the_priority(con):
    _regression_world(con)
    base = dict(
        con.sql("select fingerprint, priority_score from marts.backlog_suggestions").fetchall()
    )
    con.execute("alter table ops.writeback_ledger add column if not exists effort double")
    con.execute("alter table ops.writeback_ledger add column if not exists effort_source varchar")
    con.execute(
        "insert into ops.writeback_ledger (fingerprint, tracker, state, created_at, updated_at, "
        "last_run_id, effort, effort_source) values ('health:exports', 'markdown', 'open', now(), "
        "now(), 'r', 4, 'label effort:4')"
    )
    transform.build_marts(con, transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "r2"))
    rows = {
        r[0]: r[1:]
        for r in con.sql(
            "select fingerprint, effort, effort_source, priority_score "
            "from marts.backlog_suggestions"
        ).fetchall()
    }
    assert rows["health:exports"][:2] == (4.0, "label effort:4")
    assert rows["health:exports"][2] == pytest.approx(base["health:exports"] / 4, abs=0.1)
    assert rows["health:dashboards"][:2] == (1.0, "none: 1 assumed")


def test_rows_of_the_v1_formula_stay_readable(con):
    """A warehouse scored by health-v1 keeps its rows; the v2 columns are added beside them."""
    con.execute(
        "create table marts.feature_health as select date '2026-10-01' as as_of_date, "
        "'exports' as feature_key, 71.5 as health_score, 'health-v1' as formula_version, "
        "0.1 as usage_trend"
    )
    _regression_world(con)
    rows = con.sql(
        "select formula_version, count(*), count(share_of_actives_7d) from marts.feature_health "
        "group by all order by 1"
    ).fetchall()
    assert rows[0] == ("health-v1", 1, 0)
    assert rows[1][0] == "health-v2" and rows[1][1] == rows[1][2] > 0
    assert con.sql(
        "select health_score from marts.feature_health where formula_version = 'health-v1'"
    ).fetchall() == [(71.5,)]


def _rollup_rows(con) -> dict[str, list[tuple]]:
    """Every row of every incremental usage rollup, sorted."""
    return {
        name: con.sql(f"select * from intermediate.{name} order by all").fetchall()
        for name in transform.USAGE_ROLLUPS
    }


def _add_events(con, rows, ingested_at: str, n_events: int = 1, user_key: bool = True) -> None:
    con.register("late", _events(rows))
    con.execute(
        "insert into staging.stg_usage_events__unvalidated select event_id, 'posthog', "
        f"occurred_at, '{ingested_at}'::timestamptz, "
        + ("user_key, 'acct-' || user_key" if user_key else "null, null")
        + f", event_name, url_path, '{{}}'::json, {n_events} from late"
    )
    con.unregister("late")


def _quarantine(con, record_key: str) -> None:
    con.execute(
        "insert into quality.quarantine values (?, 'validate', 'posthog', "
        "'staging.stg_usage_events', ?, 'r', 'why', null, null, 'r', 'r', now())",
        [f"q-{record_key}", record_key],
    )


def test_usage_rollups_are_incremental_and_equal_a_full_rebuild(con):
    """Late events, a new day and events entering and leaving the quarantine touch a few days;
    only those are recomputed in every usage rollup (feature x user x day, the coverage counts,
    feature x day), and the rows - and the marts built from them - equal a --full-refresh
    rebuild."""
    stage(con, _daily(days=40, features={"export_started": _noisy(50), "search_performed": 30}))
    con.execute("update staging.stg_usage_events__unvalidated set ingested_at = '2026-11-20'")
    transform.build_usage_rollups(con, full_refresh=True)
    _add_events(
        con,
        [
            ("late-1", "user-900", "export_started", "/", ts(30)),  # a late event of an old day
            ("late-2", "user-901", "alert_created", "/", ts(30)),  # and a new (event, path) pair
            ("new-1", "user-1", "search_performed", "/", ts(0, 23)),
        ],
        "2026-11-21",
    )
    _quarantine(con, "export_started-12-3")  # an accepted event enters the quarantine
    out = transform.build_usage_rollups(con)
    assert out == {"full": False, "days": 3}
    # The loads holding each day are recorded, so a changed day reads only those loads:
    # the late event's day is in both loads, an untouched day only in the first.
    loads = dict(
        con.sql(
            "select activity_date, list(ingested_at::date::varchar order by ingested_at) "
            "from ops.rollup_load_days group by all"
        ).fetchall()
    )
    assert loads[ts(30).date()] == ["2026-11-20", "2026-11-21"]
    assert loads[ts(10).date()] == ["2026-11-20"]
    incremental = _rollup_rows(con)
    assert ("alert_created", "/", "alerts") in incremental["int_event_feature_map"]
    assert transform.build_usage_rollups(con) == {"full": False, "days": 0}  # nothing new
    assert _rollup_rows(con) == incremental
    assert transform.build_usage_rollups(con, full_refresh=True)["full"]
    assert _rollup_rows(con) == incremental

    # The quarantined event leaves the quarantine (a newer version passed); weighted events
    # (a PostHog daily group) and events without a user land late on another old day.
    con.execute("delete from quality.quarantine where record_key = 'export_started-12-3'")
    _add_events(con, [("grp-1", "user-5", "export_started", "/", ts(20))], "2026-11-22", n_events=3)
    _add_events(
        con,
        [("anon-1", "nobody", "odd_event", "/reports/42", ts(20))],
        "2026-11-22",
        n_events=4,
        user_key=False,
    )
    assert transform.build_usage_rollups(con) == {"full": False, "days": 2}
    incremental = _rollup_rows(con)
    params = transform.ScoreParams(AS_OF, 28, ScoreWeights().normalised(), "run-2")
    transform.build_marts(con, params)
    marts = {
        t: con.sql(f"select * from marts.{t} order by all").fetchall()
        for t in ("feature_daily", "catalog_coverage")
    }
    coverage = {r[0]: r for r in marts["catalog_coverage"]}
    total = con.sql("select sum(n_events) from staging.stg_usage_events").fetchall()[0][0]
    assert coverage["events"][1] == total  # weights and user-less events counted
    assert "odd_event /reports (4)" in coverage["events"][4]
    day20 = con.sql(
        "select n_events, n_users from marts.feature_daily "
        "where feature_key = 'exports' and day = ?",
        params=[ts(20).date()],
    ).fetchall()
    base = con.sql(
        "select sum(n_events), count(distinct user_key) from staging.stg_usage_events "
        "where event_name = 'export_started' and occurred_at::date = ?",
        params=[ts(20).date()],
    ).fetchall()
    assert day20 == base
    transform.build_marts(con, dataclasses.replace(params, full_refresh=True))
    assert _rollup_rows(con) == incremental
    for t, rows in marts.items():
        assert con.sql(f"select * from marts.{t} order by all").fetchall() == rows
    # A changed catalog rebuilds everything.
    con.execute("update marts.feature_rules set pattern = 'search*' where pattern = 'search_*'")
    assert transform.build_usage_rollups(con)["full"]


@pytest.mark.parametrize(
    ("column", "value", "flag"),
    [
        ("expected_stickiness", 2.0, "is_weak_stickiness"),
        ("expected_events_per_user", 5.0, "is_weak_frequency"),
    ],
)
def test_engagement_is_judged_against_the_catalog_expectation(con, column, value, flag):
    """Every feature user does 1 event a day on ~90 % of days; a catalog that expects far more
    makes it an adoption (improve) problem, and the text says which measure is weak."""
    stage(con, _daily(features={"export_started": _noisy(300), "search_performed": _noisy(280)}))
    assert not _problems(con)[("exports", "adoption")]["is_open"]
    con.execute(
        f"update marts.dim_features set {column} = ? where feature_key = 'exports'", [value]
    )
    problems = _problems(con, AS_OF)
    assert problems[("exports", "adoption")]["is_open"] and problems[("exports", "adoption")][flag]
    assert not problems[("search", "adoption")]["is_open"]
    why = con.sql("select why from marts.backlog_suggestions").fetchall()[0][0]
    assert ("too few to stick" in why) == (flag == "is_weak_stickiness")
    assert ("catalog expects" in why) == (flag == "is_weak_frequency")


def test_last_usage_day_from_the_rollups_equals_reading_every_event(con):
    """default_as_of's last data day, taken from the rollups plus what changed since, is the
    newest validated event day: after new days land, and when events leave or enter the
    quarantine."""
    full = "select max(occurred_at)::date from staging.stg_usage_events"
    stage(con, _daily(days=10, features={"export_started": 5}))
    con.execute("update staging.stg_usage_events__unvalidated set ingested_at = '2026-11-25'")
    _quarantine(con, "export_started-0-1")  # keeps its day: others remain
    transform.build_usage_rollups(con, full_refresh=True)
    assert transform._last_usage_day(con) == AS_OF
    _add_events(con, [("next-1", "user-1", "export_started", "/", ts(-1))], "2026-11-26")
    assert transform._last_usage_day(con) == AS_OF + timedelta(days=1)  # before the rollups
    transform.build_usage_rollups(con)
    _quarantine(con, "next-1")  # the only event of its day enters the quarantine
    assert transform._last_usage_day(con) == con.sql(full).fetchall()[0][0] == AS_OF
    transform.build_usage_rollups(con)
    con.execute("delete from quality.quarantine where record_key = 'next-1'")  # and leaves it
    assert transform._last_usage_day(con) == con.sql(full).fetchall()[0][0]
    assert transform._last_usage_day(con) == AS_OF + timedelta(days=1)
