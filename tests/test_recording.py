"""dm.recording on the real cryptofeed recordings: grammar, exact texts, split-session merge,
venue detection, and the fault-injection copies other tests build on."""
from __future__ import annotations

import collections
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dm.errors import RecordingError
from dm.recording import (
    Corrupt,
    Drop,
    Event,
    Insert,
    Move,
    Replace,
    Swap,
    detect_venue,
    expand_paths,
    find_lines,
    format_event,
    frames,
    iter_file,
    parse_line,
    read_file,
    read_recording,
    venue_of_url,
    write_modified_recording,
    ws_sessions,
)

ALL_TEXT_FILES = [
    "binance/BINANCE-b38f7c.0",
    "binance/2021-08-14/BINANCE.ws.1.0",
    "binance/2021-08-14/BINANCE.http.0.0",
    "binance/2021-08-14/BINANCE.0",
    "binance/2021-10-12/BINANCE.ws.1.0",
    "binance/2021-10-12/BINANCE.http.0.0",
    "binance/2021-10-12/BINANCE.0",
    "kraken/KRAKEN-c197c0.0",
    "kraken/KRAKEN-4b7396.0",
    "kraken/KRAKEN-82ac16.0",
    "kraken/KRAKEN.0",
    "kraken_futures/KRAKEN_FUTURES.ws.1.0",
    "kraken_futures/KRAKEN_FUTURES.0",
]


def _stream_type(text: str) -> str:
    return re.match(r'\{"stream":"[^@"]+@([^"]+)"', text).group(1)


def test_binance_single_file_session_counts(data_dir):
    evs = read_recording(data_dir / "binance/BINANCE-b38f7c.0")
    kinds = collections.Counter(e.kind for e in evs)
    assert kinds == {"config": 1, "connect": 1, "frame": 11357, "rest": 10}  # README section 2
    assert [e.kind for e in evs[:2]] == ["config", "connect"]
    assert evs[1].url.startswith("wss://stream.binance.com:9443/stream?streams=btcaud@bookTicker/")
    assert evs[1].ts_text == "1617647602.623478" and evs[1].ts == 1617647602.623478
    types = collections.Counter(_stream_type(t) for _, t in frames(data_dir / "binance/BINANCE-b38f7c.0"))
    assert types == {"bookTicker": 5408, "depth@100ms": 4709, "aggTrade": 1240}
    rest = [e for e in evs if e.kind == "rest"]
    assert rest[0].url == "https://www.binance.com/api/v1/depth?symbol=ZILUSDT&limit=1000"
    assert rest[0].ts_text == "1617647603.8164911"
    assert rest[0].text.startswith('{"lastUpdateId":499822895,"bids":[["0.21436000","5897.80000000"]')
    assert rest[0].line == 6 and rest[0].source.endswith("BINANCE-b38f7c.0")
    # the recorder's TS never goes backwards in this file
    ts = [e.ts for e in evs if e.ts is not None]
    assert ts == sorted(ts)


@pytest.mark.parametrize("name", ALL_TEXT_FILES)
def test_every_line_round_trips_byte_exact(data_dir, name):
    """Every event re-formats to its line exactly: TS text, URLs and frame texts are kept verbatim."""
    path = data_dir / name
    raw = path.read_bytes().split(b"\n")
    evs = read_file(path)
    assert evs, name
    for ev in evs:
        assert format_event(ev).encode() == raw[ev.line - 1]
    non_blank = [i + 1 for i, ln in enumerate(raw) if ln]
    assert [e.line for e in evs] == non_blank


def test_ts_ns_is_exact_from_text():
    ev = parse_line("1617647603.4249449: {}")
    assert ev.ts_ns == 1617647603_424944900
    assert parse_line("1633998512.86375: x").ts_ns == 1633998512_863750000
    assert parse_line("1617666424: x").ts_ns == 1617666424_000000000


