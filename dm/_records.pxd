# cython: language_level=3
"""dm record layouts: the one source of truth (DESIGN.md section 2).

Every record is a fixed-size, little-endian, 8-byte aligned C struct that starts with
Databento's 16-byte RecordHeader. `dm/records.py` mirrors each struct as a numpy dtype and
`tests/test_records.py` checks that sizes and offsets agree.

Units: timestamps are u64 nanoseconds since the UNIX epoch; prices are i64 and sizes u64 in
fixed point at scale 1e-9 (FIXED_SCALE units per 1.0), Databento's convention.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    /* dm record layout version: bump when any struct below changes. */
    #define DM_LAYOUT_VERSION 1
    """
    int DM_LAYOUT_VERSION

# Fixed point: 1.0 == FIXED_SCALE units; FIXED_DECIMALS fractional digits.
cdef enum:
    FIXED_DECIMALS = 9

cdef extern from *:
    """
    #define DM_FIXED_SCALE 1000000000LL
    #define DM_UNDEF_PRICE 0x7FFFFFFFFFFFFFFFLL   /* DBN's UNDEF_PRICE: no price */
    """
    int64_t DM_FIXED_SCALE
    int64_t DM_UNDEF_PRICE

# rtypes: dm's own range 0xE0-0xEF (DBN uses 0x00-0xCF), 0xFF is the ring padding frame.
cdef enum:
    RTYPE_TRADE = 0xE0
    RTYPE_BBO = 0xE1
    RTYPE_DEPTH = 0xE2
    RTYPE_BOOK_DELTA = 0xE3
    RTYPE_BAR = 0xE4
    RTYPE_MBP_EVENT = 0xE5          # DBN market-by-price event (companion of TRADE/BBO/DEPTH)
    RTYPE_PADDING = 0xFF

# Record flags (u8), same bit meanings as DBN's where DBN has one.
cdef enum:
    FLAG_TS_EVENT_IS_RECV = 1 << 0   # venue sent no event time: ts_event is ts_recv
    FLAG_PUBLISHER_SPECIFIC = 1 << 1 # DBN: meaning defined by the publisher
    FLAG_MAYBE_BAD_BOOK = 1 << 2     # DBN: book may be stale/inconsistent (after a gap)
    FLAG_BAD_TS_RECV = 1 << 3        # DBN: ts_recv is not a real receive time
    FLAG_MBP = 1 << 4                # DBN: aggregated price level (market by price)
    FLAG_SNAPSHOT = 1 << 5           # DBN: part of a snapshot (incl. Kraken Futures trade_snapshot)
    FLAG_TOB = 1 << 6                # DBN: top-of-book message
    FLAG_LAST = 1 << 7               # DBN: last record of an event

# Side / aggressor side, DBN chars: 'A' ask/sell, 'B' bid/buy, 'N' none.
cdef enum:
    SIDE_ASK = 65   # 'A'
    SIDE_BID = 66   # 'B'
    SIDE_NONE = 78  # 'N'

# Book delta actions, DBN chars.
cdef enum:
    ACTION_ADD = 65     # 'A' new level
    ACTION_MODIFY = 77  # 'M' size changed
    ACTION_CANCEL = 67  # 'C' level deleted (size 0)
    ACTION_CLEAR = 82   # 'R' clear the book (before a snapshot)
    ACTION_TRADE = 84   # 'T' DBN: a trade
    ACTION_FILL = 70    # 'F' DBN: a fill of a resting order
    ACTION_NONE = 78    # 'N' DBN: no action (e.g. a snapshot/status record)

cdef enum:
    DEPTH_LEVELS = 10

ctypedef struct RecordHeader:       # 16 B
    uint8_t length                  # record size in 4-byte words
    uint8_t rtype
    uint16_t publisher_id
    uint32_t instrument_id
    uint64_t ts_event               # ns since the UNIX epoch, venue event time

ctypedef struct TradeRecord:        # 64 B
    RecordHeader hd
    uint64_t ts_recv                # ns since the UNIX epoch, when the frame was read
    int64_t price                   # 1e-9
    uint64_t size                   # 1e-9
    uint64_t trade_id               # venue trade id (0 when the venue has none)
    uint64_t sequence               # venue sequence (0 when none)
    uint8_t side                    # aggressor side: SIDE_*
    uint8_t flags
    uint8_t _reserved[6]

ctypedef struct BboRecord:          # 80 B
    RecordHeader hd
    uint64_t ts_recv
    int64_t bid_px                  # 1e-9, DM_UNDEF_PRICE when empty
    int64_t ask_px
    uint64_t bid_sz                 # 1e-9
    uint64_t ask_sz
    uint64_t sequence               # venue update id (Binance bookTicker u)
    uint32_t bid_ct                 # order count at the level, 0 when unknown
    uint32_t ask_ct
    uint8_t flags
    uint8_t _reserved[7]

ctypedef struct DepthLevel:         # 32 B
    int64_t bid_px
    int64_t ask_px
    uint64_t bid_sz
    uint64_t ask_sz

ctypedef struct DepthRecord:        # 360 B: top-10 L2 snapshot after a book change
    RecordHeader hd
    uint64_t ts_recv
    uint64_t sequence
    uint8_t flags
    uint8_t n_bid                   # levels present on each side (<= DEPTH_LEVELS)
    uint8_t n_ask
    uint8_t _reserved[5]
    DepthLevel levels[10]

ctypedef struct BookDeltaRecord:    # 56 B: one L2 level change
    RecordHeader hd
    uint64_t ts_recv
    int64_t price
    uint64_t size                   # new size at the level; 0 = level removed
    uint64_t sequence
    uint8_t side                    # SIDE_BID / SIDE_ASK
    uint8_t action                  # ACTION_*
    uint8_t flags
    uint8_t _reserved[5]

ctypedef struct BarRecord:          # 64 B: OHLCV, ts_event is the bar open time
    RecordHeader hd
    int64_t open
    int64_t high
    int64_t low
    int64_t close
    uint64_t volume                 # 1e-9
    uint32_t interval_s             # 60, 3600, 86400
    uint8_t flags
    uint8_t _reserved[3]

ctypedef struct MbpEventRecord:     # 136 B: the event behind a Databento trades/mbp-1/mbp-10 record
    RecordHeader hd                 # same header as the TRADE/BBO/DEPTH record it follows
    uint64_t ts_recv
    int64_t price                   # 1e-9, DM_UNDEF_PRICE when none
    uint64_t size                   # 1e-9 (DBN's u32 count x 1e9, exact)
    uint64_t sequence               # DBN u32 sequence
    int32_t ts_in_delta             # DBN: ns between the venue's send time and ts_recv
    uint8_t action                  # ACTION_* (DBN char: A M C R T F N)
    uint8_t side                    # SIDE_* (side of the order; aggressor for trades)
    uint8_t flags                   # DBN flags byte, unchanged
    uint8_t depth                   # DBN: book level the event touched
    uint32_t bid_ct[10]             # orders per bid level (mbp-1: level 0 only; trades: 0)
    uint32_t ask_ct[10]
