"""subscriptions.connection: every URL form the project accepts, parsed without a server."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from upbit_fanout.subscriptions.connection import (
    ClusterURL,
    SentinelURL,
    cluster_of,
    is_cluster_url,
    is_sentinel_url,
    parse_cluster_url,
    parse_sentinel_url,
    redis_from_url,
)
from upbit_fanout.subscriptions.redact import redact_url

GOOD = [
    (
        "redis+sentinel://127.0.0.1:26379/mymaster",
        SentinelURL(sentinels=(("127.0.0.1", 26379),), service_name="mymaster"),
    ),
    (
        "redis+sentinel://a:1,b:2,c/svc/3",
        SentinelURL(sentinels=(("a", 1), ("b", 2), ("c", 26379)), service_name="svc", db=3),
    ),
    (
        "redis+sentinel://bot:p%40ss@h:5000/svc?sentinel_password=s3&sentinel_username=sen",
        SentinelURL(
            sentinels=(("h", 5000),),
            service_name="svc",
            username="bot",
            password="p@ss",
            sentinel_username="sen",
            sentinel_password="s3",
        ),
    ),
    (
        "rediss+sentinel://:pw@[::1]:26380/svc?db=2",
        SentinelURL(sentinels=(("::1", 26380),), service_name="svc", db=2, password="pw", ssl=True),
    ),
]


@pytest.mark.parametrize(("url", "expected"), GOOD)
def test_sentinel_urls_parse(url: str, expected: SentinelURL) -> None:
    assert is_sentinel_url(url)
    assert parse_sentinel_url(url) == expected


BAD = [
    ("redis+sentinel:///mymaster", "names its Sentinels"),
    ("redis+sentinel://h:26379", "names the monitored service"),
    ("redis+sentinel://h:26379/", "names the monitored service"),
    ("redis+sentinel://h:99999/svc", "port is a number from 1 to 65535"),
    ("redis+sentinel://h:x/svc", "port is a number"),
    ("redis+sentinel://h/svc/zero", "database after the service name is a number"),
    ("redis+sentinel://h/svc/0/extra", "/service_name or /service_name/db"),
    ("redis+sentinel://h/svc?timeout=1", "unknown Sentinel URL parameter"),
    ("redis://h/0", r"starts with redis\+sentinel://"),
]


@pytest.mark.parametrize(("url", "message"), BAD)
def test_bad_sentinel_urls_say_what_would_be_right(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_a_password_never_appears_in_a_parse_error_or_repr() -> None:
    with pytest.raises(ValueError, match="is a number") as info:
        parse_sentinel_url("redis+sentinel://u:hunter2@h:1/svc/notadb")
    assert "hunter2" not in str(info.value)
    parsed = parse_sentinel_url("redis+sentinel://u:hunter2@h:1/svc?sentinel_password=hunter3")
    assert "hunter2" not in repr(parsed)
    assert "hunter3" not in repr(parsed)


def test_plain_urls_are_redis_py_s_own() -> None:
    assert not is_sentinel_url("redis://localhost:6379/0")
    assert not is_sentinel_url("unix:///tmp/redis.sock?db=1")
    client = redis_from_url("redis://localhost:6380/4")
    assert isinstance(client, Redis)
    assert client.connection_pool.connection_kwargs["port"] == 6380
    assert client.connection_pool.connection_kwargs["db"] == 4


async def test_a_sentinel_client_asks_for_the_named_service_and_closes_its_sentinels() -> None:
    client = redis_from_url(
        "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/5", socket_connect_timeout=0.2
    )
    pool = client.connection_pool
    assert pool.service_name == "svc"  # type: ignore[attr-defined, unused-ignore]
    assert pool.connection_kwargs["db"] == 5
    assert pool.connection_kwargs["password"] == "pw"
    await client.aclose()  # no Sentinel answers: closing must still not raise or leak


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6380/2", "redis://user:***@host:6380/2"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (
            "redis+sentinel://:s3cret@h1:26379,h2:26380/mymaster/0",
            "redis+sentinel://:***@h1:26379,h2:26380/mymaster/0",
        ),
        (
            "redis+sentinel://h1,h2/mymaster?sentinel_password=s3cret",
            "redis+sentinel://h1,h2/mymaster?sentinel_password=***",
        ),
        (
            "redis+cluster://u:s3cret@h1:7000,h2:7001/",
            "redis+cluster://u:***@h1:7000,h2:7001/",
        ),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://h1:7000,h2:7001/", ClusterURL((("h1", 7000), ("h2", 7001)))),
        ("redis+cluster://h1", ClusterURL((("h1", 6379),))),
        ("redis+cluster://h1:7000/0", ClusterURL((("h1", 7000),))),
        (
            "rediss+cluster://u:p%40ss@[::1]:7000/",
            ClusterURL((("::1", 7000),), username="u", password="p@ss", ssl=True),
        ),
    ],
)
def test_cluster_urls_parse(url: str, expected: ClusterURL) -> None:
    assert parse_cluster_url(url) == expected
    assert is_cluster_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster:///", "names at least one node"),
        ("redis+cluster://h1:7000/1", "only database 0"),
        ("redis+cluster://h1:99999/", "port is a number from 1 to 65535"),
        ("redis+cluster://h1:7000/?db=1", "takes no parameters"),
        ("redis://h1:7000/", r"starts with redis\+cluster://"),
    ],
)
def test_bad_cluster_urls_say_what_would_be_right(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)


def test_a_cluster_url_makes_a_cluster_client_and_no_password_shows() -> None:
    client = redis_from_url("redis+cluster://user:s3cret@127.0.0.1:7000,127.0.0.1:7001/")
    assert cluster_of(client) is not None
    assert "s3cret" not in repr(parse_cluster_url("redis+cluster://u:s3cret@h:1/"))
    with pytest.raises(ValueError, match="database 0") as caught:
        parse_cluster_url("redis+cluster://u:s3cret@h:1/5")
    assert "s3cret" not in str(caught.value)
    assert cluster_of(redis_from_url("redis://127.0.0.1:7000/0")) is None
