"""API keys (hashed, from config or environment), roles, and per-key rate limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.auth import ANONYMOUS, AuthConfig, KeyRing, hash_key
from serve.cli import main
from serve.config import ConfigError, GatewayConfig
from serve.errors import APIError

CLIENT_KEY, ADMIN_KEY = "sk-client-0123456789abcdef", "sk-admin-fedcba9876543210"


def ring(**auth: object) -> KeyRing:
    config = AuthConfig.model_validate(
        {
            "keys": [
                {"name": "web", "sha256": hash_key(CLIENT_KEY)},
                {"name": "ops", "env": "OPS_KEY", "role": "admin"},
            ],
            **auth,
        }
    )
    return KeyRing.build(config, environ={"OPS_KEY": ADMIN_KEY})


def status(call: Callable[[], object]) -> int:
    with pytest.raises(APIError) as caught:
        call()
    return caught.value.status


def test_no_keys_means_an_open_gateway() -> None:
    keys = KeyRing.build(AuthConfig())
    assert keys.open
    assert keys.authenticate(None, admin=True) is ANONYMOUS


def test_keys_are_checked_by_their_hash_and_role() -> None:
    keys = ring()
    assert not keys.open
    assert keys.authenticate(f"Bearer {CLIENT_KEY}").name == "web"
    assert keys.authenticate(f"bearer  {ADMIN_KEY} ", admin=True).role == "admin"
    assert ADMIN_KEY not in repr(keys) and CLIENT_KEY not in repr(keys)  # only hashes kept
    assert status(lambda: keys.authenticate(None)) == 401
    assert status(lambda: keys.authenticate(CLIENT_KEY)) == 401  # no "Bearer"
    assert status(lambda: keys.authenticate("Bearer sk-wrong")) == 401
    assert status(lambda: keys.authenticate("Bearer " + "x" * 10_000)) == 401
    assert status(lambda: keys.authenticate(f"Bearer {CLIENT_KEY}", admin=True)) == 403


def test_errors_name_no_key() -> None:
    with pytest.raises(APIError) as caught:
        ring().authenticate("Bearer sk-guess-1234")
    assert "sk-guess" not in caught.value.message
    assert caught.value.body()["error"]["type"] == "authentication_error"


def test_an_environment_key_must_be_set() -> None:
    config = AuthConfig.model_validate({"keys": [{"name": "dev", "env": "NOT_SET_HERE"}]})
    with pytest.raises(ValueError, match=r"auth\.keys\.0\.env: NOT_SET_HERE is not set"):
        KeyRing.build(config, environ={})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([{"name": "a"}], "exactly one of `sha256`"),
        ([{"name": "a", "sha256": "ABC"}], "64 lowercase hex"),
        ([{"name": "a", "sha256": "0" * 64, "env": "K"}], "exactly one of `sha256`"),
        ([{"name": "a", "sha256": "0" * 64}, {"name": "a", "sha256": "1" * 64}], "used by another"),
        ([{"name": "a b", "sha256": "0" * 64}], "keys.0.name"),
        ([{"name": "a", "sha256": "0" * 64, "role": "root"}], "keys.0.role"),
    ],
)
def test_bad_key_configs_name_the_field(keys: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.for_variants({"auth": {"keys": keys}}, ["v"])


def test_the_same_key_twice_is_refused() -> None:
    config = AuthConfig.model_validate(
        {"keys": [{"name": "a", "sha256": hash_key("k")}, {"name": "b", "env": "K"}]}
    )
    with pytest.raises(ValueError, match="the same key as 'a'"):
        KeyRing.build(config, environ={"K": "k"})


def test_rate_limit_allows_the_burst_then_429_with_retry_after() -> None:
    keys = ring(rate_limit={"requests_per_s": 2, "burst": 3})
    web = keys.authenticate(f"Bearer {CLIENT_KEY}")
    for _ in range(3):
        keys.admit(web, now=100.0)
    with pytest.raises(APIError) as caught:
        keys.admit(web, now=100.0)
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    assert caught.value.body()["error"]["type"] == "rate_limit_error"
    keys.admit(web, now=100.5)  # one token back after 0.5 s at 2/s
    assert status(lambda: keys.admit(web, now=100.5)) == 429


def test_each_key_has_its_own_bucket_and_may_override_the_rate() -> None:
    config = AuthConfig.model_validate(
        {
            "keys": [
                {"name": "web", "sha256": hash_key("a")},
                {"name": "batch", "sha256": hash_key("b"), "rate_limit": {"requests_per_s": 100}},
                {"name": "free", "sha256": hash_key("c")},
            ],
            "rate_limit": {"requests_per_s": 1, "burst": 1},
        }
    )
    keys = KeyRing.build(config)
    web, batch = keys.authenticate("Bearer a"), keys.authenticate("Bearer b")
    keys.admit(web, now=0.0)
    assert status(lambda: keys.admit(web, now=0.0)) == 429
    for _ in range(200):  # its own bucket, its own rate (burst: 2 s of it)
        keys.admit(batch, now=0.0)
    no_default = KeyRing.build(AuthConfig.model_validate({"keys": config.model_dump()["keys"][2:]}))
    free = no_default.authenticate("Bearer c")
    for _ in range(1000):
        no_default.admit(free, now=0.0)


@settings(max_examples=50, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    replicas=st.integers(1, 4),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_a_replica_admits_at_most_its_share(rate: float, replicas: int, gaps: list[float]) -> None:
    config = AuthConfig.model_validate(
        {"keys": [{"name": "k", "sha256": "0" * 64}], "rate_limit": {"requests_per_s": rate}}
    )
    keys = KeyRing.build(config, replicas=replicas)
    principal = keys.principals["0" * 64]
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        try:
            keys.admit(principal, now=now)
            admitted += 1
        except APIError:
            pass
    share = rate / replicas
    capacity = max(1.0, config.rate_limit.capacity / replicas)  # type: ignore[union-attr]
    assert admitted <= capacity + share * now + 1e-9


def test_hash_key_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key", "sk-abc"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-abc")


def test_a_new_config_keeps_the_buckets_of_unchanged_limits() -> None:
    keys = ring(rate_limit={"requests_per_s": 2, "burst": 3})
    web = keys.authenticate(f"Bearer {CLIENT_KEY}")
    for _ in range(3):
        keys.admit(web, now=100.0)
    again = ring(rate_limit={"requests_per_s": 2, "burst": 3}).inherit(keys)
    assert status(lambda: again.admit(web, now=100.0)) == 429  # no fresh burst
    changed = ring(rate_limit={"requests_per_s": 5, "burst": 3}).inherit(keys)
    changed.admit(web, now=100.0)  # a new limit starts full
