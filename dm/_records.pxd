# cython: language_level=3
"""dm record layouts: the one source of truth (DESIGN.md section 2).

Every record is a fixed-size, little-endian, 8-byte aligned C struct that starts with
Databento's 16-byte RecordHeader. `dm/records.py` mirrors each struct as a numpy dtype and
`tests/test_records.py` checks that sizes and offsets agree.

Units: timestamps are u64 nanoseconds since the UNIX epoch (UNDEF_TIMESTAMP when none); prices
are i64 fixed point at scale 1e-9 (DM_FIXED_SCALE units per 1.0, Databento's convention).

Sizes are u64 integers in units of 10**-size_precision of the instrument's base unit, where
``size_precision`` (0..18) is a property of the instrument, chosen once when it is registered from
the venue's own size precision (lot/step decimals) and kept in the instrument registry, in each
channel's header and in every record that carries a size (the ``size_precision`` byte). A single
1e-9 scale cannot hold real markets: u64 at 1e-9 stops at 1.8e10 units, below meme-coin trades
and book levels (PEPE, SHIB, BONK); at the venue's precision 10**15 units fit with room to spare.
Every size must also be <= i64 max (it is stored in a BIGINT): a value that is not is rejected
for that value alone. Databento records keep DBN's native sizes (counts, size_precision 0).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    /* dm record layout version: bump when any struct below changes. */
    #define DM_LAYOUT_VERSION 2
    """
    int DM_LAYOUT_VERSION

# Fixed point: 1.0 == FIXED_SCALE units; FIXED_DECIMALS fractional digits.
cdef enum:
    FIXED_DECIMALS = 9

cdef extern from *:
    """
    #define DM_FIXED_SCALE 1000000000LL
    #define DM_UNDEF_PRICE 0x7FFFFFFFFFFFFFFFLL   /* DBN's UNDEF_PRICE: no price */
    #define DM_UNDEF_TIMESTAMP 0xFFFFFFFFFFFFFFFFULL   /* DBN's UNDEF_TIMESTAMP: no time */
    """
    int64_t DM_FIXED_SCALE
    int64_t DM_UNDEF_PRICE
    uint64_t DM_UNDEF_TIMESTAMP

# rtypes: dm's own range 0xE0-0xEF (DBN uses 0x00-0xCF), 0xFF is the ring padding frame.
cdef enum:
    RTYPE_TRADE = 0xE0
    RTYPE_BBO = 0xE1
    RTYPE_DEPTH = 0xE2
    RTYPE_BOOK_DELTA = 0xE3
    RTYPE_BAR = 0xE4
    RTYPE_MBP_EVENT = 0xE5          # DBN market-by-price event (companion of TRADE/BBO/DEPTH)
    RTYPE_GAP = 0xE6                # a lost window: the gap ledger travels as records
    RTYPE_STATISTICS = 0xE7         # DBN StatMsg layout: mark/index price, funding, open interest...
    RTYPE_INSTRUMENT_DEF = 0xE8     # instrument registration and definition (tick, lot, expiry...)
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
    MAX_SIZE_PRECISION = 18

# InstrumentDefRecord.flags
cdef enum:
    INSTRUMENT_INVERSE = 1 << 0     # quoted in the quote currency, margined/settled in the base
    INSTRUMENT_LINEAR = 1 << 1      # derivatives settled in the quote currency

# GapRecord.units: what first_missing / last_missing count.
cdef enum:
    GAP_UNITS_SEQUENCE = 0          # venue sequence / update ids (inclusive range)
    GAP_UNITS_NS = 1                # ns since the UNIX epoch (inclusive window)

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
    uint8_t size_precision          # size is in units of 10**-size_precision
    uint8_t _reserved[5]

ctypedef struct BboRecord:          # 80 B
    RecordHeader hd
    uint64_t ts_recv
    int64_t bid_px                  # 1e-9, DM_UNDEF_PRICE when empty
    int64_t ask_px
    uint64_t bid_sz                 # 10**-size_precision
    uint64_t ask_sz
    uint64_t sequence               # venue update id (Binance bookTicker u)
    uint32_t bid_ct                 # order count at the level, 0 when unknown
    uint32_t ask_ct
    uint8_t flags
    uint8_t size_precision
    uint8_t _reserved[6]

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
    uint8_t size_precision
    uint8_t _reserved[4]
    DepthLevel levels[10]

ctypedef struct BookDeltaRecord:    # 56 B: one L2 level change
    RecordHeader hd
    uint64_t ts_recv
    int64_t price
    uint64_t size                   # new size at the level (10**-size_precision); 0 = removed
    uint64_t sequence
    uint8_t side                    # SIDE_BID / SIDE_ASK
    uint8_t action                  # ACTION_*
    uint8_t flags
    uint8_t size_precision
    uint8_t _reserved[4]

