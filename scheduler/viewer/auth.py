"""The viewer's HTTP basic authentication (``HEARTSEG_VIEWER_AUTH``), refused off loopback without it, as
``heartseg flower`` refuses without ``FLOWER_BASIC_AUTH``."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass

from heartseg.errors import ConfigurationError


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address or ``localhost``) is a loopback interface; ``""`` (every one) is not."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BasicAuth:
    """The accepted ``(user, password)`` pairs."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str, setting: str = "HEARTSEG_VIEWER_AUTH") -> BasicAuth:
        """``user:password``, comma-separated for several users.

        Raises
        ------
        ConfigurationError
            When a pair lacks its user or its password.
        """
        pairs = []
        for pair in text.split(","):
            user, _, password = pair.partition(":")
            if not user or not password:
                raise ConfigurationError(f"{setting} must be user:password (comma-separated for several users)")
            pairs.append((user, password))
        return cls(tuple(pairs))

    def accepts(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries one of the pairs (compared in constant time)."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        found = False
        for known_user, known_password in self.pairs:  # every pair compared: no early exit to time
            user_ok = hmac.compare_digest(user.encode(), known_user.encode())
            password_ok = hmac.compare_digest(password.encode(), known_password.encode())
            found |= user_ok and password_ok
        return found


def basic_header(credentials: str) -> str:
    """The ``Authorization`` header value for ``user:password``."""
    return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")


def viewer_auth(address: str, auth: str | None) -> BasicAuth | None:
    """The viewer's credentials from ``HEARTSEG_VIEWER_AUTH``; None (no login) only on loopback.

    Raises
    ------
    ConfigurationError
        Off loopback without credentials, or credentials that are not ``user:password``.
    """
    if auth:
        return BasicAuth.parse(auth)
    if not is_loopback(address):
        raise ConfigurationError(f"the viewer on {address or 'every interface'} needs HEARTSEG_VIEWER_AUTH="
                                 "user:password; without it, it only listens on 127.0.0.1")
    return None
