"""Name-redaction benchmark: a seeded corpus of support tickets with planted names, product words
and contact details, redacted by tasks.redact; then the cost of landing help-desk pages.

    python benchmarks/bench_names.py --tickets 2000
    python benchmarks/bench_names.py --tickets 2000 --baseline 4c7a5d4 --load-tickets 20000

Reports:
  * recall of planted names (every occurrence of a planted name word, any case; target >= 99%),
    split by form (intro / greeting / sign-off / signature / role / side-loaded mention),
  * planted e-mails / phones / cards left after redaction (target 0),
  * false redactions of product words: product-word tokens (feature names from features.yaml and
    UI words, capitalised at sentence starts and right after the greeting / sign-off forms)
    replaced / product-word tokens planted,
  * throughput: tickets/s of redact_text in Python and of fl_redact in DuckDB (the landing path),
  * load slowdown: landing the same Zendesk (with the users side-load) and Intercom pages with
    this tree's code and, with --baseline REF, with the code at git REF (extracted by
    `git archive` to a temporary folder); each load runs in a fresh child process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FIRST = [
    "Jane", "John", "Maria", "Ahmed", "Wei", "Priya", "Lucas", "Sofia", "Noah", "Emma", "Liam",
    "Olivia", "Mateo", "Aisha", "Kenji", "Chloe", "Daniel", "Fatima", "Oliver", "Hannah",
    "Ingrid", "Tomasz", "Zara", "Yusuf", "Signe", "Mary-Jane", "Grace", "Siobhan", "Bartholomew",
    "Ines", "Chen", "Marguerite", "Johan", "Linnea", "Oluwaseun", "Dmitri", "Ana", "Kwame",
]  # fmt: skip
LAST = [
    "Cooper", "Smith", "Garcia", "Khan", "Tanaka", "Patel", "Silva", "Rossi", "Johnson",
    "Nguyen", "Kowalski", "Okafor", "Dubois", "Andersen", "Novak", "Haddad", "Murphy", "Schmidt",
    "Larsen", "Okonkwo-Pell", "O'Neil", "Vasquez", "Lindqvist", "Sebastiansson", "Halvorsen",
    "Moreau", "Quist", "Adeyemi", "Berg", "Wierzbicki", "Fitzgerald", "Mbeki", "Ivanova",
]  # fmt: skip
COMPANIES = ["Northwind", "Bluebird", "Redwood", "Silverline", "Greenfield", "Ironbridge"]
UI_WORDS = ["Export", "Dashboard", "Billing", "Sync", "Report", "Search", "Settings", "Invoice"]


def product_words() -> list[str]:
    """Feature names from features.yaml (each word) plus UI words, all capitalised."""
    words = set(UI_WORDS)
    for line in (ROOT / "features.yaml").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s+name:\s*(.+)$", line)
        if m:
            words.update(w.capitalize() for w in re.findall(r"[A-Za-z]+", m.group(1)) if len(w) > 2)
    return sorted(words)


PRODUCT_SENTENCES = [
    "{P} fails after the last release.",
    "{P} shows an empty page.",
    "{P} was fine yesterday, now {p} times out.",
    "{P} and {Q} both break when we open {Q2} from the menu.",
]
# Forms right before a product word: the words after a greeting or sign-off that are not names.
PRODUCT_AFTER_FORMS = [
    "Thanks, {P} works now.",
    "Hi team, {P} is blank again.",
    "This is {P} failing again.",
    "I am {P} admin for our workspace.",
    "Hello there, {P} charged us twice.",
    "Best regards to the {P} team.",
]

# (form, template): {N} = the name in the template's own case rule.
NAME_FORMS = [
    ("intro", "Hi, this is {N} from {C}."),
    ("intro", "My name is {N}."),
    ("intro", "hi, this is {n} from {c}"),
    ("intro", "my name is {n} and I run reporting."),
    ("intro", "HI, THIS IS {NU} FROM {CU}."),
    ("intro", "I'm {F} from {C}."),
    ("intro", "I am {N}, the admin of our workspace."),
    ("greeting", "Hi {F},"),
    ("greeting", "Hello {F}!"),
    ("greeting", "Dear {N},"),
    ("greeting", "Good morning {F},"),
    ("greeting", "hi {f},"),
    ("signoff", "Thanks,\n{F}"),
    ("signoff", "Best regards,\n{N}\n{C}"),
    ("signoff", "Kind regards, {N}"),
    ("signoff", "Cheers, {f}"),
    ("signoff", "Thank you {F}!"),
    ("signoff", "Best,\n{F}"),
    ("signoff", "thanks,\n{n}"),
    ("signature", "-- \n{N}"),
    ("role", "Please ask my colleague {N} about it."),
    ("possessive", "Thanks, {F}'s team"),
]
# Side-loaded people (requester / assignee / CC) mentioned without a form.
KNOWN_FORMS = [
    "{F} here again, no change.",
    "{L} said it would be fixed.",
    "cc {N} on this please",
    "{f} again: still broken",
    "{F}'s fix did not help.",
    "{LU} asked for the logs.",
]

CONTACTS = ["email", "phone", "card"]
CARDS = ["4111 1111 1111 1111", "5555-5555-5555-4444", "4012888888881881", "378282246310005"]


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST)


def _fill(template: str, first: str, last: str, company: str) -> str:
    full = f"{first} {last}"
    return template.format(
        N=full, n=full.lower(), NU=full.upper(), F=first, f=first.lower(), L=last,
        LU=last.upper(), C=company, c=company.lower(), CU=company.upper(),
    )  # fmt: skip


def _name_words(*names: str) -> list[str]:
    return [w for n in names for w in re.split(r"[\s-]+", n) if w]


def make_corpus(n: int, seed: int) -> list[dict[str, Any]]:
    """Tickets with what was planted: name words (by form), product words, contact strings."""
    rng = random.Random(seed)
    products = product_words()
    tickets = []
    for i in range(n):
        people = {role: _person(rng) for role in ("requester", "assignee", "cc")}
        company = rng.choice(COMPANIES)
        parts: list[str] = []
        planted: list[tuple[str, str]] = []  # (form, name word)
        for _ in range(rng.randint(1, 3)):
            form, tpl = rng.choice(NAME_FORMS)
            first, last = _person(rng)  # a third party: not side-loaded
            parts.append(_fill(tpl, first, last, company))
            used = [last] if "{L" in tpl else []
            used += [first] if re.search(r"\{[FfNn]", tpl) else []
            used += [last] if re.search(r"\{[Nn]", tpl) else []
            planted += [(form, w) for w in _name_words(*used)]
        for _ in range(rng.randint(1, 2)):
            role = rng.choice(list(people))
            first, last = people[role]
            tpl = rng.choice(KNOWN_FORMS)
            parts.append(_fill(tpl, first, last, company))
            used = ([first] if re.search(r"\{[FfNn]", tpl) else []) + (
                [last] if re.search(r"\{(?:[Nn]|L|LU)\}", tpl) else []
            )
            planted += [("side-loaded", w) for w in _name_words(*used)]
        product_planted: list[str] = []
        for _ in range(rng.randint(2, 4)):
            p, q, q2 = rng.sample(products, 3)
            tpl = rng.choice(PRODUCT_SENTENCES + PRODUCT_AFTER_FORMS)
            parts.append(tpl.format(P=p, p=p.lower(), Q=q, Q2=q2))
            product_planted += [p] + ([q] if "{Q}" in tpl else []) + ([q2] if "{Q2}" in tpl else [])
            product_planted += [q] if tpl.count("{Q}") == 2 else []
        contacts: list[str] = []
        for kind in rng.sample(CONTACTS, rng.randint(1, 3)):
            first, last = people["requester"]
            if kind == "email":
                value = f"{first.lower()}.{last.lower().replace(chr(39), '')}{i}@example.com"
            elif kind == "phone":
                value = rng.choice(["+44 20 7946 0958", "(212) 555-0199", "415.555.0134"])
            else:
                value = rng.choice(CARDS)
            contacts.append(value)
            parts.append(f"You can reach me at {value}." if kind != "card" else f"Card {value}.")
        rng.shuffle(parts)
        subject = f"{rng.choice(products)} problem"
        product_planted.append(subject.split()[0])
        tickets.append(
            {
                "id": 100_000 + i,
                "subject": subject,
                "description": "\n\n".join(parts),
                "people": {r: f"{f} {ln}" for r, (f, ln) in people.items()},
                "planted": planted,
                "products": product_planted,
                "contacts": contacts,
            }
        )
    return tickets


def _count_word(word: str, text: str, ignore_case: bool) -> int:
    flags = re.IGNORECASE if ignore_case else 0
    return len(re.findall(rf"(?<![\w'’-]){re.escape(word)}(?![\w-])", text, flags))


def score(tickets: list[dict[str, Any]], outputs: list[str]) -> dict[str, Any]:
    by_form: dict[str, list[int]] = {}
    planted_total = left_total = 0
    prod_total = prod_left = 0
    contacts_total = contacts_left = 0
    misses: list[str] = []
    for t, out in zip(tickets, outputs, strict=True):
        text = t["subject"] + "\n" + t["description"]
        for value in t["contacts"]:  # names inside planted e-mails are not name mentions
            text = text.replace(value, "")
        # Occurrences of each planted name word in the input, and how many survived.
        forms: dict[str, str] = {}
        for form, word in t["planted"]:
            forms.setdefault(word, form)
        for word, form in forms.items():
            n_in = _count_word(word, text, True)
            n_out = _count_word(word, out, True)
            planted_total += n_in
            left_total += n_out
            stats = by_form.setdefault(form, [0, 0])
            stats[0] += n_in
            stats[1] += n_out
            if n_out and len(misses) < 8:
                m = re.search(re.escape(word), out, re.IGNORECASE)
                at = m.start() if m else 0
                misses.append(f"{word!r} ({form}) in: {out[max(0, at - 60) : at + 40]!r}")
        for word in set(t["products"]):
            n_in = _count_word(word, text, False)
            prod_total += n_in
            prod_left += min(n_in, _count_word(word, out, False))
        for value in t["contacts"]:
            contacts_total += 1
            contacts_left += value in out
    return {
        "name_words_planted": planted_total,
        "name_words_left": left_total,
        "name_recall": 1 - left_total / planted_total if planted_total else 1.0,
        "recall_by_form": {
            f: round(1 - s[1] / s[0], 4) if s[0] else 1.0 for f, s in by_form.items()
        },
        "contacts_planted": contacts_total,
        "contacts_left": contacts_left,
        "product_tokens": prod_total,
        "product_tokens_redacted": prod_total - prod_left,
        "product_false_redaction_rate": (prod_total - prod_left) / prod_total if prod_total else 0,
        "examples_missed": misses,
    }


def known_terms(t: dict[str, Any]) -> list[str]:
    return list(t["people"].values())


def run_python(tickets: list[dict[str, Any]]) -> tuple[list[str], float]:
    from tasks.redact import redact_text

    t0 = time.perf_counter()
    out = [
        redact_text(t["subject"] + "\n" + t["description"], known_terms(t)) or "" for t in tickets
    ]
    return out, time.perf_counter() - t0


def run_duckdb(tickets: list[dict[str, Any]]) -> tuple[list[str], float]:
    import duckdb

    from tasks.redact import register_duckdb

    con = duckdb.connect()
    register_duckdb(con, "bench-salt")
    con.execute("create table t (i integer, body varchar, known varchar[])")
    con.executemany(
        "insert into t values (?, ?, ?)",
        [
            (i, t["subject"] + "\n" + t["description"], known_terms(t))
            for i, t in enumerate(tickets)
        ],
    )
    t0 = time.perf_counter()
    rows = con.sql("select i, fl_redact(body, known) from t").fetchall()
    elapsed = time.perf_counter() - t0
    by_i = dict(rows)
    return [by_i[i] for i in range(len(tickets))], elapsed


# ----------------------------------------------------------------------------- load slowdown
def write_pages(tickets: list[dict[str, Any]], folder: Path, per_page: int = 100) -> None:
    """Zendesk export pages (tickets + the users side-load) and Intercom search pages."""
    zd, ic = folder / "zendesk", folder / "intercom"
    zd.mkdir(parents=True)
    ic.mkdir(parents=True)
    for p in range(0, len(tickets), per_page):
        chunk = tickets[p : p + per_page]
        users, zt, conv = {}, [], []
        for t in chunk:
            ids = {}
            for k, (role, name) in enumerate(t["people"].items()):
                uid = t["id"] * 10 + k
                ids[role] = uid
                users[uid] = {
                    "id": uid,
                    "name": name,
                    "email": f"u{uid}@example.org",
                    "role": "end-user",
                }
            ts = 1_763_600_000 + t["id"]
            updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            zt.append(
                {
                    "id": t["id"],
                    "updated_at": updated,
                    "created_at": updated,
                    "generated_timestamp": ts,
                    "subject": t["subject"],
                    "raw_subject": t["subject"],
                    "description": t["description"],
                    "status": "open",
                    "priority": "normal",
                    "requester_id": ids["requester"],
                    "submitter_id": ids["requester"],
                    "assignee_id": ids["assignee"],
                    "collaborator_ids": [ids["cc"]],
                    "tags": ["exports"],
                    "via": {"channel": "email", "source": {"from": {}, "to": {}}},
                    "custom_fields": [],
                }
            )
            conv.append(
                {
                    "type": "conversation",
                    "id": str(t["id"]),
                    "title": t["subject"],
                    "created_at": ts - 60,
                    "updated_at": ts,
                    "state": "open",
                    "source": {
                        "type": "conversation",
                        "subject": t["subject"],
                        "body": "<p>" + t["description"].replace("\n", "<br>") + "</p>",
                        "author": {
                            "type": "user",
                            "id": f"u{ids['requester']}",
                            "name": t["people"]["requester"],
                            "email": f"u{ids['requester']}@example.org",
                        },
                    },
                    "contacts": {"type": "contact.list", "contacts": [{"id": "c1"}]},
                    "tags": {"type": "tag.list", "tags": []},
                    "custom_attributes": {},
                }
            )
        n = p // per_page
        doc = {"tickets": zt, "users": list(users.values()), "after_cursor": f"c{n}",
               "end_of_stream": False}  # fmt: skip
        (zd / f"page-{n:05d}.json").write_text(json.dumps(doc), encoding="utf-8")
        idoc = {"type": "conversation.list", "conversations": conv, "total_count": len(conv)}
        (ic / f"page-{n:05d}.json").write_text(json.dumps(idoc), encoding="utf-8")


def child_load(pages: Path) -> dict[str, float]:
    """Run in a child whose sys.path starts with the code under test."""
    import duckdb

    from tasks import db, load
    from tasks.clients.intercom import IntercomConversations
    from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
    from tasks.contracts import LandedPage
    from tasks.redact import register_duckdb

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "w.duckdb"))
        db.ensure_schema(con)
        register_duckdb(con, "bench-salt")
        for name, spec in (
            ("zendesk", ZENDESK_TICKETS_SPEC),
            ("intercom", IntercomConversations.spec),
        ):
            files = sorted((pages / name).glob("*.json"))
            landed = (
                LandedPage(body=f.read_bytes(), state={"cursor": f.stem}, n_records=0)
                for f in files
            )
            t0 = time.perf_counter()
            stats = load.load_pages(con, spec, landed, "bench", Path(tmp) / "landing")
            out[f"{name}_s"] = time.perf_counter() - t0
            out[f"{name}_rows"] = stats.n_inserted
        con.close()
    return out


def time_load(code_root: Path, pages: Path, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child-load", str(pages),
             "--code-root", str(code_root)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"load child failed ({code_root}):\n{proc.stdout}\n{proc.stderr}")
        res = json.loads(line[7:])
        for k, v in res.items():
            best[k] = min(best.get(k, v), v) if k.endswith("_s") else v
    return best


def extract(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "tasks", "sql", "features.yaml"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tickets", type=int, default=2000, help="corpus size (default 2000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--load-tickets", type=int, default=20000, help="tickets per source landed")
    p.add_argument("--baseline", metavar="REF", help="git ref to compare the load time with")
    p.add_argument("--repeat", type=int, default=1, help="load runs per side (best kept)")
    p.add_argument("--child-load", metavar="PAGES", help=argparse.SUPPRESS)
    p.add_argument("--code-root", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child_load:
        sys.path.insert(0, args.code_root)
        print("RESULT " + json.dumps(child_load(Path(args.child_load))), flush=True)
        return 0

    sys.path.insert(0, str(ROOT))
    tickets = make_corpus(args.tickets, args.seed)
    py_out, py_s = run_python(tickets)
    db_out, db_s = run_duckdb(tickets)
    assert py_out == db_out, "fl_redact and redact_text disagree"
    res = score(tickets, py_out)
    n = len(tickets)
    print(f"corpus:                 {n:,} tickets (seed {args.seed})")
    print(
        f"name recall:            {res['name_recall']:.2%}  "
        f"({res['name_words_planted'] - res['name_words_left']:,} of "
        f"{res['name_words_planted']:,} planted name words)  target >= 99%"
    )
    for form, r in sorted(res["recall_by_form"].items()):
        print(f"  {form:<20}  {r:.2%}")
    print(
        f"contacts left:          {res['contacts_left']} of {res['contacts_planted']} "
        "e-mails/phones/cards  target 0"
    )
    print(
        f"product words redacted: {res['product_tokens_redacted']} of {res['product_tokens']:,} "
        f"tokens ({res['product_false_redaction_rate']:.3%})"
    )
    print(f"throughput (Python):    {n / py_s:,.0f} tickets/s")
    print(f"throughput (DuckDB):    {n / db_s:,.0f} tickets/s (fl_redact, the landing path)")
    for ex in res["examples_missed"]:
        print("  missed: " + ex)

    if args.load_tickets:
        load_corpus = make_corpus(args.load_tickets, args.seed + 1)
        with tempfile.TemporaryDirectory() as tmp:
            pages = Path(tmp) / "pages"
            write_pages(load_corpus, pages)
            after = time_load(ROOT, pages, args.repeat)
            before = None
            if args.baseline:
                base = extract(args.baseline, Path(tmp) / "baseline")
                before = time_load(base, pages, args.repeat)
            for src in ("zendesk", "intercom"):
                rows = after[f"{src}_rows"]
                line = f"load {src:<9} {rows:,} rows: {after[f'{src}_s']:.2f} s"
                if before:
                    b = before[f"{src}_s"]
                    line += f"  (baseline {args.baseline}: {b:.2f} s, x{after[f'{src}_s'] / b:.2f})"
                print(line)
    ok = res["name_recall"] >= 0.99 and res["contacts_left"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
