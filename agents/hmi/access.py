"""Who may do what at the HMI: the operator token, and where the page may be seen.

The read-only view (the page, its state and images) is open on this machine; an
HMI listening on any other address shows even that only to a client with the token.
Acknowledging and resetting always need it. A browser presents the token as a bearer
token (the page's own requests) or as the password of HTTP Basic authentication (the
browser asks for it when the whole page needs the token).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

from graphrun import token_matches

#: The secret ``graphrun.operator_token()`` reads, as the HMI's and the gateway's ``Deployment`` name it.
OPERATOR_TOKEN = "operator_token"


def is_local(host: str) -> bool:
    """Whether listening on ``host`` shows the page to this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def presented_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization`` header: ``Bearer TOKEN``, or ``Basic`` with TOKEN as the password."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class Access:
    """The operator token (None: no one may act) and whether the view needs it too."""

    def __init__(self, token: str | None, *, view_needs_token: bool):
        self._token = token
        self.view_needs_token = view_needs_token

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def operator(self, authorization: str | None) -> bool:
        """Whether the request's ``Authorization`` header carries the operator token."""
        return token_matches(presented_token(authorization), self._token)

    def may_view(self, authorization: str | None) -> bool:
        return not self.view_needs_token or self.operator(authorization)
