"""A simulated order book and how a taker changes it (emulator.book), from tables.

Every case is written for the ask side (a buyer consumes the best ask) and checked for both
sides: the bid side's case is its mirror image (prices reflected around 7,000 KRW, where the
grid's tick is 5 KRW on both sides of the tables' prices), since both sides follow one code path.
"""

from __future__ import annotations

import pytest

from upbit_fanout.emulator.book import (
    BOOK_DEPTH,
    P_FOLLOW,
    P_REFILL,
    Level,
    OrderBook,
    draw_size,
)
from upbit_fanout.emulator.fixedpoint import SCALE, size_text
from upbit_fanout.emulator.protocol import BookUnits
from upbit_fanout.emulator.ticks import KRW_GRID

LEVEL_SIZE = 1_000
BITS = 7  # the scripted 12 random bits: every new level has draw_size(LEVEL_SIZE, BITS) units
NEW = draw_size(LEVEL_SIZE, BITS)
OLD = 5 * SCALE  # the size of the levels a table starts with
MIRROR = 14_000  # the bid side's prices are MIRROR - the ask side's (KRW)


def make_book(
    asks: list[int], bids: list[int], *, target: int = 2, spread: int = 10, gap: int = 1
) -> OrderBook:
    """A KRW book with levels at ``asks`` and ``bids`` (KRW), each of OLD units."""
    book = OrderBook()
    book.grid = KRW_GRID
    book.price_decimals = {}
    book.price_texts = {}
    book.level_size = LEVEL_SIZE
    book.level_gap_ticks = gap
    book.usual_spread_ticks = spread
    book.target_ask_levels = book.target_bid_levels = target
    book.group_seed = 0
    book.book_timestamp = 0
    book.asks = [book.new_level(p * SCALE, OLD) for p in asks]
    book.bids = [book.new_level(p * SCALE, OLD) for p in bids]
    book.book_cache = None
    return book