def test_split_session_is_merged_by_ts(data_dir):
    folder = data_dir / "binance/2021-08-14"
    evs = read_recording(folder)
    kinds = collections.Counter(e.kind for e in evs)
    assert kinds == {"rest": 5, "config": 1, "connect": 1, "frame": 1003}
    # X.0: exchangeInfo response (received before the websocket opened), then its configuration line
    assert evs[0].kind == "rest" and evs[0].url == "https://api.binance.com/api/v3/exchangeInfo"
    assert evs[1].kind == "config"
    ts = [e.ts for e in evs if e.ts is not None]
    assert ts == sorted(ts)
    # each file keeps its own line order
    by_file = collections.defaultdict(list)
    for e in evs:
        by_file[e.source].append(e.line)
    assert all(lines == sorted(lines) for lines in by_file.values())
    # the 4 depth snapshots sit between frames, at the moment they were received
    snaps = [i for i, e in enumerate(evs) if e.kind == "rest" and "/depth?" in e.url]
    assert len(snaps) == 4 and all(0 < i < len(evs) - 1 for i in snaps)
    for i in snaps:
        assert evs[i - 1].ts <= evs[i].ts <= evs[i + 1].ts
    # same events as reading the files one by one
    assert sorted(evs, key=lambda e: (e.source, e.line)) == sorted(
        (e for f in expand_paths(folder) for e in read_file(f)), key=lambda e: (e.source, e.line)
    )


def test_expand_paths_takes_rotation_files_only(data_dir):
    files = expand_paths(data_dir / "binance")
    assert [f.name for f in files] == ["BINANCE-b38f7c.0"]
    assert [f.name for f in expand_paths(data_dir / "kraken_futures")] == ["KRAKEN_FUTURES.0", "KRAKEN_FUTURES.ws.1.0"]
    with pytest.raises(RecordingError):
        expand_paths(data_dir / "databento")


@pytest.mark.parametrize(
    "path,venue",
    [
        ("binance/BINANCE-b38f7c.0", "binance"),
        ("binance/2021-10-12", "binance"),
        ("kraken", "kraken"),
        ("kraken/KRAKEN.0", "kraken"),
        ("kraken_futures", "kraken_futures"),
    ],
)
def test_detect_venue(data_dir, path, venue):
    assert detect_venue(read_recording(data_dir / path)) == venue


def test_venue_of_url():
    assert venue_of_url("wss://stream.binance.com:9443/stream?streams=a@b") == "binance"
    assert venue_of_url("https://api.binance.com/api/v3/exchangeInfo") == "binance"
    assert venue_of_url("wss://ws.kraken.com") == "kraken"
    assert venue_of_url("https://api.kraken.com/0/public/AssetPairs") == "kraken"
    assert venue_of_url("wss://futures.kraken.com/ws/v1") == "kraken_futures"
    assert venue_of_url("https://futures.kraken.com/derivatives/api/v3/instruments") == "kraken_futures"
    assert venue_of_url("wss://example.com/kraken.com") is None
    with pytest.raises(RecordingError):
        detect_venue([Event("frame", 1.0, "1.0", "", "{}", "x", 1)])


def test_ws_sessions_kraken_three_connections(data_dir):
    sessions = ws_sessions(read_recording(data_dir / "kraken"))
    assert len(sessions) == 3
    by_file = {s.source.rsplit("/", 1)[1]: s for s in sessions}
    book = by_file["KRAKEN-c197c0.0"]
    assert book.venue == "kraken" and book.url == "wss://ws.kraken.com"
    assert len(book.frames) == 14636 and len(book.sent) == 1
    assert '"subscription":{"name":"book","depth":1000}' in book.sent[0].text
    assert sum('"event":"heartbeat"' in e.text for e in book.frames) == 119
    assert len(by_file["KRAKEN-4b7396.0"].frames) == 152
    assert len(by_file["KRAKEN-82ac16.0"].frames) == 142
    fut = ws_sessions(read_recording(data_dir / "kraken_futures"))
    assert len(fut) == 1 and fut[0].venue == "kraken_futures" and len(fut[0].sent) == 3
    assert len(fut[0].frames) == 7175


# ------------------------------------------------------------------ grammar errors

BAD_LINES = [
    "garbage without separator",
    "abc: {}",  # frame whose TS is not a number
    "1.2.3: {}",
    "wss://ws.kraken.com <> 1617666422.6",
    "wss://ws.kraken.com <- 1617666422.6 no colon",
    "wss://ws.kraken.com <-> not-a-ts",
    "https://api.kraken.com/0/public/AssetPairs 1618678132.358447: {}",
    "https://api.kraken.com/0/public/AssetPairs -> 1618678132.358447 {}",
    "configuration: {not json",
]


