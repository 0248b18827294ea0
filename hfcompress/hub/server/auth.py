"""Users, tokens, orgs and who may see / write what."""

from __future__ import annotations

import argparse
import hashlib
import hmac
from dataclasses import dataclass, field


@dataclass
class User:
    name: str
    token: str
    orgs: list[str] = field(default_factory=list)

    def can_write(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


def parse_token_spec(spec: str) -> User:
    """``USER:TOKEN[:ORG,ORG...]`` -> :class:`User`."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"bad --token {parts[0]!r}...: expected USER:TOKEN[:ORG,ORG...]")
    orgs = [o for o in (parts[2].split(",") if len(parts) == 3 else []) if o]
    return User(parts[0], parts[1], orgs)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


class TokenTable:
    """Token -> user, compared in constant time against *every* known token (no dict lookup on
    the secret, no early exit; digests make every comparison the same length)."""

    def __init__(self, users: list[User]):
        self._entries = [(_digest(u.token), u) for u in users]

    def lookup(self, token: str) -> User | None:
        given = _digest(token)
        found: User | None = None
        for digest, user in self._entries:
            if hmac.compare_digest(given, digest) and found is None:
                found = user
        return found


def can_read(meta: dict | None, repo_id: str, user: User | None) -> bool:
    """Public repos are readable by anyone; private ones by their namespace's user / org members."""
    if meta is None:
        return False
    return not meta.get("private") or (user is not None and user.can_write(repo_id.split("/")[0]))
