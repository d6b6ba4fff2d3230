"""People's names in stored free text: side-loaded people (known terms) and names found by the
forms people introduce and sign with, redacted at landing for every help-desk source and GitHub,
so they are absent from raw payloads, staging, the analyst snapshot and tracker bodies."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks import catalog, contracts, db, load, redact, transform, writeback
from tasks.clients.freshdesk import FreshdeskTickets
from tasks.clients.github import GitHubIssuesConnector
from tasks.clients.http import RequestBudget, RetryPolicy
from tasks.clients.intercom import IntercomConversations
from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC, ZendeskSettings, ZendeskTickets
from tasks.contracts import LandedPage
from tasks.redact import redact_text, register_duckdb
from tasks.settings import DEFAULT_CATALOG, ScoreWeights
from tests.conftest import github_issue, write_jsonl
from tests.fakes import freshdesk as fd
from tests.fakes import intercom as ic
from tests.fakes import zendesk as zd
from tests.fakes.server import FakeServer
from tests.test_tracker_idempotency import usage_events

SALT = "names-salt"


# --------------------------------------------------------------------------- forms (no known)
@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Hi, this is Chen Tanaka from Acme.", ["Chen", "Tanaka"]),
        ("hi, this is chen tanaka from acme", ["chen", "tanaka"]),
        ("HI, THIS IS CHEN TANAKA FROM ACME", ["CHEN", "TANAKA"]),
        ("My name is noah smith and the export fails", ["noah", "smith"]),
        ("my name's Aisha Khan.", ["Aisha", "Khan"]),
        ("I'm Kenji from finance", ["Kenji"]),
        ("I am Fatima Haddad, the admin", ["Fatima", "Haddad"]),
        ("It's Liam again", ["Liam"]),
        ("Hi Olivia,\nthe dashboard is blank", ["Olivia"]),
        ("hello mateo, any news?", ["mateo"]),
        ("Dear Ms Dubois,", ["Dubois"]),
        ("Good morning Hannah Larsen!", ["Hannah", "Larsen"]),
        ("The export fails.\n\nThanks,\nChloe", ["Chloe"]),
        ("The export fails. thanks, priya", ["priya"]),
        ("Best regards,\nOliver Novak\nAcme Corp", ["Oliver", "Novak"]),
        ("Kind regards, Sofia Rossi", ["Sofia", "Rossi"]),
        ("Thank you Emma!", ["Emma"]),
        ("Cheers, lucas", ["lucas"]),
        ("Best,\nDaniel", ["Daniel"]),
        ("Regards, J. Murphy", ["Murphy"]),
        ("Sync broke.\n-- \nWei Andersen", ["Wei", "Andersen"]),
        ("Thanks Grace for the fix", ["Grace"]),
        ("Please ask my colleague Johan Sebastiansson", ["Johan", "Sebastiansson"]),
        ("I'm Kenji's manager", ["Kenji"]),
    ],
)
def test_names_in_greeting_intro_and_signoff_forms_are_redacted(text: str, gone: list[str]):
    out = redact_text(text)
    assert "[name]" in out
    for name in gone:
        assert not re.search(rf"\b{name}\b", out), out
    assert redact_text(out) == out  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "I am unable to export the report",
        "I AM UNABLE TO EXPORT",
        "I'm Getting errors on Sync",
        "This is Export failing again",
        "Hi team, the Dashboard is blank",
        "Hello there, Billing charged twice",
        "Thanks, Export works now",
        "thanks, that works",
        "thanks for the quick reply",
        "Best regards",
        "the best Dashboard we had",
        "This is Monday's Report",
        "Dear Support,",
        "with regards to Billing",
        "It's Search again",
        "Will you fix the Sync?",
        "--verbose flag ignored by Report export",
    ],
)
def test_product_and_ordinary_words_after_the_forms_are_kept(text: str):
    assert redact_text(text) == text


def test_possessive_keeps_its_s():
    assert redact_text("Thanks, Chen's team") == "Thanks, [name]'s team"
    assert redact_text("Chen's export broke", ["Chen Tanaka"]) == "[name]'s export broke"


# ----------------------------------------------------------------------------- known people
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chen said TANAKA's export broke", "[name] said [name]'s export broke"),
        ("Ask Chen-Tanaka", "Ask [name]-[name]"),
        ("chen tanaka wrote", "[name] wrote"),
        # A name part that is also a common word counts only capitalised.
        ("Will said we will sync", "[name] said we will sync"),
    ],
)
def test_known_people_first_and_last_names_in_any_case(text: str, expected: str):
    assert redact_text(text, ["Chen Tanaka", "Will Rose"]) == expected


# ------------------------------------------------------------------------------- Presidio
def test_presidio_enabled_without_the_package_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - the extra is not installed in CI
        pytest.skip("presidio-analyzer is installed")
    redact.presidio_analyzer.cache_clear()
    monkeypatch.setenv(redact.PRESIDIO_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="tasks.redact"):
        first = redact_text("Hi, this is Chen Tanaka")
        second = redact_text("Thanks,\nOlivia")
    assert (first, second) == ("Hi, this is [name]", "Thanks,\n[name]")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "presidio-analyzer is not installed" in warnings[0]
    assert "feedback-loop[presidio]" in warnings[0]
    redact.presidio_analyzer.cache_clear()


def test_presidio_is_off_by_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(redact.PRESIDIO_ENV, raising=False)
    redact.presidio_analyzer.cache_clear()
    assert not redact.presidio_enabled()
    redact_text("Hi, this is Chen Tanaka")
    assert redact.presidio_analyzer.cache_info().currsize == 0  # never even looked up


# ------------------------------------------------------------------ sources: raw at landing
@pytest.fixture
def wh(tmp_path: Path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    db.ensure_schema(c)
    register_duckdb(c, SALT)
    yield c
    c.close()


def _zendesk_page() -> tuple[dict[str, Any], list[str], list[int]]:
    people = {
        9001: "Chen Tanaka",
        9002: "Marguerite Okonkwo-Pell",
        9003: "Ingrid Vasquez",
        9004: "Bartholomew Quist",
        9005: "Yusuf Adeyemi",
    }
    text = (
        "chen here: the export fails, Okonkwo-Pell's CSV too; ingrid and QUIST saw it, "
        "Yusuf's team as well"
    )
    t = zd.ticket(
        1,
        "2026-11-20T10:00:00Z",
        requester_id=9001,
        submitter_id=9002,
        assignee_id=9003,
        collaborator_ids=[9004],
        follower_ids=[9005],
        email_cc_ids=[9004],
        subject=text,
        description=text,
    )
    users = [zd.user(uid, name, f"u{uid}@example.org") for uid, name in people.items()]
    doc = {"tickets": [t], "users": users, "after_cursor": "c1", "end_of_stream": True}
    words = [w for name in people.values() for w in name.replace("-", " ").split()]
    return doc, words, list(people)


def _intercom_page() -> tuple[dict[str, Any], list[str], list[str]]:
    text = "<p>zara lindqvist here, Export fails; Tomasz saw it</p>"
    conv = ic.conversation(
        "c1",
        1_763_600_000,
        title="Export fails for Zara",
        body=text,
        author={"type": "user", "id": "u1", "name": "Zara Lindqvist", "email": "z@ex.org"},
    )
    conv["contacts"]["contacts"][0].update(name="Zara Lindqvist", email="z@ex.org")
    conv["teammates"] = {
        "type": "admin.list",
        "admins": [{"type": "admin", "id": "7", "name": "Tomasz Wierzbicki"}],
    }
    doc = {
        "type": "conversation.list",
        "conversations": [conv],
        "total_count": 1,
        "pages": {"type": "pages", "page": 1, "per_page": 20, "total_pages": 1},
    }
    return doc, ["Zara", "zara", "Lindqvist", "lindqvist", "Tomasz", "Wierzbicki"], ["u1", "7"]


def _freshdesk_page() -> tuple[list[dict[str, Any]], list[str], list[int]]:
    t = fd.ticket(
        5,
        "2026-11-20T10:00:00Z",
        subject="Export fails - signe here",
        description_text="Signe Halvorsen: exports fail.\n\nRegards,\nsigne",
        requester={"id": 7005, "name": "Signe Halvorsen", "email": "signe@ex.org"},
    )
    t["description"] = "<div>" + t["description_text"] + "</div>"
    return [t], ["Signe", "signe", "Halvorsen"], [7005]


def _github_page() -> tuple[list[dict[str, Any]], list[str], list[int]]:
    issue = github_issue(12)
    issue["title"] = "Export fails, says my colleague Ines Moreau"
    issue["body"] = "Reported by octo-linnea. Hi, this is Ines Moreau from Acme.\n\nThanks,\nIines"
    issue["user"] = {"login": "octo-linnea", "id": 4242, "name": "Linnea Berg"}
    # The login stays in the user object (a public handle, like the id), not in the text.
    issue["body"] += "\ncc @octo-linnea"
    return [issue], ["Ines", "Moreau", "Linnea", "Iines", "Berg", "@octo-linnea"], [4242]


SOURCES = {
    "zendesk": (ZENDESK_TICKETS_SPEC, _zendesk_page),
    "intercom": (IntercomConversations.spec, _intercom_page),
    "freshdesk": (FreshdeskTickets.spec, _freshdesk_page),
    "github": (GitHubIssuesConnector.spec, _github_page),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_side_loaded_people_and_named_forms_leave_no_name_in_raw(wh, tmp_path, source):
    spec, make = SOURCES[source]
    body, names, ids = make()
    page = LandedPage(body=json.dumps(body).encode(), state={"cursor": "x"}, n_records=1)
    stats = load.load_pages(wh, spec, iter([page]), "r1", tmp_path / "landing")
    assert stats.n_inserted == 1 and stats.n_quarantined == 0
    [payload] = wh.sql(f"select payload::varchar from {spec.raw_table}").fetchall()[0]
    for name in names:
        assert name not in payload, (name, payload)
    assert "[name]" in payload
    for pid in ids:  # the people's ids stay, for joins
        assert str(pid) in payload
    assert "xport" in payload  # the text itself is kept


# ------------------------------------------------------------- end to end: raw .. tracker
def test_planted_name_absent_from_raw_staging_snapshot_and_tracker_body(wh, tmp_path, monkeypatch):
    planted = ("Ingrid", "Vasquez-Holm")
    tickets = [
        zd.ticket(
            300 + i,
            f"2026-11-{18 + i % 5:02d}T10:00:00Z",
            created=f"2026-11-{18 + i % 5:02d}T09:00:00Z",
            requester_id=9100,
            tags=["exports"],
            priority="high" if i % 2 else "urgent",
            subject=f"Hi, this is Ingrid Vasquez-Holm: export {i} fails",
            description=(
                "Hi, this is Ingrid Vasquez-Holm from Acme.\n\nThe CSV export fails.\n\n"
                "Thanks,\nIngrid"
            ),
        )
        for i in range(7)
    ]
    with FakeServer() as srv:
        fake = zd.zendesk_api(
            srv, tickets, page_size=2, users=[zd.user(9100, "Ola Berg", "o@x.org")]
        )
        monkeypatch.setenv("ZENDESK_API_TOKEN", fake.token)
        connector = ZendeskTickets(
            ZendeskSettings(base_url=srv.url, email=fake.email, start_date="2026-11-01"),
            budget=RequestBudget(1000, 60),
            retry=RetryPolicy(max_attempts=1),
        )
        pages = connector.pages(None, datetime(2026, 11, 26, tzinfo=UTC))
        stats = load.load_pages(wh, connector.spec, pages, "r1", tmp_path / "landing")
        srv.assert_clean()
    assert stats.n_inserted == len(tickets)
    write_jsonl(tmp_path / "posthog" / "events.jsonl", usage_events())  # a baseline to stand out
    load.load_source(wh, contracts.POSTHOG_EVENTS, str(tmp_path / "posthog" / "*.jsonl"), "r1")
    transform.build_staging(wh, SALT)
    catalog.publish_catalog(wh, catalog.load_catalog(DEFAULT_CATALOG))
    params = transform.ScoreParams(date(2026, 11, 25), 28, ScoreWeights().normalised(), "r1")
    transform.build_marts(wh, params)
    suggestions = writeback.load_suggestions(wh, "2026-11-25")
    snapshot = tmp_path / "snapshot.duckdb"
    db.publish_snapshot(wh, tmp_path / "w.duckdb", snapshot)

    raw = wh.sql("select string_agg(payload::varchar, '\n') from raw.zendesk__tickets")
    staged = wh.sql(
        "select string_agg(concat_ws('\n', subject, body), '\n') from staging.stg_support_tickets"
    )
    texts = {"raw": raw.fetchall()[0][0], "staging": staged.fetchall()[0][0]}
    assert "[name]" in texts["raw"] and "[name]" in texts["staging"]
    snap = duckdb.connect(str(snapshot), read_only=True)
    try:
        tables = snap.sql(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
        assert tables
        texts["snapshot"] = "\n".join(
            str(snap.sql(f'select list(t::varchar) from "{s}"."{n}" t').fetchall()[0][0])
            for s, n in tables
        )
    finally:
        snap.close()
    assert suggestions, "the tickets are evidence for a suggestion"
    texts["tracker"] = "\n".join(writeback.render_body(s, "github") for s in suggestions)
    assert "[name]" in texts["tracker"]
    for where, text in texts.items():
        for name in planted:
            assert name not in text, where


# ------------------------------------------------------- tickets landed before landing redaction
def test_tickets_landed_before_landing_redaction_are_redacted_in_place_once(tmp_path: Path):
    from tasks.clients.zendesk import LANDING_REDACTION_VERSION, redact_landed_rows
    from tests.conftest import write_json, zendesk_page, zendesk_ticket

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    db.ensure_schema(con)
    register_duckdb(con, SALT)
    # A ticket landed the old way: the export file as it was (no landing redaction), with the
    # person inline.
    legacy = zendesk_ticket(
        1,
        subject="Call me at +1 415 555 0100 or jane.doe@example.com",
        description="Card 4111 1111 1111 1111 was charged twice",
        tags=["billing"],
    )
    legacy["requester"] = {"id": 7, "name": "Jane Doe", "email": "Jane.Doe@example.com "}
    write_json(tmp_path / "old" / "p1.json", zendesk_page([legacy], "c1", True))
    load.load_source(con, contracts.ZENDESK_TICKETS, str(tmp_path / "old" / "*.json"), "r0")
    # A ticket landed today: redacted at landing.
    today = zendesk_ticket(2, subject="Export fails, write to ops@example.com")
    write_json(tmp_path / "new" / "p1.json", zendesk_page([today], "c2", True))
    load.load_source(con, ZENDESK_TICKETS_SPEC, str(tmp_path / "new" / "*.json"), "r1")

    def payloads() -> dict[int, dict]:
        rows = con.sql("select ticket_id, payload from raw.zendesk__tickets").fetchall()
        return {tid: json.loads(p) for tid, p in rows}

    before = payloads()
    assert "jane.doe@example.com" in before[1]["subject"]  # the legacy row, as it was landed

    assert redact_landed_rows(con) == 1  # only the legacy row changes
    after = payloads()
    assert after[2] == before[2]
    old = after[1]
    text = json.dumps(old)
    for leak in ("jane.doe@example.com", "Jane.Doe", "Jane Doe", "415 555 0100", "4111 1111"):
        assert leak not in text
    assert "[email]" in old["subject"] and "[card]" in old["description"]
    assert old["requester"] == {
        "id": 7,
        "name_key": redact.person_key("zendesk", "Jane Doe", SALT),
        "email_key": redact.person_key("zendesk", "jane.doe@example.com", SALT),
    }
    assert (old["status"], old["tags"], old["updated_at"]) == (
        "open",
        ["billing"],
        legacy["updated_at"],
    )
    # Once per warehouse: recorded with the rows, and a second call changes nothing.
    assert con.sql("select version, n_rows from ops.landing_redaction").fetchall() == [
        (LANDING_REDACTION_VERSION, 1)
    ]
    assert redact_landed_rows(con) == 0
    assert payloads() == after
    # Staging reads the landed text as it is (no second pass there any more).
    transform.build_staging(con, SALT)
    subjects = dict(
        con.sql("select ticket_id, subject from staging.stg_zendesk__tickets").fetchall()
    )
    assert subjects == {"zendesk:1": old["subject"], "zendesk:2": after[2]["subject"]}