@pytest.mark.parametrize("bad", BAD_LINES)
def test_grammar_error_names_file_and_line(data_dir, tmp_path, bad):
    dst = write_modified_recording(data_dir / "kraken/KRAKEN-82ac16.0", tmp_path / "K.0", [Insert(40, bad)])
    with pytest.raises(RecordingError, match=rf"^{re.escape(str(dst))}:40: "):
        read_recording(dst)


def test_blank_line_only_at_end(data_dir, tmp_path):
    src = data_dir / "binance/2021-10-12/BINANCE.http.0.0"  # ends with an empty line: fine
    assert len(read_file(src)) == 4
    dst = write_modified_recording(src, tmp_path / "B.0", [Insert(3, "")])
    with pytest.raises(RecordingError, match=r":3: blank line"):
        read_file(dst)


def test_not_utf8_and_missing_file(tmp_path):
    p = tmp_path / "X.0"
    p.write_bytes(b"1.5: \xff\xfe\n")
    with pytest.raises(RecordingError, match="not UTF-8"):
        read_file(p)
    with pytest.raises(RecordingError, match="no such recording"):
        read_file(tmp_path / "missing.0")


def test_line_separators_inside_json_do_not_split(tmp_path):
    p = tmp_path / "X.0"
    p.write_text('1.5: {"a":"x\u2028y\u0085z\rw"}\n2.5: {}\n', encoding="utf-8", newline="")
    evs = read_file(p)
    assert [e.text for e in evs] == ['{"a":"x\u2028y\u0085z\rw"}', "{}"]


# ------------------------------------------------------------------ write_modified_recording


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["binance/BINANCE-b38f7c.0", "kraken_futures/KRAKEN_FUTURES.0", "binance/2021-10-12/BINANCE.http.0.0"])
def test_no_edit_copy_is_identical(data_dir, tmp_path, name):
    dst = write_modified_recording(data_dir / name, tmp_path / "copy.0", [])
    assert _sha(dst) == _sha(data_dir / name)


def test_edits_refer_to_source_lines(data_dir, tmp_path):
    src = data_dir / "kraken/KRAKEN-82ac16.0"
    orig = read_file(src)
    byline = {e.line: e for e in orig}
    trade_lines = find_lines(src, '"trade","XBT/USD"]')
    assert len(trade_lines) == 7  # README: XBT/USD 22 trades in 7 messages
    a, b, c = trade_lines[:3]
    dst = write_modified_recording(
        src,
        tmp_path / "K.0",
        [Drop(a), Swap(b, c), Replace(10, "1617666423.5: {\"event\":\"heartbeat\"}"), ("insert", 5, "1617666423.2: injected"),
         Corrupt(trade_lines[3]), Move(trade_lines[4], 4)],
    )
    got = read_file(dst)
    texts = [e.text for e in got]
    assert byline[a].text not in texts
    assert texts.index(byline[c].text) < texts.index(byline[b].text)
    assert "injected" in texts and texts.index("injected") == texts.index(byline[5].text) - 1
    assert texts.count(byline[trade_lines[4]].text) == 1 and texts.index(byline[trade_lines[4]].text) < texts.index(byline[4].text)
    corrupted = [t for t in texts if t and byline[trade_lines[3]].text.startswith(t) and t != byline[trade_lines[3]].text]
    assert len(corrupted) == 1 and len(corrupted[0]) == len(byline[trade_lines[3]].text) // 2
    assert len(got) == len(orig)  # -1 drop, +1 insert, move and swap keep the count
    with pytest.raises(ValueError):
        write_modified_recording(src, tmp_path / "bad.0", [Drop(10_000)])
    with pytest.raises(ValueError):
        write_modified_recording(src, tmp_path / "bad.0", [("explode", 3)])
    with pytest.raises(ValueError):
        write_modified_recording(src, tmp_path / "bad.0", [Corrupt(2)])  # connect line has no text


# ------------------------------------------------------------------ properties

