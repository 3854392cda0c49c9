"""Security on both sides of a connection: policies, certificates from files, and the
user name and password, which come from secrets (``<secret>_user``, ``<secret>_password``
through graphrun.read_secret), never from the graph."""

from __future__ import annotations

from typing import Any

from asyncua import Server, ua
from asyncua.crypto import security_policies
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from graphrun import read_secret

from .params import Security

_POLICIES = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
}


def policy_class(name: str) -> type[security_policies.SecurityPolicy]:
    """The client side's policy class of a policy name."""
    return _POLICIES[name]


def credentials(secret: str) -> tuple[str | None, str | None]:
    """(user, password) from the secrets ``<secret>_user`` and ``<secret>_password``."""
    return read_secret(f"{secret}_user"), read_secret(f"{secret}_password")


class OneUser(UserManager):
    """Accepts the one user name and password given, nobody else (no anonymous session)."""

    def __init__(self, user: str, password: str):
        self._user, self._password = user, password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username == self._user and password == self._password:
            return User(role=UserRole.User)
        return None


def new_server(user: str | None, password: str | None) -> Server:
    """A server that takes only ``user`` with ``password`` when both are given, anyone otherwise."""
    return Server(user_manager=OneUser(user, password) if user and password else None)


async def secure_server(server: Server, security: Security | None, *, users: bool) -> None:
    """Offer only the configured policy (with this side's certificate and key), and only
    user-name sessions when ``users``; call between ``init`` and ``start``."""
    if security is not None and security.policy != "None":
        await server.load_certificate(str(security.certificate))
        await server.load_private_key(str(security.private_key), password=read_secret("opcua_key_password"))
        name = f"{security.policy.replace('_', '')}_{security.mode}"
        server.set_security_policy([getattr(ua.SecurityPolicyType, name)])
    if users:
        server.set_security_IDs(["Username"])
