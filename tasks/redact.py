"""Offline, deterministic PII redaction for free text (ticket subjects, bodies, evidence).

`redact_text` replaces, in this order:

1. e-mail addresses                         -> ``[email]``
2. API tokens and secrets (vendor prefixes, ``Bearer <token>``, JWTs, long
   high-entropy hex / base64 runs)          -> ``[token]``
3. the known terms (every person the vendor side-loads for the record): the full name / e-mail /
   id case-insensitively, and each part of a name (>= 3 letters) in any case, or only when
   capitalised if it is also a common word ("Will", "Rose", "Cooper") -> ``[name]`` / ``[email]``;
   then names found by their context: "my name is ...", "this is ..." / "I'm ...", "my colleague
   ...", greetings, sign-offs and signature lines (see "names in context") -> ``[name]``
4. IBANs that pass the mod-97 check         -> ``[iban]``
5. card numbers (13-19 digits, optionally grouped by spaces or dashes) that pass Luhn
                                            -> ``[card]``
6. IPv6 (validated by ``ipaddress``) and IPv4 (valid octets) -> ``[ip]``
7. phone numbers: ``+CC`` international, North American ``(212) 555-0199`` / ``212-555-0199`` /
   ``415.555.0134``, and trunk-prefixed domestic ``020 7946 0958`` / ``01 23 45 67 89``
                                            -> ``[phone]``

Why this order: e-mails and tokens are removed whole before anything can cut them in pieces (a
name part inside ``jane.cooper@example.com`` or digits inside a JWT); IBANs and cards before IPs
and phones so a long digit run is judged as a whole; IPs before phones so ``415.555.0134``-like
dotted runs are only phones when they are not addresses.

Placeholders are bracketed words no pattern matches, and the passes repeat until nothing changes
(one replacement can expose another match), so redaction is idempotent. Digit runs that fail the
checksum (order numbers), dates, times, versions and prices are left alone.

The patterns are exported as ``PATTERNS``: ``(compiled, replacement)`` pairs where the replacement
is a string or a callable, so ``pattern.sub(replacement, text)`` works for every pair (the shape
``tasks.writeback.scrub`` already loops over). One loop over them is a single pass without known
terms; ``redact_text(text)`` is the same plus the fixed-point repeat, and is the better drop-in.

stdlib only (``re``, ``hashlib``, ``ipaddress``, ``math``); no models, no network. Optionally
(FEEDBACK_LOOP_PRESIDIO=1 with the ``presidio`` extra installed) Presidio's PERSON recogniser runs
after the rules as a second opinion; without the package it is a logged no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

EMAIL = "[email]"
TOKEN = "[token]"
NAME = "[name]"
IBAN = "[iban]"
CARD = "[card]"
IP = "[ip]"
PHONE = "[phone]"
REDACTED = "[redacted]"  # returned whole if redaction itself fails
PLACEHOLDERS = (EMAIL, TOKEN, NAME, IBAN, CARD, IP, PHONE, REDACTED)

Replacement = str | Callable[[re.Match[str]], str]

# --------------------------------------------------------------------------------------- e-mail
# Anchored on the left (not inside a longer run) and length-bounded: linear on long inputs.
EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[\w.%+-]{1,64}@(?:[\w-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![\w-])",
)

# --------------------------------------------------------------------------------------- tokens
# Lookaheads that scan a whole run ("has a digit somewhere") are quadratic on inputs like
# "sk_" * 60000, so such conditions are checked in the callbacks instead.
_PREFIXED = r"""
    (?<![A-Za-z0-9])(?:
        (?P<skey>(?:sk|pk|rk)[_-][A-Za-z0-9_-]{16,})
      | gh[opsur]_[A-Za-z0-9]{20,}
      | github_pat_[A-Za-z0-9_]{20,}
      | xox[abposr]-[A-Za-z0-9-]{10,}
      | (?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])
      | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?
    )"""
PREFIXED_TOKEN_RE = re.compile(_PREFIXED, re.VERBOSE)
TOKEN_RE = re.compile(
    r"(?P<bearer>\b(?i:bearer)[ \t]+)(?P<btok>[A-Za-z0-9._~+/-]{16,}=*)"
    + "|"
    + _PREFIXED
    + r"| (?P<run>(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_-]))",
    re.VERBOSE,
)
_HEX_RUN = re.compile(r"[0-9a-fA-F]{32,}")


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _char_class(ch: str) -> int:
    return 0 if ch.isdigit() else 1 if ch.isupper() else 2


def _long_run_share(s: str) -> float:
    """Share of characters in same-class runs (digits / upper / lower) of length >= 4.

    Words inside identifiers ("Report", "export", "2026") form such runs; in random base64 they
    are rare (a 32-char random token exceeds 0.6 about 0.3% of the time).
    """
    alnum = [c for c in s if c.isalnum()]
    total = run = 0
    prev = -1
    for ch in alnum:
        cls = _char_class(ch)
        if cls == prev:
            run += 1
        else:
            total += run if run >= 4 else 0
            run, prev = 1, cls
    total += run if run >= 4 else 0
    return total / len(alnum) if alnum else 1.0


def looks_random(run: str) -> bool:
    """A 32+ char run that is a secret rather than a long identifier or path.

    Hex: has both digits and letters. Base64: upper, lower and digits, >= 3.5 bits/char, and at
    most 60% of it in word-like same-class runs (snake_case / paths / "Report2026" stay).
    """
    body = run.rstrip("=")
    if _HEX_RUN.fullmatch(body):
        return any(c.isdigit() for c in body) and any(c.isalpha() for c in body)
    if not (
        any(c.isdigit() for c in body)
        and any(c.isupper() for c in body)
        and any(c.islower() for c in body)
    ):
        return False
    return _entropy(body) >= 3.5 and _long_run_share(body) <= 0.6


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def _prefixed_sub(m: re.Match[str]) -> str:
    # "pk_customer_orders_index" is a column name, "sk_test_4eC39HqLy..." a key: keys have digits.
    key = m.group("skey")
    return m.group(0) if key and not _has_digit(key) else TOKEN


def _token_sub(m: re.Match[str]) -> str:
    if m.group("bearer"):
        tok = m.group("btok")
        if _has_digit(tok) or len(tok) >= 24:
            return m.group("bearer") + TOKEN
        return m.group(0)
    run = m.group("run")
    if run is not None:
        if looks_random(run):
            return TOKEN
        # A long identifier or path; a vendor-prefixed secret may still sit inside it.
        return PREFIXED_TOKEN_RE.sub(_prefixed_sub, run)
    return _prefixed_sub(m)


# ----------------------------------------------------------------------------------------- IBAN
IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"
)


def iban_ok(s: str) -> bool:
    s = s.replace(" ", "")
    if not 15 <= len(s) <= 34 or not s.isalnum() or not s.isascii():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban_sub(m: re.Match[str]) -> str:
    cand = m.group(0)
    # The match may run into a following group ("... 0130 00 1234"): try shorter prefixes that
    # end at a space, longest first.
    ends = [len(cand)] + [i for i in range(len(cand) - 1, 14, -1) if cand[i] == " "]
    for end in ends:
        if iban_ok(cand[:end]):
            return IBAN + cand[end:]
    return cand


# ----------------------------------------------------------------------------------------- card
# A maximal run of digit groups joined by single spaces / dashes; the callback looks for a window
# of whole groups that is card-shaped and passes Luhn, so "4111111111111111 123" still loses the
# card and "order 1234567890123" (fails Luhn) stays.
CARD_RE = re.compile(r"(?<![\w+.])(?<!\d,)\d+(?:[ -]\d+)*(?!\w|[.,]\d)")
_GROUP_SPLIT = re.compile(r"([ -])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_window(groups: list[str]) -> bool:
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19:
        return False
    if len(groups) > 1 and (len(groups[0]) != 4 or any(not 3 <= len(g) <= 6 for g in groups)):
        return False
    return luhn_ok(digits)


def _card_sub(m: re.Match[str]) -> str:
    run = m.group(0)
    if len(run) < 13 or sum(c.isdigit() for c in run) < 13:
        return run
    parts = _GROUP_SPLIT.split(run)  # [g0, sep, g1, sep, g2, ...]
    groups, seps = parts[0::2], parts[1::2]
    out: list[str] = []
    i = 0
    while i < len(groups):
        best = -1
        n = 0
        # A card starts with a 4-digit group, or is one 13-19 digit group.
        first_ok = len(groups[i]) == 4 or 13 <= len(groups[i]) <= 19
        for j in range(i, len(groups) if first_ok else i):
            n += len(groups[j])
            if n > 19:
                break
            if _card_window(groups[i : j + 1]):
                best = j
        if best >= 0:
            out.append(CARD)
            i = best + 1
        else:
            out.append(groups[i])
            i += 1
        if i < len(groups):
            out.append(seps[i - 1])
    return "".join(out)


# ------------------------------------------------------------------------------------------- IP
IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[0-9A-Za-z]{1,15})?(?!\w|:[\w:])"
)


def _is_ipv6(cand: str) -> bool:
    try:
        ipaddress.IPv6Address(cand.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _ipv6_sub(m: re.Match[str]) -> str:
    cand = m.group(0)
    if not any(c.isdigit() for c in cand):  # "a::b", "::" are more likely code than addresses
        return cand
    if _is_ipv6(cand):
        return IP
    if cand.endswith(":") and not cand.endswith("::") and _is_ipv6(cand[:-1]):
        return IP + ":"  # "from 2001:db8::1: ..."
    return cand  # times (10:30:00), MACs, "fix:exports"


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = re.compile(rf"(?<![\w.])(?<!\d\.){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")

# ---------------------------------------------------------------------------------------- phone
PHONE_RE = re.compile(
    r"""
    (?P<intl>(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d){6,14})(?!\w)
    | (?<![\w.+-])(?:
          (?:1[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}
        | 1?[2-9]\d{2}[2-9]\d{6}  # North American number written without separators
        | 0[1-9]\d{0,3}[ -]\d{3,4}[ -]?\d{3,4}
        | 0[1-9](?:[ .-]\d{2}){4}
      )(?!\w|[.-]\d)
    """,
    re.VERBOSE,
)


def _phone_sub(m: re.Match[str]) -> str:
    if not m.group("intl"):
        return PHONE
    cand = m.group(0)
    # E.164: 8-15 digits including the country code. A longer match ran on into the next number
    # ("+49 30 12345678 2026-11-20"): keep the longest prefix that ends before a separator.
    best = -1
    n = 0
    for i, ch in enumerate(cand):
        if ch.isdigit():
            n += 1
            if n > 15:
                break
            if n >= 8 and (i + 1 == len(cand) or cand[i + 1] in " .-"):
                best = i + 1
    return cand if best < 0 else PHONE + cand[best:]


PATTERNS: list[tuple[re.Pattern[str], Replacement]] = [
    (EMAIL_RE, EMAIL),
    (TOKEN_RE, _token_sub),
    # known terms go here (per call)
    (IBAN_RE, _iban_sub),
    (CARD_RE, _card_sub),
    (IPV6_RE, _ipv6_sub),
    (IPV4_RE, IP),
    (PHONE_RE, _phone_sub),
]
_KNOWN_AT = 2  # index in PATTERNS before which the requester's known terms are applied

# ---------------------------------------------------------------------------------- known terms
# Per-row regex compilation would dominate the cost (each requester differs), so names are matched
# by one precompiled word scanner plus set look-ups; only unusual terms (e-mails the generic
# pattern missed, "Jane C. Cooper") get a compiled pattern, and only when they occur in the text.

# Name particles written in lower case in the known name ("Ludwig van Beethoven") are never
# removed on their own ("the van broke"); "Della Reese" keeps "Della".
_PARTICLES = frozenset(
    {"van", "von", "der", "den", "del", "della", "des", "dos", "das", "bin", "ibn", "binti"}
)
_WORD_RE = re.compile(r"\w+(?:['’-]\w+)*")
_WORD_SEP = re.compile(r"(['’-])")
_WS_RE = re.compile(r"\s+")
_PLAIN_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_PLACEHOLDER_ALT = "|".join(re.escape(p) for p in PLACEHOLDERS)
_PLACEHOLDER_WORDS = frozenset(p[1:-1] for p in PLACEHOLDERS)


class _KnownPlan:
    """What to look for, built once per distinct ``known`` tuple."""

    __slots__ = ("caps", "anycase", "full", "other", "words")

    def __init__(self, terms: tuple[str, ...]) -> None:
        self.caps: set[str] = set()  # casefolded; matched only when capitalised in the text
        self.anycase: set[str] = set()  # casefolded single tokens, any case ("jcooper42")
        self.full: dict[str, list[tuple[str, ...]]] = {}  # first word -> word tuples, any case
        self.other: list[tuple[str, str]] = []  # (casefolded term, kind) for the regex path
        for term in terms:
            words = term.split()
            if "@" in term:
                self.other.append((term.casefold(), EMAIL))
                continue
            if not all(_WORD_RE.fullmatch(w) for w in words):
                if len(term) >= 3:
                    self.other.append((term.casefold(), NAME))
            elif len(words) > 1:
                key = words[0].casefold()
                self.full.setdefault(key, []).append(tuple(w.casefold() for w in words))
            elif _PLAIN_WORD.fullmatch(term):
                self.caps.add(term.casefold())  # one-word name: "Will" but not "will"
            elif len(term) >= 3:
                self.anycase.add(term.casefold())
            parts = set(words) if len(words) > 1 else set()
            for w in words:
                parts.update(p for p in w.split("-") if p)
            for part in parts:
                if sum(c.isalpha() for c in part) >= 3 and not (
                    part.islower() and part in _PARTICLES
                ):
                    self.caps.add(part.casefold())
        for seqs in self.full.values():
            seqs.sort(key=len, reverse=True)  # "Jane Mary Cooper" before "Jane Mary"
        self.words = frozenset(self.caps | self.anycase | self.full.keys())
        self.other.sort(key=lambda t: -len(t[0]))

    def __bool__(self) -> bool:
        return bool(self.words or self.other)


@lru_cache(maxsize=4096)
def _known_plan(terms: tuple[str, ...]) -> _KnownPlan:
    return _KnownPlan(terms)


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern[str]:
    body = r"\s+".join(re.escape(w) for w in term.split())
    return re.compile(rf"(?P<ph>{_PLACEHOLDER_ALT})|(?<!\w)(?i:{body})(?!\w)")


def _word_hit(word: str, plan: _KnownPlan) -> bool:
    # A known name part matches in any case ("chen"), except one that is also a common word
    # ("Will" but not "will", "Rose" but not "rose"), which must be capitalised.
    folded = word.casefold()
    return folded in plan.anycase or (
        folded in plan.caps
        and (word[0].isupper() or (folded not in _COMMON_WORDS and folded not in _AMBIGUOUS))
    )


def _full_name_end(text: str, start: int, rest: tuple[str, ...]) -> int:
    """End of ``rest`` words following ``start`` (whitespace-separated, any case), or -1."""
    pos = start
    for w in rest:
        ws = _WS_RE.match(text, pos)
        if ws is None:
            return -1
        pos = ws.end()
        if text[pos : pos + len(w)].casefold() != w:
            return -1
        pos += len(w)
    if pos < len(text) and (text[pos].isalnum() or text[pos] == "_"):
        return -1
    return pos


def _redact_known(text: str, plan: _KnownPlan) -> str:
    folded = text.casefold()
    for term, kind in plan.other:
        if term in folded:
            text = _term_pattern(term).sub(
                lambda m, kind=kind: m.group(0) if m.group("ph") else kind, text
            )
    # Cheap pre-check: most texts never mention the requester.
    if not any(w in folded for w in plan.words):
        return text
    words = plan.words
    out: list[str] = []
    pos = 0
    for m in _WORD_RE.finditer(text):
        word = m.group(0)
        fw = word.casefold()
        if fw not in words and not ("-" in word or "'" in word or "’" in word):
            continue
        start, end = m.span()
        if start < pos:
            continue  # inside a full name already replaced
        if (
            fw in _PLACEHOLDER_WORDS
            and text[start - 1 : start] == "["
            and text[end : end + 1] == "]"
        ):
            continue
        stop = -1
        for seq in plan.full.get(fw, ()):
            stop = _full_name_end(text, end, seq[1:])
            if stop >= 0:
                break
        if stop >= 0:
            out.append(text[pos:start])
            out.append(NAME)
            pos = stop
            continue
        if _word_hit(word, plan):
            out.append(text[pos:start])
            out.append(NAME)
            pos = end
            continue
        if fw not in words:  # "Cooper's" -> Cooper ' s; "Jane-Marie" -> Jane - Marie
            pieces = _WORD_SEP.split(word)
            if any(_word_hit(p, plan) for p in pieces[0::2] if p):
                out.append(text[pos:start])
                out.extend(
                    NAME if i % 2 == 0 and p and _word_hit(p, plan) else p
                    for i, p in enumerate(pieces)
                )
                pos = end
    out.append(text[pos:])
    return "".join(out)


def _known_terms(known: Iterable[str | None] | str | None) -> tuple[str, ...]:
    if known is None:
        return ()
    if isinstance(known, str | bytes) or not isinstance(known, Iterable):
        known = [known]
    terms: set[str] = set()
    for k in known:
        if k is None:
            continue
        t = " ".join(str(k).split())
        if t and t not in PLACEHOLDERS:
            terms.add(t)
    return tuple(sorted(terms))


# ------------------------------------------------------------------------- names in context
# A customer's name is usually not the side-loaded requester's ("Hi, this is Chen Tanaka from
# Acme", "ask my colleague ..."), so names are also found by the forms people introduce and sign
# with: "my name is ...", "this is ..." / "I'm ..." / "I am ..." (capitalised names only: "I am
# unable" stays), "my colleague ..." / "our admin ..." (capitalised), greetings ("Hi Chen,",
# "Dear Ms Tanaka"), sign-offs ("Thanks, Chen", "Best regards,\nChen Tanaka") and signature
# lines after "-- ". Up to three name-like words are taken;
# common words, product and UI words end the run, so "Thanks, Export works now" keeps "Export".
# A lower-case run counts only where the form makes it a name: after "my name is", or when the
# run ends its clause ("hi chen,", "thanks,\nchen").

# Lower-case words that are never names here (function words, words that follow the forms above,
# product / UI vocabulary). Compared casefolded; possessive "'s" stripped first.
_COMMON_TEXT = """
    a about above account accounts actually admin admins after again against all almost also
    always am an and another any anyone anything api app apps are around as asap at away back
    bad be because been before being best better between billing both broken bug bugs busy but
    by can cannot card cc change chart charts chat check colleague colleagues company confused
    contact contacting cs csv currently customer customers dashboard dashboards data day days
    dear desk did do does doing done down during each either else email emails error errors
    even ever every everyone everybody everything export exports failing feature features few
    file files finally finance fine first folks for frustrated from further get getting glad
    go going good great guys had happy has have having he hello help her here hey hi him his
    hope how however i if import imports in in-app info integration integrations into invoice
    invoices is it its it's just last late later let like link log login logged looking lot
    madam many maybe me mobile more morning afternoon evening most much must my myself need new
    next no none nor not nothing now of off ok okay on once one only or other our out over
    page pdf people please plan pretty problem problems quick quickly quite rather re really
    regards report reports request sales same search see seeing seems settings she should
    since sir so some someone something soon sorry still stuck success such support sure sync
    syncing team teams than thank thanks that the their them then there these they thing this
    those though through till to today too trying ui unable under until up upload urgent us
    use used user users using very via wanted was we well were what when where which while
    who why will with within without working would writing yes yet you your yours
    again anyway also although reaching following experiencing facing attaching sending
    calling emailing responding replying apologies assistant alert alerts notification
    notifications sharing invite invites ai settings workspace project projects
    onboarding tab tabs button buttons menu widget widgets filter filters view views
    mr mrs ms miss dr prof
    monday tuesday wednesday thursday friday saturday sunday january february march april
    june july august september october november december
    critical important annoying blocking serious weird strange odd ridiculous unacceptable
    frustrating impossible available aware new old sorry curious concerned worried unsure
    afraid excited interested here's that's there's what's we're they're you're i've i'd
    """
_COMMON_WORDS = frozenset(_COMMON_TEXT.split())
# Words that are also first or last names: names when capitalised, words when not.
_AMBIGUOUS_TEXT = """
    may rose grace mark bill joy faith frank grant long young king rich bell brown green white
    black stone wood hill park field ford hunter will hope summer sky art dawn april june
    august crystal ruby pearl amber iris lily ivy hazel heath rob pat sue dean drew chase
    cooper smith baker miller taylor carter mason fisher porter turner walker butler cook potter
    weaver shepherd gardener marshall clay gray grey lane reed wolf fox
    """
_AMBIGUOUS = frozenset(_AMBIGUOUS_TEXT.split())
_COMMON_WORDS -= _AMBIGUOUS
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "mx", "sir", "madam"})

# A name-like word; "[name]" counts as one, so a run a known term already cut ("My name is
# [name] Sebastiansson", "[name]-[name] Garcia") is still taken whole.
_NAME_TOKEN = re.compile(
    r"(?<![\w\[@./])(?:\[name\]|[^\W\d_]+)"  # a word or a placeholder
    r"(?:['’-](?:\[name\]|[^\W\d_]+))*\.?"  # joined by ' or -, then maybe a dot
)
_GAP = re.compile(r"[ \t]+")
_TERMINATOR = re.compile(r"[ \t]*(?:[,.!:;)]|\r?\n|$)")
_PLACEHOLDER_START = re.compile(rf"[ \t]*(?:{_PLACEHOLDER_ALT})")

# Each form: (kind, pattern). The match ends where the name would start.
# The lookahead (a word start with the first letter of a form, or a dash at a line start) lets
# the scanner skip most positions at once: it more than halves the cost of this pass.
_CONTEXT_RE = re.compile(
    r"""
    (?:\b(?=[bcdghikmorstwy])|(?<![^\n])(?=[-—–]))(?:
    (?P<strong>\bmy[ \t]+name(?:[ \t]+is|'s|’s)[ \t]*[:,-]?[ \t]*)
  | (?P<intro>\b(?:this[ \t]+is|i[ \t]+am|i['’]m|it['’]s)[ \t]+)
  | (?P<role>\b(?:my|our|your)[ \t]+(?:colleague|co-?worker|manager|boss|teammate|admin
        |administrator|assistant|accountant|developer|engineer|cto|ceo|cfo|coo)s?[ \t,]+)
  | (?P<greet>\b(?:hi|hello|hey|dear|greetings|good[ \t]+(?:morning|afternoon|evening))
        [ \t]*[,!]?[ \t]+)
  | (?P<signoff>\b(?:(?:best|kind|warm|warmest|many)[ \t]+(?:regards|wishes|thanks)|regards
        |thanks(?:[ \t]+(?:again|so[ \t]+much|a[ \t]+lot))?|thank[ \t]+you(?:[ \t]+(?:so|very)
        [ \t]+much)?|many[ \t]+thanks|cheers|sincerely|yours(?:[ \t]+(?:truly|sincerely))?|thx)
        (?:[ \t]*[,!.:;-]+[ \t]*(?:\r?\n[ \t]*)?|[ \t]*\r?\n[ \t]*|[ \t]+))
  | (?P<best>\bbest[ \t]*(?:[,!.:-]+[ \t]*(?:\r?\n[ \t]*)?|\r?\n[ \t]*))
  | (?P<sig>(?<![^\n])(?:--|—|–)[ \t]*(?:\r?\n[ \t]*)?)
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def _name_word(tok: str, ambiguous_ok: bool = False) -> str | None:
    """The name part of a token ("Chen's" -> "Chen"), or None when it is a common word (a word
    that is also a name, "smith", counts in lower case only where `ambiguous_ok`)."""
    word = tok.rstrip(".")
    if word[-2:] in ("'s", "’s", "'S", "’S"):
        word = word[:-2]
    if NAME in word:  # already (partly) a placeholder: the rest goes with it
        return word
    folded = word.casefold()
    if not word or folded in _COMMON_WORDS or folded in _PLACEHOLDER_WORDS:
        return None
    if folded in _AMBIGUOUS and not (ambiguous_ok or word[0].isupper()):
        return None
    return word


def _name_run(
    text: str, pos: int, any_case: bool, ambiguous_ok: bool = False
) -> list[tuple[int, int]]:
    """Spans (start, end of the name part) of up to three name words from `pos`, one space or
    tab apart; titles ("Ms", "Dr.") are skipped over and kept."""
    spans: list[tuple[int, int]] = []
    titles = 0
    while len(spans) < 3 and titles < 2:
        m = _NAME_TOKEN.match(text, pos)
        if m is None:
            break
        tok = m.group(0)
        bare = tok.rstrip(".")
        if not spans and bare.casefold() in _TITLES:
            titles += 1
        else:
            if tok.endswith(".") and len(bare) > 1:
                tok = bare  # a sentence end, not an initial
            word = _name_word(tok, ambiguous_ok)
            if word is None or not (any_case or word[0].isupper() or word.startswith(NAME)):
                break
            spans.append((m.start(), m.start() + len(word)))
            # A possessive ("Chen's team") or a sentence end ("... Chen.") ends the run.
            if len(tok) != len(word) and not tok.endswith(".") or len(tok) != len(m.group(0)):
                break
        pos = m.start() + len(tok)
        gap = _GAP.match(text, pos)
        if gap is None:
            break
        pos = gap.end()
    return spans


_FROM_HERE = re.compile(r"[ \t]+(?i:from|here)\b")


def _intro_run(
    text: str, pos: int, any_case: bool, ambiguous_ok: bool = False
) -> list[tuple[int, int]]:
    run = _name_run(text, pos, any_case, ambiguous_ok)
    if run:
        first = text[run[0][0] : run[0][1]].casefold()
        # "I am Getting", "Really", "i am confused" (but "Ahmed", "AHMED" are names)
        if len(first) >= 5 and (
            first.endswith(("ing", "ly")) or (first.endswith("ed") and text[run[0][0]].islower())
        ):
            return []
    return run


def _terminated(text: str, end: int) -> bool:
    return _TERMINATOR.match(text, end) is not None


def _ends_possessive(text: str, end: int) -> bool:
    return text[end : end + 2] in ("'s", "’s")


def _context_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for m in _CONTEXT_RE.finditer(text):
        kind = m.lastgroup
        pos = m.end()
        if kind == "strong":  # "my name is will smith"
            run = _name_run(text, pos, any_case=True, ambiguous_ok=True)
        elif kind == "role":  # "my colleague Johan Sebastiansson": capitalised names only
            run = _intro_run(text, pos, any_case=False)
        elif kind == "intro":
            run = _intro_run(text, pos, any_case=False)
            if all(text.startswith(NAME, a) for a, _ in run):  # only what is already redacted
                run = []
            # "I AM UNABLE": a shouted phrase is not a capitalised name.
            if run and text[run[0][0] : run[0][1]].isupper() and not m.group(0).isupper():
                run = []
            if not run:
                low = _name_run(text, pos, any_case=True, ambiguous_ok=True)
                # "hi, this is chen tanaka from acme": a lower-case run needs "from"/"here" next
                # ("ahmed" is a name there; "this is happening from" is not).
                if (
                    low
                    and _FROM_HERE.match(text, low[-1][1])
                    and not text[low[0][0] : low[0][1]].casefold().endswith(("ing", "ly"))
                ):
                    run = low
        else:  # greet, signoff, best, sig: a lower-case run must end its clause
            # ("thanks,\njane cooper": "cooper" is a name here, as it ends the clause)
            run = _name_run(text, pos, any_case=True, ambiguous_ok=True)
            if run and not (_terminated(text, run[-1][1]) or _ends_possessive(text, run[-1][1])):
                run = _name_run(text, pos, any_case=False)
        if run:  # one placeholder for the whole run: "Chen Tanaka" -> "[name]"
            spans.append((run[0][0], run[-1][1]))
    return spans


def _name_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """`text` with each span (overlaps after the first skipped) replaced by [name]."""
    out: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(NAME)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_context(text: str) -> str:
    spans = _context_spans(text)
    return _name_spans(text, spans) if spans else text


def redact_names(text: str | None) -> str | None:
    """Only the names found by their context (see above); e-mails etc. are left alone."""
    if text is None:
        return None
    return _redact_context(text)


# ------------------------------------------------------------------------------ Presidio (opt)
# Optional second opinion on names: Microsoft Presidio's PERSON recogniser (a spaCy model), used
# only when FEEDBACK_LOOP_PRESIDIO=1 and `presidio-analyzer` is importable (the `presidio` extra).
# Enabled without the package (or without a spaCy model), the rules above still run and one
# warning says why Presidio is not used: redaction never stops a load.
PRESIDIO_ENV = "FEEDBACK_LOOP_PRESIDIO"


def presidio_enabled() -> bool:
    return os.environ.get(PRESIDIO_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=1)
def presidio_analyzer() -> Any | None:
    """The Presidio AnalyzerEngine, or None (with one logged warning) when it cannot be used."""
    try:
        from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]
    except ImportError:
        log.warning(
            "%s=1 but presidio-analyzer is not installed; names are found by the built-in rules "
            "only (install it with: pip install 'feedback-loop[presidio]')",
            PRESIDIO_ENV,
        )
        return None
    try:
        return AnalyzerEngine()
    except Exception as exc:  # e.g. no spaCy model downloaded
        log.warning(
            "%s=1 but Presidio could not start (%s); names are found by the built-in rules only",
            PRESIDIO_ENV,
            type(exc).__name__,
        )
        return None


def _redact_presidio(text: str) -> str:
    analyzer = presidio_analyzer()
    if analyzer is None or not text.strip():
        return text
    hits = analyzer.analyze(text=text, entities=["PERSON"], language="en")
    spans = [
        (h.start, h.end) for h in hits if not any(p in text[h.start : h.end] for p in PLACEHOLDERS)
    ]
    return _name_spans(text, spans)


# ------------------------------------------------------------------------------------------ API
def _apply(text: str, patterns: Iterable[tuple[re.Pattern[str], Replacement]]) -> str:
    for pattern, repl in patterns:
        text = pattern.sub(repl, text)
    return text


def redact_text(text: Any, known: Iterable[str | None] | str | None = ()) -> str | None:
    """Redact PII and secrets from ``text``; ``known`` are the requester's own name / e-mail.

    None in -> None out. Non-strings are stringified; never raises (an internal error returns
    ``"[redacted]"`` rather than the unredacted text).
    """
    if text is None:
        return None
    try:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", errors="replace")
        elif not isinstance(text, str):
            text = str(text)
        plan = _known_plan(_known_terms(known))
        # One pass can expose a match to another (a phone ending where the next "+44 ..." starts
        # is only seen once the first is a placeholder; a name cut out of a long identifier can
        # leave a rest that looks random), so repeat to a fixed point: that is what makes
        # redact(redact(x)) == redact(x). Text without PII takes one pass, with PII usually two.
        for _ in range(_MAX_PASSES):
            new = _one_pass(text, plan)
            if new == text:
                break
            text = new
        if presidio_enabled():
            new = _redact_presidio(text)
            if new != text:
                text = _one_pass(new, plan)
        return text
    except Exception:  # pragma: no cover - defensive: never leak, never break a load
        log.warning("redact_text failed; returning a fully redacted value", exc_info=True)
        return REDACTED


_MAX_PASSES = 4


def _one_pass(text: str, plan: _KnownPlan) -> str:
    text = _apply(text, PATTERNS[:_KNOWN_AT])
    if plan:
        text = _redact_known(text, plan)
    text = _redact_context(text)
    return _apply(text, PATTERNS[_KNOWN_AT:])


def normalise_value(value: str) -> str:
    """Collapse whitespace; e-mail addresses are also lower-cased (``mailto:`` dropped)."""
    v = " ".join(str(value).split())
    if "@" in v and " " not in v:
        v = v.lower().removeprefix("mailto:")
    return v


def person_key(source: str | None, value: str | None, salt: str) -> str | None:
    """Salted sha256 hex of ``source:normalised value``; None / blank value -> None.

    Same layout as the SQL ``person_key`` macro (``sha256(salt || ':' || source || ':' || id)``),
    so a plain id hashes identically through either path.
    """
    if value is None:
        return None
    v = normalise_value(value)
    if not v:
        return None
    return hashlib.sha256(f"{salt}:{source or ''}:{v}".encode()).hexdigest()


# --------------------------------------------------------------------------------------- DuckDB
UDF_NAMES = ("fl_redact", "fl_person_key")


def register_duckdb(con: Any, salt: str) -> None:
    """Create ``fl_redact(VARCHAR, VARCHAR[])`` and ``fl_person_key(VARCHAR, VARCHAR)`` on ``con``.

    Vectorised (Arrow) UDFs with special null handling: ``fl_redact(NULL, ...)`` is NULL,
    ``fl_redact(t, NULL)`` redacts with no known terms, ``fl_person_key(s, NULL)`` is NULL.
    Calling it again replaces the functions (e.g. with another salt).
    """
    import duckdb
    import pyarrow as pa
    from duckdb.func import FunctionNullHandling, PythonUDFType
    from duckdb.sqltypes import VARCHAR

    if not salt:
        raise ValueError("register_duckdb needs a non-empty salt")

    # Arrow UDFs get pyarrow ChunkedArrays and return an Array. Left unannotated: DuckDB evaluates
    # annotations, and pyarrow is imported lazily here.
    def fl_redact(texts, knowns):
        out = [
            redact_text(t, k) for t, k in zip(texts.to_pylist(), knowns.to_pylist(), strict=True)
        ]
        return pa.array(out, type=pa.string())

    def fl_person_key(sources, values):
        out = [
            person_key(s, v, salt)
            for s, v in zip(sources.to_pylist(), values.to_pylist(), strict=True)
        ]
        return pa.array(out, type=pa.string())

    for name in UDF_NAMES:
        with contextlib.suppress(duckdb.InvalidInputException):  # not registered yet
            con.remove_function(name)
    common = {
        "return_type": VARCHAR,
        "type": PythonUDFType.ARROW,
        "null_handling": FunctionNullHandling.SPECIAL,
    }
    con.create_function("fl_redact", fl_redact, [VARCHAR, duckdb.list_type(VARCHAR)], **common)
    con.create_function("fl_person_key", fl_person_key, [VARCHAR, VARCHAR], **common)
