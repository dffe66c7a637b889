"""Replay server throughput at speed 0: frames/s a client receives for the whole Binance b38f7c
session (11,357 frames), dm.replay vs the obvious alternative (aiohttp handler doing
ws.send_str(text) per recorded frame). Server in its own process, client here."""
from __future__ import annotations
import asyncio, gc, subprocess, sys, tempfile, time
from pathlib import Path
import aiohttp

ROOT = Path("/work/main")
B38 = ROOT / "data/binance/BINANCE-b38f7c.0"

NAIVE = r'''
import asyncio, sys
from aiohttp import web
from dm.recording import read_recording
texts = [e.text for e in read_recording(sys.argv[1]) if e.kind == "frame"]
async def h(req):
    ws = web.WebSocketResponse(compress=False); await ws.prepare(req)
    for t in texts:
        await ws.send_str(t)
    await ws.close(); return ws
app = web.Application(); app.router.add_get("/stream", h)
async def main():
    r = web.AppRunner(app); await r.setup(); s = web.TCPSite(r, "127.0.0.1", 0); await s.start()
    open(sys.argv[2], "w").write(str(r.addresses[0][1])); await asyncio.Event().wait()
import uvloop; uvloop.run(main())
'''
DM = r'''
import sys
from dm.replay import run_replay
run_replay([sys.argv[1]], port=0, speed=0, ready_file=sys.argv[2])
'''

def start(code):
    ready = Path(tempfile.mktemp())
    p = subprocess.Popen([sys.executable, "-c", code, str(B38), str(ready)], cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    while not (ready.exists() and ready.read_text().strip()):
        time.sleep(0.02)
    return p, int(ready.read_text())

async def client(port, query):
    n = 0
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"ws://127.0.0.1:{port}/stream?{query}", max_msg_size=0) as ws:
            t0 = None
            while True:
                m = await ws.receive()
                if m.type != aiohttp.WSMsgType.TEXT: break
                if t0 is None: t0 = time.perf_counter()
                n += 1; t1 = time.perf_counter()
    assert n == 11357, n
    return n, t1 - t0

def run(quick: bool = False) -> dict[str, float]:
    from dm.recording import read_recording
    url = next(e.url for e in read_recording(B38) if e.kind == "connect")
    query = url.split("?", 1)[1]
    reps = 2 if quick else 5
    out = {}
    for name, code in (("dm", DM), ("naive_send_str", NAIVE)):
        p, port = start(code)
        try:
            asyncio.run(client(port, query))  # warm up
            gc.disable()
            best = min(asyncio.run(client(port, query))[1] for _ in range(reps))
            gc.enable()
        finally:
            p.terminate(); p.wait()
        out[f"replay.{name}.frames_per_s"] = 11357 / best
        out[f"replay.{name}.session_ms"] = best * 1e3
    out["replay.speedup_vs_naive"] = out["replay.dm.frames_per_s"] / out["replay.naive_send_str.frames_per_s"]
    return out

if __name__ == "__main__":
    r = run("--quick" in sys.argv)
    for k, v in r.items():
        print(f"{k:40s} {v:12.1f}")
