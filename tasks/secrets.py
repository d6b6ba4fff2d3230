"""Credentials from the environment, or from a Prefect Secret block when one is named."""

from __future__ import annotations

import os

from tasks.settings import ConfigError


def resolve_secret(env_name: str, block: str | None = None, *, required: bool = True) -> str | None:
    """The value of `env_name`, else the Prefect Secret block `block`.

    The value is returned, never logged; errors name the variable/block, not the value.
    """
    value = os.environ.get(env_name)
    if value:
        return value
    if block:
        try:
            from prefect.blocks.system import Secret

            return str(Secret.load(block).get())
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
