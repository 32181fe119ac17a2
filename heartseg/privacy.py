"""Pseudonymous study identifiers: a keyed hash instead of the identifier, when a key is set."""

from __future__ import annotations

import hashlib
import hmac


def pseudonym(identifier: str, key: str | None) -> str:
    """``identifier`` itself without a key; with one, ``anon-`` + 16 hex digits of HMAC-SHA256(key, identifier).

    The same identifier and key always give the same pseudonym, so reruns and runs compare in SQL.
    """
    if not key:
        return identifier
    digest = hmac.new(key.encode(), identifier.encode(), hashlib.sha256).hexdigest()
    return f"anon-{digest[:16]}"
