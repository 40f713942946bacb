"""API keys and per-key rate limits, as the gateway's `user_config` configures them.

Keys are never stored in plain text: the config holds each key's SHA-256 (`arena-serve hash-key`
prints it), or names an environment variable of the gateway's processes that holds the key, which
is hashed when the config is applied and not kept. A request's `Authorization: Bearer KEY` is
hashed and looked up. API keys are long random strings, so one fast hash is the right tool (as
for GitHub's tokens); a password hash would only slow every request.

Two roles: `client` keys may call the OpenAI routes and send feedback; `admin` keys may also list
experiments and read reports. With no keys configured the gateway is open (a local default), and
says so in its log.

Rate limits are token buckets per key (requests per second, with a burst), kept by each gateway
replica for its share of the traffic: with N replicas each allows 1/N of the rate, which is the
configured rate overall when the load balancer spreads requests evenly.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.errors import APIError

Role = Literal["client", "admin"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
MAX_KEY_CHARS = 512


def hash_key(key: str) -> str:
    """The stored form of an API key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_s: float = Field(gt=0, le=1e6)
    burst: int | None = Field(
        default=None, ge=1, description="Requests allowed at once; default: 2 s of the rate."
    )

    @property
    def capacity(self) -> float:
        """Requests a key may make at once, over all gateway replicas."""
        return float(self.burst if self.burst is not None else math.ceil(2 * self.requests_per_s))


class APIKey(BaseModel):
    """One key: its SHA-256 in the config, or the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Shown in logs and metrics.")
    sha256: str | None = Field(default=None, description="hex SHA-256 of the key")
    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    role: Role = "client"
    rate_limit: RateLimit | None = Field(default=None, description="Overrides the default.")

    @model_validator(mode="after")
    def _one_source(self) -> APIKey:
        if (self.sha256 is None) == (self.env is None):
            raise ValueError("set exactly one of `sha256` (the key's hash) and `env`")
        if self.sha256 is not None and not _HEX64.match(self.sha256):
            raise ValueError("sha256: must be 64 lowercase hex digits (`arena-serve hash-key`)")
        return self


class AuthConfig(BaseModel):
    """`auth` in the gateway's `user_config`."""

    model_config = ConfigDict(extra="forbid")

    keys: list[APIKey] = Field(default_factory=list)
    rate_limit: RateLimit | None = Field(default=None, description="Per key, unless it sets one.")

    @model_validator(mode="after")
    def _unique_names(self) -> AuthConfig:
        check_unique([k.name for k in self.keys], "keys", "key")
        return self


def check_unique(names: list[str], field: str, what: str) -> None:
    """ValueError naming the first entry of `field` whose name an earlier one has."""
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ValueError(f"{field}.{i}.name: {name!r} is used by another {what}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name and role (never the key)."""

    name: str
    role: Role


ANONYMOUS = Principal("anonymous", "admin")  # an open gateway: no keys configured


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class KeyRing:
    """The applied `AuthConfig`: key hashes to principals, and each key's rate-limit bucket."""

    principals: dict[str, Principal] = field(default_factory=dict)
    limits: dict[str, RateLimit] = field(default_factory=dict)
    share: float = 1.0  # this replica's share of each key's rate
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    @classmethod
    def build(
        cls, config: AuthConfig, replicas: int = 1, environ: Mapping[str, str] = os.environ
    ) -> KeyRing:
        """Resolve the config's keys (`ValueError` naming a key whose variable is unset)."""
        principals: dict[str, Principal] = {}
        limits: dict[str, RateLimit] = {}
        for i, key in enumerate(config.keys):
            digest = key.sha256
            if key.env is not None:
                secret = environ.get(key.env)
                if not secret:
                    raise ValueError(
                        f"auth.keys.{i}.env: {key.env} is not set in the gateway's environment"
                    )
                digest = hash_key(secret)
            assert digest is not None
            if digest in principals:
                raise ValueError(f"auth.keys.{i}: the same key as {principals[digest].name!r}")
            principals[digest] = Principal(key.name, key.role)
            limit = key.rate_limit or config.rate_limit
            if limit is not None:
                limits[key.name] = limit
        return cls(principals, limits, 1.0 / max(1, replicas))

    @property
    def open(self) -> bool:
        return not self.principals

    def inherit(self, previous: KeyRing) -> KeyRing:
        """Keep the buckets of keys whose limit did not change: applying a new config (an
        experiment edit) must not hand every key a fresh burst."""
        for name, bucket in previous._buckets.items():
            same = previous.limits.get(name) == self.limits.get(name) is not None
            if same and previous.share == self.share:
                self._buckets[name] = bucket
        return self

    def authenticate(self, authorization: str | None, admin: bool = False) -> Principal:
        """The caller of a request with this `Authorization` header, or 401/403 `APIError`."""
        if self.open:
            return ANONYMOUS
        match = _BEARER.match(authorization or "")
        if match is None or len(match.group(1)) > MAX_KEY_CHARS:
            raise APIError(
                401,
                "missing or malformed API key: send `Authorization: Bearer YOUR_KEY`",
                code="invalid_api_key",
            )
        principal = self.principals.get(hash_key(match.group(1)))
        if principal is None:
            raise APIError(401, "incorrect API key provided", code="invalid_api_key")
        if admin and principal.role != "admin":
            raise APIError(403, "this route needs an admin key", code="insufficient_permissions")
        return principal

    def admit(self, principal: Principal, now: float | None = None) -> None:
        """Take one request from the key's bucket, or raise 429 with `Retry-After`."""
        limit = self.limits.get(principal.name)
        if limit is None:
            return
        now = time.monotonic() if now is None else now
        rate = limit.requests_per_s * self.share
        capacity = max(1.0, limit.capacity * self.share)
        bucket = self._buckets.get(principal.name)
        if bucket is None:
            bucket = self._buckets[principal.name] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / rate
        raise APIError(
            429,
            f"rate limit of key {principal.name!r} reached ({limit.requests_per_s:g} requests/s); "
            f"retry in {wait:.1f} s",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