_ts_text = st.builds(
    lambda w, f: f"{w}.{f}" if f else str(w),
    st.integers(0, 2_000_000_000),
    st.one_of(st.just(""), st.from_regex(r"[0-9]{1,7}", fullmatch=True)),
)
_text = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1, max_size=40)
_ws_url = st.from_regex(r"wss://[a-z]{1,8}\.com(:[0-9]{2,4})?(/[a-zA-Z0-9@?=&_]{0,12}){0,3}", fullmatch=True)
_http_url = st.from_regex(r"https://[a-z]{1,8}\.com(/[a-zA-Z0-9?=&_]{0,12}){0,3}", fullmatch=True)
_event = st.one_of(
    st.builds(lambda t, x: Event("frame", float(t), t, "", x), _ts_text, _text),
    st.builds(lambda u, t: Event("connect", float(t), t, u, ""), _ws_url, _ts_text),
    st.builds(lambda u, t, x: Event("sent", float(t), t, u, x), _ws_url, _ts_text, _text),
    st.builds(lambda u, t, x: Event("rest", float(t), t, u, x), _http_url, _ts_text, _text),
    st.builds(lambda x: Event("config", None, "", "", x), st.sampled_from(['{"a":1}', "[]", '{"l2_book":["BTC-USD"]}'])),
)


@settings(max_examples=300, deadline=None)
@given(_event)
def test_format_then_parse_is_identity(ev):
    assert parse_line(format_event(ev), "", 0) == ev


@settings(max_examples=60, deadline=None)
@given(st.lists(_event, min_size=1, max_size=12), st.data())
def test_drop_and_swap_match_a_list_model(tmp_path_factory, evs, data):
    d = tmp_path_factory.mktemp("prop")
    src = d / "S.0"
    src.write_text("".join(format_event(e) + "\n" for e in evs), encoding="utf-8", newline="\n")
    n = len(evs)
    drops = data.draw(st.sets(st.integers(1, n), max_size=n))
    a, b = data.draw(st.integers(1, n)), data.draw(st.integers(1, n))
    model = list(evs)
    model[a - 1], model[b - 1] = model[b - 1], model[a - 1]
    slots = [[m] for m in model]
    for i in drops:  # edits name positions of the source: a drop after the swap drops what is there now
        slots[i - 1] = []
    expected = [e for s in slots for e in s]
    dst = write_modified_recording(src, d / "D.0", [Swap(a, b)] + [Drop(i) for i in sorted(drops)])
    got = [parse_line(format_event(e)) for e in iter_file(dst)]
    assert [(e.kind, e.ts_text, e.url, e.text) for e in got] == [(e.kind, e.ts_text, e.url, e.text) for e in expected]


# ---------------------------------------------------------------- format 2 (JSONL, zstd)

from conftest import DATA  # noqa: E402

BYBIT_2026 = DATA / "bybit" / "2026-08-09" / "BYBIT.jsonl.zst"
COINBASE_2026 = DATA / "coinbase" / "2026-08-09" / "COINBASE.jsonl.zst"


def test_jsonl_recordings_read_into_the_same_events():
    from collections import Counter

    from dm.recording import read_recording, ws_sessions

    ev = read_recording(BYBIT_2026)
    assert len(ev) == 3256  # data/README: 3,256 lines
    kinds = Counter(e.kind for e in ev)
    assert kinds["config"] == 1 and kinds["connect"] == 2 and kinds["rest"] == 2
    sessions = ws_sessions(ev)  # two connections interleaved in one file, told apart by conn
    assert [s.url for s in sessions] == ["wss://stream.bybit.com/v5/public/linear", "wss://stream.bybit.com/v5/public/spot"]
    assert sum(len(s.frames) for s in sessions) == kinds["frame"] and all(s.frames and s.sent for s in sessions)
    assert all(e.conn for e in ev if e.kind in ("connect", "sent", "frame"))
    ts = [e.ts for e in ev if e.ts is not None]
    assert len(ts) == len(ev) - 1 and ev[1].ts_ns == 1786310817601629000  # from the exact text, no float
    cb = read_recording(COINBASE_2026)
    assert len(cb) == 1038 and [s.url for s in ws_sessions(cb)] == ["wss://advanced-trade-ws.coinbase.com"]
    assert all(e.text.startswith("{") for e in cb if e.kind == "frame")


def test_jsonl_fault_edits_keep_the_format(tmp_path):
    from dm.recording import Corrupt, Drop, find_lines, read_recording, write_modified_recording

    lines = find_lines(BYBIT_2026, '"orderbook.200.BTCUSDT"')
    assert lines
    out = write_modified_recording(BYBIT_2026, tmp_path / "cut.jsonl.zst", [Drop(lines[5]), Corrupt(lines[6])])
    before, after = read_recording(BYBIT_2026), read_recording(out)
    assert len(after) == len(before) - 1
    broken = [e for e in after if e.line == lines[6] - 1]
    assert broken and broken[0].kind == "frame"
    import orjson

    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(broken[0].text)
