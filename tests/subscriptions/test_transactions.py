"""subscriptions.transactions.transaction against a real Redis: one MULTI/EXEC, whole or nothing,
and with a fence, nothing at all once the fence key holds another value (before the WATCH, or
changed between the check and the EXEC)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import LeaseLost
from upbit_fanout.subscriptions.transactions import transaction

pytestmark = pytest.mark.usefixtures("real_redis_url")


def _names(keys: Keys) -> tuple[str, str, str]:
    return keys.leader, f"{keys.prefix}:tx:set", f"{keys.prefix}:tx:string"


async def test_the_queued_commands_run_as_one_transaction_and_return_their_replies(
    r: aioredis.Redis, keys: Keys
) -> None:
    _, members, text = _names(keys)

    def queue(pipe: Pipeline) -> None:
        pipe.sadd(members, "a", "b")
        pipe.set(text, "x")
        pipe.scard(members)

    assert await transaction(r, queue) == [2, True, 2]
    assert await r.smembers(members) == {b"a", b"b"}
    assert await r.get(text) == b"x"


async def test_a_fenced_transaction_writes_while_the_fence_holds_its_value(
    r: aioredis.Redis, keys: Keys
) -> None:
    leader, members, _ = _names(keys)
    await r.set(leader, b"7 collector-a")

    async def queue(pipe: Pipeline) -> None:  # a coroutine may queue too
        pipe.sadd(members, "a")

    assert await transaction(r, queue, fence=(leader, b"7 collector-a")) == [1]
    assert await r.smembers(members) == {b"a"}


@pytest.mark.parametrize("holder", [b"8 collector-b", None])
async def test_a_fence_holding_another_value_refuses_before_anything_is_queued(
    r: aioredis.Redis, keys: Keys, holder: bytes | None
) -> None:
    leader, members, _ = _names(keys)
    if holder is not None:
        await r.set(leader, holder)
    queued: list[Pipeline] = []

    with pytest.raises(LeaseLost) as caught:
        await transaction(r, queued.append, fence=(leader, b"7 collector-a"))

    assert caught.value.holder == holder  # who holds it now (None: nobody)
    assert queued == []  # queue() never ran: a caller marks nothing for a refused write
    assert await r.exists(members) == 0


async def test_a_fence_changed_between_the_check_and_exec_aborts_the_whole_transaction(
    r: aioredis.Redis, keys: Keys
) -> None:
    leader, members, text = _names(keys)
    await r.set(leader, b"7 collector-a")
    await r.set(text, "before")

    async def queue(pipe: Pipeline) -> None:
        pipe.set(text, "after")
        pipe.sadd(members, "a")
        # Another collector takes over while this one queues (on another connection).
        await r.set(leader, b"8 collector-b")

    with pytest.raises(LeaseLost) as caught:
        await transaction(r, queue, fence=(leader, b"7 collector-a"))

    assert isinstance(caught.value.__cause__, WatchError)  # redis-py's error, wrapped
    assert await r.get(text) == b"before"  # nothing of it was written
    assert await r.exists(members) == 0
    assert await r.get(leader) == b"8 collector-b"


async def test_a_command_refused_inside_exec_raises_redis_error_and_keeps_the_others(
    r: aioredis.Redis, keys: Keys
) -> None:
    _, members, text = _names(keys)
    await r.set(text, "a string")

    def queue(pipe: Pipeline) -> None:
        pipe.sadd(members, "a")
        pipe.sadd(text, "b")  # WRONGTYPE at EXEC time: Redis has no rollback

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await transaction(r, queue)

    assert await r.smembers(members) == {b"a"}
    assert await r.get(text) == b"a string"


async def test_the_pipeline_is_given_back_after_an_abort(r: aioredis.Redis, keys: Keys) -> None:
    leader, members, _ = _names(keys)
    await r.set(leader, b"7 collector-a")

    async def lose(pipe: Pipeline) -> None:
        pipe.sadd(members, "lost")
        await r.set(leader, b"8 collector-b")

    with pytest.raises(LeaseLost):
        await transaction(r, lose, fence=(leader, b"7 collector-a"))
    # The connection that WATCHed is back in the pool without its WATCH: a later transaction
    # on the same client is not aborted by the old one's fence.
    await r.set(leader, b"9 collector-a")

    def win(pipe: Pipeline) -> None:
        pipe.sadd(members, "kept")

    assert await transaction(r, win, fence=(leader, b"9 collector-a")) == [1]
    assert await r.smembers(members) == {b"kept"}
