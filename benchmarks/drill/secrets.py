"""Secret scan: plant canary credentials (environment) and values the fakes echo back (401
bodies echoing Authorization and the query string), run the nightly with API connectors, then
scan every log, artifact, report, tracker body and every text of every DuckDB table for each
canary in every form (raw, substrings ≥ 12 chars, base64 of user:secret and its secret-bearing
substrings, URL-encoded). Planted customer PII (e-mails, phone numbers, names) is looked for in
the tracker bodies and reports."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

from benchmarks.drill.badinput import plant
from benchmarks.drill.common import (
    Trial,
    config_text,
    new_trial_dir,
    nightly_args,
    prefect_home,
    run_cli,
    run_state,
)

SECTION = "secrets"
T_OFFSET = 1_795_168_800  # 2026-11-20T10:00:00Z
CANARIES = {
    "ZENDESK_API_TOKEN": "zdCanary7Q4mX9/pL2+vR8=wK5",
    "INTERCOM_ACCESS_TOKEN": "icCanary3Hn8Zt/Qa6+Yb1=Lm4",
    "FRESHDESK_API_KEY": "fdCanary5Kp2Wd/Xe9+Tc7=Nj3",
    "FEEDBACK_LOOP_HASH_SALT": "saltCanary8Vb4/Rm2+Hq6=Zs",
}
ZD_EMAIL = "agent@acme.test"
PII = {
    "email": "wilhelmina.drillsworth@example.net",
    "phone": "+1 415 555 0199",
    "name": "Wilhelmina Drillsworth",
    "email2": "q.zebulon-canary@example.org",
}


def forms(secret: str, user: str | None = None) -> dict[str, str]:
    """Every needle that would betray `secret`: itself, its 12-char substrings, URL-encoded,
    and base64 of user:secret with the secret-bearing 16-char substrings of that encoding."""
    out = {"raw": secret, "url": quote(secret, safe="")}
    for i in range(0, len(secret) - 11, 4):
        out[f"sub{i}"] = secret[i : i + 12]
    for u in ([user] if user else []) + [""]:
        pair = f"{u}:{secret}" if u else secret
        enc = base64.b64encode(pair.encode()).decode()
        out[f"b64({'user:' if u else ''}secret)"] = enc
        start = (len(u) + 1) // 3 * 4 if u else 0  # chars before this depend on the user only
        for i in range(start, len(enc) - 15, 4):
            out[f"b64sub{i}{'u' if u else ''}"] = enc[i : i + 16]
    return out


def needles() -> list[tuple[str, str]]:
    users = {
        "ZENDESK_API_TOKEN": f"{ZD_EMAIL}/token",
        "FRESHDESK_API_KEY": None,  # key:X (the key comes first)
    }
    out = []
    for env, secret in CANARIES.items():
        for form, text in forms(secret, users.get(env)).items():
            out.append((f"{env}:{form}", text))
        if env == "FRESHDESK_API_KEY":
            out.append(
                (f"{env}:b64(key:X)", base64.b64encode(f"{secret}:X".encode()).decode()[:-4])
            )
    return out


def _echo_401(req):
    from tests.fakes.server import Response

    return Response.json(
        {
            "error": "invalid credentials",
            "you_sent": req.headers.get("Authorization", ""),
            "target": req.target,
        },
        status=401,
    )


def _tickets():
    from tests.fakes import zendesk as zd

    tickets = [
        zd.ticket(
            70_000 + i,
            zd.iso(T_OFFSET + 3600 * i),
            subject=f"Export fails for {PII['name']} ({PII['email']}, {PII['phone']})",
            requester_id=880_001,
        )
        for i in range(8)
    ]
    users = [zd.user(880_001, PII["name"], PII["email2"])]
    return tickets, users


def scan_duckdb(path: Path, pats: list[tuple[str, str]]) -> list[str]:
    import duckdb

    hits = []
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.sql(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = current_database()"
        ).fetchall()
        for schema, table in tables:
            blob_sql = f'select cast(t as varchar) from "{schema}"."{table}" t'
            try:
                rows = con.sql(blob_sql).fetchall()
            except duckdb.Error:
                continue
            text = "\n".join(r[0] for r in rows if r[0])
            for label, needle in pats:
                if needle in text:
                    hits.append(f"{path.name}:{schema}.{table}: {label}")
    finally:
        con.close()
    return hits


def scan_files(root: Path, pats: list[tuple[str, str]], skip: tuple[str, ...] = ()) -> list[str]:
    hits = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part in skip for part in p.relative_to(root).parts):
            continue
        if p.suffix == ".duckdb" or ".duckdb" in p.name:
            continue
        data = p.read_bytes()
        for label, needle in pats:
            if needle.encode() in data:
                hits.append(f"{p.relative_to(root)}: {label}")
    return hits


def trial(spec: dict) -> Trial:
    from tests.fakes.intercom import conversation, intercom_api
    from tests.fakes.server import FakeServer
    from tests.fakes.zendesk import zendesk_api

    d = new_trial_dir(Path(spec["work"]), "secrets", Path(spec["world"]))
    # Optionally the same runs carry bad-input files (the reduced drill judges them apart).
    markers = plant(d / "demo", spec["inputs"]) if spec.get("inputs") else {}
    tickets, users = _tickets()
    convs = [conversation(f"ic-{i}", T_OFFSET + 60 * i, subject="Export broken") for i in range(5)]
    runs = []
    with FakeServer() as zd, FakeServer() as ic, FakeServer() as echo:
        zendesk_api(zd, tickets, page_size=3, users=users, token=CANARIES["ZENDESK_API_TOKEN"])
        intercom_api(ic, convs, page_size=3, token=CANARIES["INTERCOM_ACCESS_TOKEN"])
        echo.route("*", r"/.*", _echo_401)  # freshdesk: 401 echoing what it was sent
        working = [
            "[connectors.zendesk]",
            f'base_url = "{zd.url}"',
            f'email = "{ZD_EMAIL}"',
            "start_date = 2026-11-01",
            "page_size = 3",
            "[connectors.intercom]",
            f'base_url = "{ic.url}"',
            "start_date = 2026-11-01",
        ]
        echoing = ["[connectors.freshdesk]", f'base_url = "{echo.url}"', "start_date = 2026-11-01"]
        cfg = d / "config.toml"
        # Run 1: the echoing vendor answers 401 with the credentials it was sent; run 2: the
        # working vendors only, so the run goes on to score and write tracker issues.
        for tables in (working + echoing, working):
            cfg.write_text(config_text(extra_tables="\n".join(tables)), encoding="utf-8")
            runs.append(run_cli(d, nightly_args(cfg), env=dict(CANARIES)))
        echoed = len(echo.requests_to(r"/.*"))
    pats = needles()
    hits = scan_files(d, pats, skip=("demo",))
    for db in sorted(d.rglob("*.duckdb")):
        hits += scan_duckdb(db, pats)
    # The worker's Prefect home: its API database holds the flow and task run logs.
    hits += [f"prefect:{h}" for h in scan_files(Path(prefect_home()), pats)]
    pii_pats = [(f"pii:{k}", v) for k, v in PII.items()]
    pii_hits = []
    for where in ("tracker", "reports"):
        if (d / where).exists():
            pii_hits += scan_files(d / where, pii_pats)
    pii_hits += scan_files(d / "logs", pii_pats)
    findings = hits + pii_hits
    states = ", ".join(f"{run_state(r)} (exit {r.rc})" for r in runs)
    detail = f"runs {states}; {echoed} echo requests; {len(pats)} needles; "
    detail += f"{len(findings)} findings" + (": " + "; ".join(findings[:8]) if findings else "")
    return Trial(
        SECTION,
        "canaries+pii",
        not findings,
        detail,
        sum(r.seconds for r in runs),
        extra={"findings": findings, "dir": str(d), "runs": runs, "markers": markers},
    )
