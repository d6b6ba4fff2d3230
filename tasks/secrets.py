"""Credentials from the environment, or from a Prefect Secret block when one is named."""

from __future__ import annotations

import base64
import functools
import os
import threading
from urllib.parse import quote, quote_plus

from tasks.settings import ConfigError


def resolve_secret(env_name: str, block: str | None = None, *, required: bool = True) -> str | None:
    """The value of `env_name`, else the Prefect Secret block `block`.

    The value is returned, never logged, and registered for masking (`register_secret`);
    errors name the variable/block, not the value.
    """
    value = os.environ.get(env_name)
    if value:
        register_secret(value)
        return value
    if block:
        try:
            from prefect.blocks.system import Secret

            value = str(Secret.load(block).get())
            register_secret(value)
            return value
        except Exception as exc:  # the block API raises ValueError / HTTP errors
            raise ConfigError(
                f"secret block {block!r} could not be loaded ({type(exc).__name__}); "
                f"create it in Prefect or set {env_name}"
            ) from None
    if required:
        raise ConfigError(
            f"missing credential: set {env_name}"
            + (f" or create the Prefect Secret block {block!r}" if block else "")
        )
    return None


# ---------------------------------------------------------------------------------------------
# Registry: every credential resolved here or handed to an HttpClient, in every form it can
# take in a server's echo, so masking (tasks.clients.http.mask_text) can hide it anywhere.

_MIN_LEN = 6  # shorter values would shred ordinary words
GRAM = 12  # any run of this many characters of a long form is masked (cut excerpts)
_lock = threading.Lock()
# Copy-on-write, so masking (every log line, every error) reads it without a lock or a copy.
_registry: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def _b64_cores(raw: bytes) -> set[str]:
    """The base64 text of `raw` that does not depend on what surrounds it, for each of the
    three alignments it can have inside a longer encoded string (e.g. `email/token:secret`)."""
    cores: set[str] = set()
    for pad in range(3):
        total = pad + len(raw)
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        core = enc[(0, 2, 3)[pad] : 4 * (total // 3)]
        if core:
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


@functools.lru_cache(maxsize=4096)
def secret_forms(value: str) -> tuple[frozenset[str], frozenset[str]]:
    """(whole forms, GRAM-long runs) of a secret: as is, stripped, URL-encoded, JSON-escaped
    and base64-encoded (every alignment, standard and URL-safe alphabet)."""
    plain = {value, value.strip()}
    texts = set(plain)
    for v in plain:
        texts |= {quote(v, safe=""), quote_plus(v), v.replace("/", "\\/")}
        texts |= _b64_cores(v.encode())
    forms = frozenset(t for t in texts if len(t) >= _MIN_LEN)
    grams = frozenset(
        t[i : i + GRAM] for t in forms if len(t) >= GRAM for i in range(len(t) - GRAM + 1)
    )
    return forms, grams


def register_secret(*values: str | None) -> None:
    """Remember credentials (a token, a password, a `user:password` pair) so every masked log
    line and error text hides them in any form. Values shorter than 6 characters are ignored."""
    global _registry
    for value in values:
        if not value or len(value.strip()) < _MIN_LEN:
            continue
        forms, grams = secret_forms(value)
        with _lock:
            have_forms, have_grams = _registry
            if not forms <= have_forms:
                _registry = (have_forms | forms, have_grams | grams)


def registered_forms() -> tuple[frozenset[str], frozenset[str]]:
    """(whole forms, GRAM-long runs) of every registered secret."""
    return _registry