def sides(book: OrderBook) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(asks, bids)`` as ``(price KRW, size units)``, checking every level's texts."""
    for level in (*book.asks, *book.bids):
        assert level.price_text == str(KRW_GRID.fmt(level.price))
        assert level.size_text == size_text(level.size)
    return (
        [(lvl.price // SCALE, lvl.size) for lvl in book.asks],
        [(lvl.price // SCALE, lvl.size) for lvl in book.bids],
    )


def with_cache(book: OrderBook) -> tuple[Level, Level, int, int, int, int, BookUnits]:
    """Mark ``book`` as rendered (as if its units were cached) and return the cache."""
    cache = (book.asks[0], book.bids[0], 0, 0, 0, 0, BookUnits(("0", "0", "0", "0"), ()))
    book.book_cache = cache
    return cache


class Scripted:
    """A ``random()`` that returns ``values`` in order (and fails if asked for more)."""

    def __init__(self, values: list[float]) -> None:
        self.left = list(values)

    def __call__(self) -> float:
        return self.left.pop(0)


def bits(k: int) -> int:
    assert k == 12
    return BITS


Side = list[tuple[int, int]]

# (case, asks, bids, sweep, random draws, asks after, bids after, target levels) for a buyer
# consuming the best ask (KRW prices; the tick is 5 KRW here and in the mirror image)
TAKE_TABLE: list[tuple[str, list[int], list[int], bool, list[float], Side, Side, int]] = [
    (
        "follow: a bid steps up one tick behind the new best ask",
        [6010, 6020, 6030],
        [6000, 5990],
        False,
        [P_FOLLOW - 0.01],
        [(6020, OLD), (6030, OLD)],
        [(6015, NEW), (6000, OLD), (5990, OLD)],
        2,
    ),
    (
        "refill: the level comes back at its price with a new size",
        [6010, 6020, 6030],
        [6000, 5990],
        False,
        [P_FOLLOW + 0.01],
        [(6010, NEW), (6020, OLD), (6030, OLD)],
        [(6000, OLD), (5990, OLD)],
        2,
    ),
    (
        "no refill during a sweep, and a usual spread is left alone",
        [6010, 6020, 6030],
        [6000, 5990],
        True,
        [P_FOLLOW + 0.01],
        [(6020, OLD), (6030, OLD)],
        [(6000, OLD), (5990, OLD)],
        2,
    ),
    (
        "neither follow nor refill, and a usual spread is left alone",
        [6010, 6020, 6030],
        [6000, 5990],
        False,
        [P_FOLLOW + P_REFILL + 0.01],
        [(6020, OLD), (6030, OLD)],
        [(6000, OLD), (5990, OLD)],
        2,
    ),
    (
        "refill behind: a side short of its target gets a level 1-3 ticks behind its last",
        [6010, 6020, 6030],
        [6000, 5990],
        False,
        [0.99, 0.9],  # 1 + int(0.99 * 3) = 3 ticks behind 6030; then nothing (usual spread)
        [(6020, OLD), (6030, OLD), (6045, NEW)],
        [(6000, OLD), (5990, OLD)],
        3,
    ),
    (
        "a follow after a refill behind",
        [6010, 6020],
        [6000, 5990],
        False,
        [0.0, 0.1],  # one tick behind 6020, then the bids follow
        [(6020, OLD), (6025, NEW)],
        [(6015, NEW), (6000, OLD), (5990, OLD)],
        2,
    ),
]


def mirror(levels: Side) -> Side:
    return [(MIRROR - p, s) for p, s in levels]


@pytest.mark.parametrize("ask", [True, False], ids=["buyer takes the ask", "seller the bid"])
@pytest.mark.parametrize("row", TAKE_TABLE, ids=[row[0] for row in TAKE_TABLE])
def test_take_best_level_on_either_side(
    ask: bool, row: tuple[str, list[int], list[int], bool, list[float], Side, Side, int]
) -> None:
    case, asks, bids, sweep, draws, asks_after, bids_after, target = row
    gap = 3 if target == 3 else 1
    if ask:
        book = make_book(asks, bids, target=target, gap=gap)
        want = (asks_after, bids_after)
    else:  # the mirror image: the seller consumes the best bid
        book = make_book(
            [MIRROR - p for p in bids], [MIRROR - p for p in asks], target=target, gap=gap
        )
        want = (mirror(bids_after), mirror(asks_after))
    with_cache(book)
    random = Scripted(draws)
    book.take_best_level(ask, sweep, random, bits)
    assert sides(book) == want, case
    assert random.left == []
    assert book.book_cache is None  # the book's structure changed: no reuse of its units


@pytest.mark.parametrize(
    ("asks", "bids", "draws", "asks_after", "bids_after"),
    [
        ([6100], [6000], [0.2], [(6100, OLD)], [(6090, NEW), (6000, OLD)]),  # a bid steps up
        ([6100], [6000], [0.7], [(6010, NEW), (6100, OLD)], [(6000, OLD)]),  # an ask steps down
        ([6010], [6000], [], [(6010, OLD)], [(6000, OLD)]),  # the usual spread (2 ticks)
        ([6010], [], [], [(6010, OLD)], []),  # no bids: nothing to tighten against
    ],
)
def test_tighten_leaves_the_usual_spread(
    asks: list[int], bids: list[int], draws: list[float], asks_after: Side, bids_after: Side
) -> None:
    book = make_book(asks, bids, spread=2)
    random = Scripted(draws)
    book.tighten(random, bits)
    assert sides(book) == (asks_after, bids_after)
    assert random.left == []


@pytest.mark.parametrize("ask", [True, False])
def test_insert_level_only_inside_the_spread(ask: bool) -> None:
    book = make_book([5010, 5020], [5000, 4990])
    before = sides(book)
    for price in (5010, 5020, 5000, 4990, 0):  # on or beyond a best price: nothing
        book.insert_level(ask, price * SCALE, bits)
    assert sides(book) == before
    book.insert_level(ask, 5005 * SCALE, bits)
    asks, bids = sides(book)
    assert ((asks if ask else bids)[0]) == (5005, NEW)
    assert (bids if ask else asks) == (before[1] if ask else before[0])


@pytest.mark.parametrize("ask", [True, False])
def test_insert_level_trims_a_side_grown_past_its_target(ask: bool) -> None:
    deep = 8  # target 2 + 6: one more level is trimmed from the back
    asks = [5100 + 10 * i for i in range(deep)]
    bids = [4900 - 10 * i for i in range(deep)]
    book = make_book(asks, bids, target=2)
    book.insert_level(ask, (5050 if ask else 4950) * SCALE, bits)
    got_asks, got_bids = sides(book)
    side = got_asks if ask else got_bids
    assert len(side) == deep
    assert side[0] == ((5050 if ask else 4950), NEW)
    assert side[-1][0] == (asks if ask else bids)[-2]


def test_append_level_stops_at_the_bottom_of_the_grid() -> None:
    book = make_book([5010], [])
    book.bids = [book.new_level(1, OLD)]  # the lowest price there is
    book.append_level(False, 1, Scripted([0.5]), bits)
    assert [lvl.price for lvl in book.bids] == [1]


@pytest.mark.parametrize("ask", [True, False])
def test_append_level_keeps_the_cached_book_only_beyond_its_depth(ask: bool) -> None:
    shallow = make_book([5010, 5020], [5000, 4990])
    with_cache(shallow)
    shallow.append_level(ask, (5020 if ask else 4990) * SCALE, Scripted([0.0]), bits)
    assert shallow.book_cache is None  # the new level is one of the rendered units
    asks = [5010 + 5 * i for i in range(BOOK_DEPTH)]
    bids = [5000 - 5 * i for i in range(BOOK_DEPTH)]
    deep = make_book(asks, bids)
    cache = with_cache(deep)
    deep.append_level(ask, (asks[-1] if ask else bids[-1]) * SCALE, Scripted([0.0]), bits)
    assert deep.book_cache is cache  # beyond the depth: the rendered units did not change
    assert len(deep.asks if ask else deep.bids) == BOOK_DEPTH + 1


def test_draw_size_is_heavy_tailed_around_the_typical_size_and_never_zero() -> None:
    sizes = sorted(draw_size(1024, b) for b in range(4096))
    assert sizes[0] >= 8
    assert sizes[-1] <= 1024 * 300
    assert 700 < sizes[2048] < 1400  # the median is about the typical size
    assert sizes[-41] > 10 * 1024  # the top 1% are ten times it or more
    assert draw_size(0, 5) == 1