ctypedef struct BarRecord:          # 72 B: OHLCV, ts_event is the start of the bar's interval
    RecordHeader hd
    int64_t open                    # 1e-9
    int64_t high
    int64_t low
    int64_t close
    uint64_t volume                 # sum of trade sizes, 10**-size_precision
    uint32_t interval_s             # 1, 60, 3600, 86400
    uint32_t count                  # trades in the bar (0 when the source does not say: DBN)
    uint8_t flags
    uint8_t size_precision
    uint8_t _reserved[6]

ctypedef struct MbpEventRecord:     # 136 B: the event behind a Databento trades/mbp-1/mbp-10 record
    RecordHeader hd                 # same header as the TRADE/BBO/DEPTH record it follows
    uint64_t ts_recv
    int64_t price                   # 1e-9, DM_UNDEF_PRICE when none
    uint64_t size                   # DBN's native u32 count (size_precision 0)
    uint64_t sequence               # DBN u32 sequence
    int32_t ts_in_delta             # DBN: ns between the venue's send time and ts_recv
    uint8_t action                  # ACTION_* (DBN char: A M C R T F N)
    uint8_t side                    # SIDE_* (side of the order; aggressor for trades)
    uint8_t flags                   # DBN flags byte, unchanged
    uint8_t depth                   # DBN: book level the event touched
    uint32_t bid_ct[10]             # orders per bid level (mbp-1: level 0 only; trades: 0)
    uint32_t ask_ct[10]

ctypedef struct GapRecord:          # 136 B: one entry of the gap ledger (a lost window)
    RecordHeader hd                 # instrument_id 0: every instrument of the publisher;
                                    # ts_event = detected_ns
    uint64_t ts_recv                # ns since the epoch when the loss was detected
    uint64_t first_missing          # inclusive, in `units`
    uint64_t last_missing
    uint8_t units                   # GAP_UNITS_SEQUENCE | GAP_UNITS_NS
    uint8_t flags
    uint8_t _reserved[6]
    char kind[24]                   # NUL-padded ASCII: "restart", "reconnect", "kraken.checksum"...
    char detail[64]                 # NUL-padded UTF-8, truncated

ctypedef struct StatRecord:         # 80 B: DBN v3 StatMsg layout with a dm rtype
    RecordHeader hd
    uint64_t ts_recv
    uint64_t ts_ref                 # reference time of the value (DBN), UNDEF_TIMESTAMP when none
    int64_t price                   # 1e-9, UNDEF_PRICE when the stat has no price
    int64_t quantity                # 10**-size_precision (DBN: native), INT64_MAX when none
    uint32_t sequence
    int32_t ts_in_delta
    uint16_t stat_type              # DBN StatType (1..) or dm's own (1000..): dm.records.StatType
    uint16_t channel_id
    uint8_t update_action           # 1 new, 2 delete (DBN)
    uint8_t stat_flags              # DBN; dm liquidations: side char ('A' sell, 'B' buy)
    uint8_t size_precision          # dm (DBN reserved byte)
    uint8_t _reserved[17]

ctypedef struct InstrumentDefRecord:  # 256 B: an instrument's registration and definition
    RecordHeader hd                 # ts_event: when the definition was received
    uint64_t ts_recv
    int64_t min_price_increment     # tick size, 1e-9; UNDEF_PRICE when unknown
    int64_t display_factor          # 1e-9 (DBN), UNDEF_PRICE when unknown
    int64_t lot_size                # size step, 10**-size_precision; 0 when unknown
    int64_t contract_multiplier     # 1e-9: units of the underlying per contract; UNDEF_PRICE when none
    int64_t strike_price            # 1e-9, UNDEF_PRICE when none
    uint64_t expiration             # ns since the epoch, UNDEF_TIMESTAMP when none
    uint64_t activation             # ns since the epoch, UNDEF_TIMESTAMP when none
    uint8_t size_precision          # the instrument's size scale (see the module docstring)
    uint8_t price_precision         # decimals the venue quotes prices with (informational)
    uint8_t instrument_class        # DBN InstrumentClass char; dm: 'W' perpetual swap
    uint8_t flags                   # INSTRUMENT_INVERSE...
    uint8_t _reserved[4]
    char symbol[48]                 # canonical symbol, NUL-padded
    char exchange[24]
    char raw_symbol[48]             # the venue's own symbol
    char underlying[24]
    char base[12]                   # base asset / currency
    char quote[12]                  # quote (settlement) currency
