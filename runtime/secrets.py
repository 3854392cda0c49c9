"""Secrets: passwords and access tokens from the environment or from secret files.

A secret never comes from the graph file and never travels on a command line (``ps``
shows command lines to every local user). ``GRAPHRUN_<NAME>`` holds it directly, or
``GRAPHRUN_<NAME>_FILE`` names a file that holds it: the way Docker and Kubernetes
mount secrets. The file wins when both are set, so a mounted secret cannot be shadowed
by a stale variable left in an image.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

PREFIX = "GRAPHRUN_"
OPERATOR_TOKEN = "OPERATOR_TOKEN"  # the HTTP access token of the HMI and the gateway


def variable(name: str) -> str:
    """The environment variable that holds secret ``name`` (``operator_token`` -> ``GRAPHRUN_OPERATOR_TOKEN``)."""
    return PREFIX + name.upper().replace("-", "_").replace(".", "_")


def read_secret(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret ``name``, or None when it is not set.

    Raises ConfigError naming the variable when a secret file is named but cannot be read.
    """
    env = os.environ if environ is None else environ
    key = variable(name)
    path = env.get(key + "_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"{key}_FILE={path}: cannot read the secret file: {exc.strerror or exc}") from exc
    return env.get(key) or None


REDIS_USER = "GRAPHRUN_REDIS_USER"  # the Redis ACL user of this process (an agent's: <graph>-<agent>)
REDIS_PASSWORD = "REDIS_PASSWORD"  # its password: GRAPHRUN_REDIS_PASSWORD or the file GRAPHRUN_REDIS_PASSWORD_FILE


def redis_login(*, environ: Mapping[str, str] | None = None) -> tuple[str | None, str] | None:
    """(user, password) this process logs in to Redis with, or None: Redis's default user.

    ``graphrun run --secure`` and ``graphrun compose`` give each agent process its own, in
    its environment; a URL with a password of its own is used as it is.
    """
    env = os.environ if environ is None else environ
    password = read_secret(REDIS_PASSWORD, environ=env)
    if password is None:
        return None
    return env.get(REDIS_USER) or None, password


def operator_token(*, environ: Mapping[str, str] | None = None) -> str | None:
    """The operator's access token for everything on HTTP but the read-only views."""
    return read_secret(OPERATOR_TOKEN, environ=environ)


def token_matches(given: str | None, expected: str | None) -> bool:
    """Whether a presented token is the expected one, in constant time; no token is expected: never."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
