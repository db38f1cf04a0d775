"""A simulated exchange account behind the emulator's private streams (myOrder, myAsset).

Pure and deterministic: no sockets, no clock (``now_ms`` comes in), uuids from a seeded
generator. Orders follow Upbit's lifecycles (docs/upbit-protocol.md §4.5, §4.6, §8):

- ``limit`` (price + volume) rests: a ``wait`` event locks the funds; :meth:`Account.on_trade`
  fills it as maker at its own price when the market trades through it (``trade`` events, partial
  fills possible), then ``done``. A limit order that is marketable when placed fills at once as
  taker at the market price. ``time_in_force`` ``ioc``/``fok`` never rest (the unfilled rest is
  cancelled / all or nothing); ``post_only`` is refused if it would take.
- ``price`` (market buy: price = the amount of quote currency to spend) and ``market`` (market
  sell: volume) fill at once against ``market_price`` as taker, ``trade`` then ``done``.
- ``best`` (best-price order, ``ioc`` or ``fok``): a bid spends an amount, an ask sells a volume.

Fees are ``fee_rate`` on the executed funds. A bid reserves its fee up front in the quote currency;
an ask pays it out of the proceeds. Every change of funds emits a ``myAsset`` event listing the
currencies that changed. Balances never go negative; a refused order raises
:class:`OrderRejected` and changes nothing.

All arithmetic is exact ``Decimal`` (a private context with 60 digits), so balances keep the long
decimals Upbit shows (e.g. ``1386929.37231066771348207123``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Context, Decimal, localcontext
from typing import Any, Final

from upbit_fanout.emulator.ticks import is_valid_price, min_order_total, tick_size
from upbit_fanout.subscriptions.errors import UpbitFanoutError

__all__ = ["Account", "OrderRejected", "PrivateEvent"]

PrivateEvent = tuple[str, str | None, dict[str, Any]]
"""``("myOrder", "KRW-BTC", {...})`` or ``("myAsset", None, {...})``."""

_CTX: Final = Context(prec=60)
_ZERO: Final = Decimal(0)
_E8: Final = Decimal("1E-8")
_SIDES: Final = frozenset({"bid", "ask"})
_ORD_TYPES: Final = frozenset({"limit", "price", "market", "best"})
_TIFS: Final = frozenset({"ioc", "fok", "post_only"})

DEFAULT_BALANCES: Final[Mapping[str, Decimal]] = {
    "KRW": Decimal("10000000.38271506438112906"),
    "BTC": Decimal("0.51034872"),
    "ETH": Decimal("3.21987654"),
    "XRP": Decimal("1500.12345678"),
    "USDT": Decimal("1000.004729"),
    "SOL": Decimal("12.5"),
}


class OrderRejected(UpbitFanoutError):
    """The account refused an order or a cancel; nothing changed.

    ``name`` is the Upbit-style error name (``insufficient_funds_bid``, ``under_min_total_ask``,
    ``invalid_price_bid``, ``validation_error``, ``order_not_found``, ...); the message says why.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class _Order:
    __slots__ = (
        "ask",
        "base",
        "code",
        "executed_funds",
        "executed_volume",
        "identifier",
        "locked",
        "ord_type",
        "order_ts",
        "paid_fee",
        "payload",
        "price",
        "quote",
        "remaining_fee",
        "remaining_volume",
        "reserved_fee",
        "state",
        "tif",
        "trades_count",
        "uuid",
        "volume",
    )

    def __init__(
        self,
        *,
        uid: str,
        code: str,
        ask: bool,
        ord_type: str,
        price: Decimal | None,
        volume: Decimal | None,
        identifier: str | None,
        tif: str | None,
        order_ts: int,
    ) -> None:
        self.uuid = uid
        self.code = code
        self.quote, _, self.base = code.partition("-")
        self.ask = ask
        self.ord_type = ord_type
        self.price = price
        self.volume = volume
        self.identifier = identifier
        self.tif = tif
        self.order_ts = order_ts
        self.state = "wait"
        self.remaining_volume: Decimal | None = volume
        self.executed_volume = _ZERO
        self.executed_funds = _ZERO
        self.paid_fee = _ZERO
        self.reserved_fee = _ZERO
        self.remaining_fee = _ZERO
        self.locked = _ZERO
        self.trades_count = 0
        self.payload: dict[str, Any] = {}


