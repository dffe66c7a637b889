"""The picows transport's own duties, against a real picows server on loopback: a message split
over continuation frames reaches the codec whole (RFC 6455 §5.4), the peer's close code is
kept, pings are answered, and ``send_str``/``close`` behave like aiohttp's socket."""
from __future__ import annotations

import asyncio

import picows

from dm.providers.base import _picows_connection


class _Sink:
    def __init__(self):
        self.frames: list[bytes] = []
        self.connected: list[str] = []

    def on_transport_connected(self, url: str) -> None:
        assert not self.frames  # told before the first frame
        self.connected.append(url)

    def on_frame(self, data: bytes, ts_recv: int) -> None:
        assert isinstance(data, bytes) and ts_recv > 0
        self.frames.append(data)


def test_fragments_close_code_ping_and_send():
    got_from_client: list[bytes] = []
    pongs: list[bytes] = []

    class Server(picows.WSListener):
        def on_ws_connected(self, t):
            t.send(picows.WSMsgType.TEXT, b'{"a":', fin=False)
            t.send(picows.WSMsgType.CONTINUATION, b"1", fin=False)
            t.send(picows.WSMsgType.CONTINUATION, b"}")
            t.send(picows.WSMsgType.BINARY, b"\x00\x01")
            t.send_ping(b"are you there")

        def on_ws_frame(self, t, frame):
            if frame.msg_type == picows.WSMsgType.TEXT:
                got_from_client.append(frame.get_payload_as_bytes())
                t.send_close(picows.WSCloseCode.GOING_AWAY)
                t.disconnect()
            elif frame.msg_type == picows.WSMsgType.PONG:
                pongs.append(frame.get_payload_as_bytes())

    async def main():
        srv = await picows.ws_create_server(lambda r: Server(), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        sink = _Sink()
        t, conn = await picows.ws_connect(lambda: _picows_connection()(sink), f"ws://127.0.0.1:{port}/")
        assert not conn.closed
        for _ in range(200):
            if len(sink.frames) == 2 and pongs:
                break
            await asyncio.sleep(0.01)
        await conn.send_str('{"op":"subscribe"}')
        await asyncio.wait_for(t.wait_disconnected(), 5)
        srv.close()
        return sink, conn

    sink, conn = asyncio.run(main())
    assert sink.frames == [b'{"a":1}', b"\x00\x01"]
    assert pongs == [b"are you there"]
    assert got_from_client == [b'{"op":"subscribe"}']
    assert conn.closed and conn.close_code == 1001
    assert len(sink.connected) == 1


def test_send_on_a_closed_socket_raises_connection_error():
    async def main():
        conn = _picows_connection()(_Sink())
        try:
            await conn.send_str("x")
        except ConnectionError:
            return True
        return False

    assert asyncio.run(main())


def test_frame_path_in_c_publishes_routes_and_dead_letters():
    """``dm._feed.FeedListener`` (the picows connection of a provider whose frames need no
    Python): a whole data frame is decoded from picows's buffer and its records reach the
    channel ring; a fragmented message, a book kind and a refused frame each take their Python
    route (``on_frame``, ``on_decoded``, ``dead.add``), and the counters say what it handled."""
    import uuid

    from dm._codec import KINDS
    from dm._ring import ChannelReader, ChannelWriter, Fanout
    from dm.records import LAYOUT_HASH, RType, unpack
    from dm.venues.binance._codec import BinanceCodec

    trade = (b'{"stream":"zilusdt@aggTrade","data":{"e":"aggTrade","E":1617647603484,"s":"ZILUSDT","a":18938405,'
             b'"p":"0.21448000","q":"2062.90000000","f":23806928,"l":23806928,"T":1617647603483,"m":false,"M":true}}')
    depth = (b'{"stream":"zilusdt@depth@100ms","data":{"e":"depthUpdate","E":1617647603500,"s":"ZILUSDT",'
             b'"U":10,"u":11,"b":[["0.21440000","5.0"]],"a":[]}}')

    class Server(picows.WSListener):
        def on_ws_connected(self, t):
            t.send(picows.WSMsgType.TEXT, trade)
            t.send(picows.WSMsgType.TEXT, trade[:40], fin=False)
            t.send(picows.WSMsgType.CONTINUATION, trade[40:])
            t.send(picows.WSMsgType.TEXT, depth)
            t.send(picows.WSMsgType.TEXT, b'{"stream":')
            t.send_close(picows.WSCloseCode.GOING_AWAY)
            t.disconnect()

    name = f"/dm.t{uuid.uuid4().hex[:8]}.BINANCE.ZILUSDT"
    w = ChannelWriter(name, 1 << 16, LAYOUT_HASH)

    class Dead:
        def __init__(self):
            self.errors = []

        def add(self, ts_recv, frame, err, extra=None):
            self.errors.append((frame, err))

    class P:
        def __init__(self):
            self.codec = BinanceCodec(1001)
            self.codec.add_symbol("ZILUSDT", 7, 8)
            self.fanout = Fanout(None)
            self.fanout.add_channel(7, w)
            self.book_kinds = frozenset({KINDS["depthUpdate"]})
            self.frames = 0
            self.first, self.decoded, self.python_frames = [], [], []
            self.dead = Dead()

        def on_first_frame(self, ts_recv):
            self.first.append(ts_recv)

        def on_decoded(self, data, ts_recv, n):
            self.decoded.append((data, n, self.codec.last_kind))

        def on_frame(self, data, ts_recv):
            self.python_frames.append(data)

        def on_transport_connected(self, url):
            pass

    async def main(p):
        srv = await picows.ws_create_server(lambda r: Server(), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        t, conn = await picows.ws_connect(lambda: _picows_connection(True)(p), f"ws://127.0.0.1:{port}/")
        await asyncio.wait_for(t.wait_disconnected(), 5)
        srv.close()
        return conn

    try:
        p = P()
        conn = asyncio.run(main(p))
        r = ChannelReader(name, LAYOUT_HASH, start="oldest")
        recs = []
        while (b := r.read()) is not None:
            recs.append(unpack(b))
        r.close()
    finally:
        w.close(unlink=True)
    assert [(x.rtype, x.instrument_id, x.price, x.size, x.trade_id) for x in recs] == \
        [(RType.TRADE, 7, 214_480_000, 206_290_000_000, 18938405)]
    assert p.python_frames == [trade]                      # the fragmented copy, joined
    assert [(d, n, k) for d, n, k in p.decoded] == [(depth, 1, KINDS["depthUpdate"])]  # one level
    assert len(p.dead.errors) == 1 and p.dead.errors[0][0] == b'{"stream":'
    assert (conn.frames, conn.records) == (3, 1) and len(p.first) == 1 and conn.last_frame_ns >= p.first[0]
    assert conn.close_code == 1001
