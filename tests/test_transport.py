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