def _plain(d: Decimal) -> Decimal:
    """``d`` without trailing zeros and never in exponent form for whole numbers."""
    n = d.normalize(_CTX)
    exponent = n.as_tuple().exponent
    return n.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else n


def _positive(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value > 0


class Account:
    """One user's balances and orders; every method returns the private events it caused."""

    def __init__(
        self,
        *,
        balances: Mapping[str, Decimal] | None = None,
        fee_rate: Decimal = Decimal("0.0005"),
        seed: int = 0,
    ) -> None:
        if not fee_rate.is_finite() or fee_rate < 0:
            raise ValueError(f"fee_rate must be a non-negative Decimal, not {fee_rate!r}")
        source = DEFAULT_BALANCES if balances is None else balances
        self._bal: dict[str, list[Decimal]] = {}
        for currency, amount in source.items():
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"balance of {currency} must be a non-negative Decimal")
            self._bal[currency] = [Decimal(amount), _ZERO]
        self._fee = fee_rate
        self._rng = random.Random(seed)
        self._orders: dict[str, _Order] = {}
        self._open: dict[str, _Order] = {}  # resting orders, in placement order
        self._identifiers: set[str] = set()

    # ---- queries ---------------------------------------------------------------------------

    @property
    def fee_rate(self) -> Decimal:
        return self._fee

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """currency -> (balance, locked)."""
        return {cur: (b[0], b[1]) for cur, b in self._bal.items()}

    def order(self, uuid: str) -> dict[str, Any]:
        """The latest myOrder payload of an order; ``KeyError`` if there is no such order."""
        return dict(self._orders[uuid].payload)

    def open_orders(self, code: str | None = None) -> list[str]:
        """uuids of resting orders (``wait``), oldest first, optionally for one market."""
        return [u for u, o in self._open.items() if code is None or o.code == code]

    def order_record(self, uuid: str) -> dict[str, Any]:
        """An order as Upbit's REST API shows it (``GET /v1/order``): ``market``, ``side``,
        ``ord_type``, ``state`` (``wait``/``done``/``cancel``), exact ``Decimal`` amounts,
        ``created_at`` (ms) and ``updated_at`` (ms of its last event); ``KeyError`` if unknown.

        Unlike :meth:`order`, which is the last myOrder event (a ``trade`` event carries the
        fill's price and volume), this is the order itself."""
        o = self._orders[uuid]
        return {
            "uuid": o.uuid,
            "side": "ask" if o.ask else "bid",
            "ord_type": o.ord_type,
            "price": o.price,
            "state": o.state,
            "market": o.code,
            "created_at": o.order_ts,
            "updated_at": int(o.payload.get("timestamp") or o.order_ts),
            "volume": o.volume,
            "remaining_volume": o.remaining_volume,
            "reserved_fee": o.reserved_fee,
            "remaining_fee": o.remaining_fee,
            "paid_fee": o.paid_fee,
            "locked": o.locked,
            "executed_volume": o.executed_volume,
            "executed_funds": o.executed_funds,
            "trades_count": o.trades_count,
            "time_in_force": o.tif,
            "identifier": o.identifier,
        }

    def order_uuids(self) -> list[str]:
        """Every order's uuid, in placement order."""
        return list(self._orders)

    # ---- commands --------------------------------------------------------------------------

    def place_order(
        self,
        *,
        code: str,
        side: str,
        ord_type: str,
        now_ms: int,
        market_price: Decimal,
        price: Decimal | None = None,
        volume: Decimal | None = None,
        identifier: str | None = None,
        time_in_force: str | None = None,
        available_volume: Decimal | None = None,
    ) -> tuple[str, list[PrivateEvent]]:
        """Place an order; returns its uuid and the events (``OrderRejected`` if refused).

        ``market_price`` is where the market trades now (the simulation's last price); taker
        fills happen there. ``available_volume`` (optional) caps how much the book offers a
        taker at that price, to exercise ``ioc`` (partial) and ``fok`` (nothing); by default
        the book is deep enough.
        """
        with localcontext(_CTX):
            ask = self._validate(
                code=code,
                side=side,
                ord_type=ord_type,
                market_price=market_price,
                price=price,
                volume=volume,
                identifier=identifier,
                tif=time_in_force,
            )
            quote, _, base = code.partition("-")
            fee = self._fee
            # what this order locks, and where
            if ord_type == "limit":
                assert price is not None
                assert volume is not None
                reserved_fee = _ZERO if ask else price * volume * fee
                lock = volume if ask else price * volume + reserved_fee
            elif ord_type == "price" or (ord_type == "best" and not ask):
                assert price is not None
                reserved_fee = price * fee
                lock = price + reserved_fee
            else:  # market sell, best ask
                assert volume is not None
                reserved_fee = _ZERO
                lock = volume
            lock_cur = base if ask else quote
            have = self._bal.get(lock_cur, [_ZERO, _ZERO])[0]
            if have < lock:
                side_name = "ask" if ask else "bid"
                raise OrderRejected(
                    f"insufficient_funds_{side_name}",
                    f"{lock_cur} available {have} is less than the {lock} this order needs",
                )
            if ord_type == "limit" and time_in_force == "post_only":
                assert price is not None
                if (ask and price <= market_price) or (not ask and price >= market_price):
                    raise OrderRejected(
                        "validation_error",
                        "a post_only order must not take liquidity: price it away from the market",
                    )

            # accepted: from here on nothing raises
            o = _Order(
                uid=self._uuid(),
                code=code,
                ask=ask,
                ord_type=ord_type,
                price=price,
                volume=volume,
                identifier=identifier,
                tif=time_in_force,
                order_ts=now_ms,
            )
            o.reserved_fee = reserved_fee
            o.remaining_fee = reserved_fee
            o.locked = lock
            self._orders[o.uuid] = o
            if identifier is not None:
                self._identifiers.add(identifier)
            bal = self._bal.setdefault(lock_cur, [_ZERO, _ZERO])
            bal[0] -= lock
            bal[1] += lock

            events: list[PrivateEvent] = []
            immediate = ord_type != "limit" or time_in_force in ("ioc", "fok")
            if not immediate:
                events.append(self._order_event(o, now_ms))
                events.append(self._asset_event((lock_cur,), now_ms))
            marketable = ord_type != "limit" or (
                (ask and price is not None and price <= market_price)
                or (not ask and price is not None and price >= market_price)
            )
            if not marketable:
                if immediate:  # ioc/fok limit that cannot take: cancelled at once
                    events.extend(self._finish(o, "cancel", now_ms, report=False))
                else:
                    self._open[o.uuid] = o
                return o.uuid, events

            # taker fill at the market price, as far as the book allows
            full = self._taker_volume(o, market_price)
            fill = full
            if available_volume is not None and available_volume < full:
                fill = (
                    _ZERO
                    if time_in_force == "fok"
                    else max(_ZERO, available_volume.quantize(_E8, rounding=ROUND_DOWN))
                )
            if fill > 0:
                events.extend(self._fill(o, market_price, fill, now_ms, maker=False))
            if not immediate and o.remaining_volume:  # a plain limit order: the rest rests
                self._open[o.uuid] = o
                return o.uuid, events
            complete = fill > 0 and fill == full
            # an order that never showed its lock (immediate, nothing filled) shows no release
            events.extend(
                self._finish(o, "done" if complete else "cancel", now_ms, report=fill > 0)
            )
            return o.uuid, events

    def cancel_order(self, uuid: str, *, now_ms: int) -> list[PrivateEvent]:
        """Cancel a resting order: a ``cancel`` event and the released funds."""
        o = self._orders.get(uuid)
        if o is None:
            raise OrderRejected("order_not_found", f"there is no order {uuid}")
        if uuid not in self._open:
            raise OrderRejected(
                "order_not_found", f"order {uuid} is {o.state}, not waiting: nothing to cancel"
            )
        with localcontext(_CTX):
            return self._finish(o, "cancel", now_ms)

    def on_trade(
        self, code: str, price: Decimal, volume: Decimal, *, now_ms: int
    ) -> list[PrivateEvent]:
        """A market trade happened: fill resting orders it crosses, as maker at their price.

        A bid fills when the market trades at or below its price, an ask at or above; the
        trade's volume is shared among them oldest first.
        """
        events: list[PrivateEvent] = []
        left = volume
        with localcontext(_CTX):
            for o in [o for o in self._open.values() if o.code == code]:
                if left <= 0:
                    break
                assert o.price is not None
                assert o.remaining_volume is not None
                crosses = price >= o.price if o.ask else price <= o.price
                if not crosses:
                    continue
                fill = min(o.remaining_volume, left)
                left -= fill
                events.extend(self._fill(o, o.price, fill, now_ms, maker=True))
                if o.remaining_volume == 0:
                    events.extend(self._finish(o, "done", now_ms))
        return events

    def random_activity(
        self, codes: Sequence[str], prices: Mapping[str, Decimal], *, now_ms: int
    ) -> list[PrivateEvent]:
        """One small action so a private stream has traffic: cancel an order or place one.

        Orders are small (a few times the minimum total) limit orders 0.5-3 % away from the
        market, so they rest, and now and then a small market buy. Never raises: an action the
        account cannot afford is skipped (empty list).
        """
        rng = self._rng
        if self._open and (rng.random() < 0.35 or len(self._open) >= 6):
            uid = rng.choice(list(self._open))
            return self.cancel_order(uid, now_ms=now_ms)
        candidates = [c for c in codes if _positive(prices.get(c))]
        if not candidates:
            return []
        code = rng.choice(candidates)
        mp = prices[code]
        quote, _, base = code.partition("-")
        total = min_order_total(quote) * Decimal(rng.choice((2, 3, 5)))
        try:
            with localcontext(_CTX):
                r = rng.random()
                if r < 0.1:  # a small market buy
                    return self.place_order(
                        code=code,
                        side="bid",
                        ord_type="price",
                        now_ms=now_ms,
                        market_price=mp,
                        price=total,
                    )[1]
                ask = r < 0.5 and self._bal.get(base, [_ZERO])[0] > 0
                away = Decimal(rng.randint(5, 30)) / 1000
                target = mp * (1 + away) if ask else mp * (1 - away)
                tick = tick_size(code, target)
                steps = (target / tick).to_integral_value(
                    rounding=ROUND_CEILING if ask else ROUND_FLOOR
                )
                limit = steps * tick
                if limit <= 0:
                    return []
                vol = (total / limit).quantize(_E8, rounding=ROUND_UP)
                return self.place_order(
                    code=code,
                    side="ask" if ask else "bid",
                    ord_type="limit",
                    now_ms=now_ms,
                    market_price=mp,
                    price=_plain(limit),
                    volume=vol,
                )[1]
        except OrderRejected:
            return []

    # ---- internals -------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _validate(
        self,
        *,
        code: str,
        side: str,
        ord_type: str,
        market_price: Decimal,
        price: Decimal | None,
        volume: Decimal | None,
        identifier: str | None,
        tif: str | None,
    ) -> bool:
        quote, dash, base = code.partition("-")
        if not dash or not quote or not base or code != code.upper():
            raise OrderRejected("validation_error", f"market {code!r} is not QUOTE-BASE")
        if side not in _SIDES:
            raise OrderRejected("validation_error", f"side must be 'bid' or 'ask', not {side!r}")
        if ord_type not in _ORD_TYPES:
            raise OrderRejected(
                "validation_error",
                f"ord_type must be one of limit, price, market, best, not {ord_type!r}",
            )
        if tif is not None and tif not in _TIFS:
            raise OrderRejected(
                "validation_error", f"time_in_force must be ioc, fok or post_only, not {tif!r}"
            )
        if not _positive(market_price):
            raise OrderRejected("validation_error", "there is no market price to trade against")
        if identifier is not None and identifier in self._identifiers:
            raise OrderRejected(
                "validation_error", f"identifier {identifier!r} was used before; use a new one"
            )
        ask = side == "ask"
        side_name = side
        if ord_type == "limit":
            if not _positive(price) or not _positive(volume):
                raise OrderRejected(
                    "validation_error", "a limit order needs a positive price and volume"
                )
            assert price is not None
            assert volume is not None
            if not is_valid_price(code, price):
                raise OrderRejected(
                    f"invalid_price_{side_name}",
                    f"{price} is not on {code}'s price grid (step {tick_size(code, price)})",
                )
            self._check_volume(volume)
            self._check_total(quote, price * volume, side_name)
        elif ord_type == "price":
            if ask or volume is not None or not _positive(price):
                raise OrderRejected(
                    "validation_error",
                    "a price (market buy) order is a bid with a positive price (the amount to "
                    "spend) and no volume",
                )
            assert price is not None
            if tif is not None:
                raise OrderRejected("validation_error", "a price order takes no time_in_force")
            self._check_total(quote, price, side_name)
        elif ord_type == "market":
            if not ask or price is not None or not _positive(volume):
                raise OrderRejected(
                    "validation_error",
                    "a market (market sell) order is an ask with a positive volume and no price",
                )
            assert volume is not None
            if tif is not None:
                raise OrderRejected("validation_error", "a market order takes no time_in_force")
            self._check_volume(volume)
            self._check_total(quote, volume * market_price, side_name)
        else:  # best
            if tif not in ("ioc", "fok"):
                raise OrderRejected(
                    "validation_error", "a best order needs time_in_force ioc or fok"
                )
            if ask:
                if price is not None or not _positive(volume):
                    raise OrderRejected(
                        "validation_error", "a best ask needs a positive volume and no price"
                    )
                assert volume is not None
                self._check_volume(volume)
                self._check_total(quote, volume * market_price, side_name)
            else:
                if volume is not None or not _positive(price):
                    raise OrderRejected(
                        "validation_error",
                        "a best bid needs a positive price (the amount to spend) and no volume",
                    )
                assert price is not None
                self._check_total(quote, price, side_name)
        return ask

    @staticmethod
    def _check_volume(volume: Decimal) -> None:
        exponent = volume.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -8 and volume != volume.quantize(_E8):
            raise OrderRejected("invalid_volume", f"volume {volume} has more than 8 decimals")

    @staticmethod
    def _check_total(quote: str, total: Decimal, side: str) -> None:
        minimum = min_order_total(quote)
        if total < minimum:
            raise OrderRejected(
                f"under_min_total_{side}",
                f"the order total {total} {quote} is under the minimum of {minimum} {quote}",
            )

    def _taker_volume(self, o: _Order, market_price: Decimal) -> Decimal:
        """How much a taker order would buy or sell at ``market_price`` with its funds."""
        if o.ord_type == "price" or (o.ord_type == "best" and not o.ask):
            assert o.price is not None
            return (o.price / market_price).quantize(_E8, rounding=ROUND_DOWN)
        assert o.remaining_volume is not None
        return o.remaining_volume

    def _fill(
        self, o: _Order, price: Decimal, volume: Decimal, now_ms: int, *, maker: bool
    ) -> list[PrivateEvent]:
        """Execute ``volume`` at ``price``: move funds, update the order, emit trade + asset."""
        fee_rate = self._fee
        funds = price * volume
        fee = funds * fee_rate
        quote = self._bal.setdefault(o.quote, [_ZERO, _ZERO])
        base = self._bal.setdefault(o.base, [_ZERO, _ZERO])
        o.executed_volume += volume
        o.executed_funds += funds
        o.paid_fee += fee
        o.trades_count += 1
        if o.ask:
            base[1] -= volume
            quote[0] += funds - fee
            assert o.remaining_volume is not None
            o.remaining_volume -= volume
            o.locked = o.remaining_volume
        elif o.ord_type == "limit":
            assert o.price is not None
            assert o.remaining_volume is not None
            portion = o.price * volume * (1 + fee_rate)  # the lock this volume held
            quote[1] -= portion
            quote[0] += portion - funds - fee  # a taker fill below the limit gives change
            base[0] += volume
            o.remaining_volume -= volume
            o.remaining_fee = o.remaining_volume * o.price * fee_rate
            o.locked = o.remaining_volume * o.price + o.remaining_fee
        else:  # price / best bid: spend from the lock, the rest goes back when it finishes
            quote[1] -= funds + fee
            base[0] += volume
            o.locked -= funds + fee
            o.remaining_fee = o.reserved_fee - o.paid_fee
        o.state = "trade"
        payload = self._order_payload(o, now_ms, fill=(self._uuid(), price, volume, fee, maker))
        o.payload = payload
        o.state = "wait"
        return [
            ("myOrder", o.code, payload),
            self._asset_event((o.quote, o.base), now_ms),
        ]

    def _finish(
        self, o: _Order, state: str, now_ms: int, *, report: bool = True
    ) -> list[PrivateEvent]:
        """End an order as ``done`` or ``cancel``; release whatever it still locks (and say so
        in a myAsset event if ``report``)."""
        self._open.pop(o.uuid, None)
        release = o.locked
        cur = o.base if o.ask else o.quote
        o.state = state
        if state == "done":
            o.locked = _ZERO
            o.remaining_fee = _ZERO
            payload = self._order_payload(o, now_ms)
        else:  # Upbit's cancel frame still shows what was locked; remaining_fee goes to 0
            o.remaining_fee = _ZERO
            payload = self._order_payload(o, now_ms)
            o.locked = _ZERO
        o.payload = payload
        events: list[PrivateEvent] = [("myOrder", o.code, payload)]
        if release > 0:
            bal = self._bal.setdefault(cur, [_ZERO, _ZERO])
            bal[1] -= release
            bal[0] += release
            if report:
                events.append(self._asset_event((cur,), now_ms))
        return events

    def _order_event(self, o: _Order, now_ms: int) -> PrivateEvent:
        o.payload = self._order_payload(o, now_ms)
        return ("myOrder", o.code, o.payload)

    def _order_payload(
        self,
        o: _Order,
        now_ms: int,
        *,
        fill: tuple[str, Decimal, Decimal, Decimal, bool] | None = None,
    ) -> dict[str, Any]:
        avg = (
            _plain((o.executed_funds / o.executed_volume).quantize(_E8))
            if o.executed_volume
            else _ZERO
        )
        if fill is not None:
            trade_uuid, price, volume, trade_fee, maker = fill
            p: Decimal | None = price
            v: Decimal | None = volume
        else:
            p, v = o.price, o.volume
        return {
            "type": "myOrder",
            "code": o.code,
            "uuid": o.uuid,
            "ask_bid": "ASK" if o.ask else "BID",
            "order_type": o.ord_type,
            "state": o.state,
            "trade_uuid": trade_uuid if fill is not None else None,
            "price": p,
            "avg_price": avg,
            "volume": v,
            "remaining_volume": o.remaining_volume,
            "executed_volume": o.executed_volume,
            "trades_count": o.trades_count,
            "reserved_fee": o.reserved_fee,
            "remaining_fee": o.remaining_fee,
            "paid_fee": o.paid_fee,
            "locked": o.locked,
            "executed_funds": o.executed_funds,
            "time_in_force": o.tif,
            "trade_fee": trade_fee if fill is not None else None,
            "is_maker": maker if fill is not None else None,
            "identifier": o.identifier,
            "smp_type": None,
            "prevented_volume": _ZERO,
            "prevented_locked": _ZERO,
            "trade_timestamp": now_ms if fill is not None else None,
            "order_timestamp": o.order_ts,
            "timestamp": now_ms,
        }

    def _asset_event(self, currencies: Sequence[str], now_ms: int) -> PrivateEvent:
        seen: list[str] = []
        for cur in currencies:
            if cur not in seen:
                seen.append(cur)
        assets = [
            {"currency": cur, "balance": self._bal[cur][0], "locked": self._bal[cur][1]}
            for cur in seen
        ]
        return (
            "myAsset",
            None,
            {
                "type": "myAsset",
                "asset_uuid": self._uuid(),
                "assets": assets,
                "asset_timestamp": now_ms,
                "timestamp": now_ms,
            },
        )
