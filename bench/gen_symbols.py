"""A Binance session with N symbols, generated from the recorded one (data/binance/BINANCE-b38f7c.0,
10 symbols): every recorded frame and depth snapshot is cloned for K = N / 10 copies of its
symbol under new names (base asset + "Q" + letters: ZILUSDT → ZILQBUSDT), in recorded order
(copy after copy at the same TS), and a matching exchangeInfo (the recorded 2021-10-12 entries of
the 10 symbols, cloned and renamed). Same message mix and sizes per symbol as recorded, so cost
can be measured against the number of symbols alone.

    python bench/gen_symbols.py N OUT_DIR   # writes OUT_DIR/BINANCE-N.0 and OUT_DIR/EXCHANGEINFO-N.0
"""
from __future__ import annotations

import json
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
B38 = ROOT / "data/binance/BINANCE-b38f7c.0"
EXCHANGE_INFO = ROOT / "data/binance/2021-10-12/BINANCE.0"


def _suffix(j: int) -> str:
    s = ""
    while True:
        s = string.ascii_uppercase[j % 26] + s
        j //= 26
        if not j:
            return "Q" + s


def generate(n_symbols: int, out_dir: Path) -> tuple[Path, Path, list[str]]:
    """Write the session and exchangeInfo for ``n_symbols`` (a multiple of 10); returns their
    paths and the canonical symbols (USDT → USD, as the benches' quote alias)."""
    if n_symbols % 10 or n_symbols < 10:
        raise ValueError("n_symbols must be a multiple of 10")
    k = n_symbols // 10
    out_dir.mkdir(parents=True, exist_ok=True)
    info_line = EXCHANGE_INFO.read_text().splitlines()[0]
    head, body = info_line.split(": ", 1)
    info = json.loads(body)
    by_symbol = {s["symbol"]: s for s in info["symbols"]}
    lines = B38.read_text().splitlines()
    connect = next(i for i, l in enumerate(lines) if l.startswith("wss://"))
    venue_syms = []
    for s in lines[connect].split("streams=", 1)[1].split(" ", 1)[0].split("/"):
        v = s.split("@", 1)[0].upper()
        if v not in venue_syms:
            venue_syms.append(v)

    def names(v: str) -> list[tuple[str, str, str]]:  # (venue symbol, base, quote) per copy
        e = by_symbol[v]
        out = [(v, e["baseAsset"], e["quoteAsset"])]
        for j in range(1, k):
            base = e["baseAsset"] + _suffix(j)
            out.append((base + e["quoteAsset"], base, e["quoteAsset"]))
        return out

    copies = {v: names(v) for v in venue_syms}
    symbols_out = []
    for v in venue_syms:
        for vs, base, quote in copies[v]:
            e = dict(by_symbol[v], symbol=vs, baseAsset=base)
            symbols_out.append(e)
    info_out = dict(info, symbols=symbols_out)
    info_path = out_dir / f"EXCHANGEINFO-{n_symbols}.0"
    info_path.write_text(head + ": " + json.dumps(info_out, separators=(",", ":")) + "\n")

    out = []
    url_streams = lines[connect].split("streams=", 1)[1].split(" ", 1)
    streams = url_streams[0].split("/")
    new_streams = []
    for s in streams:
        v, ch = s.split("@", 1)
        new_streams += [f"{vs.lower()}@{ch}" for vs, _, _ in copies[v.upper()]]
    for i, line in enumerate(lines):
        if i == connect:
            out.append(lines[connect].split("streams=", 1)[0] + "streams=" + "/".join(new_streams) + " " + url_streams[1])
        elif line.startswith("https://") and "/depth?symbol=" in line:
            v = line.split("symbol=", 1)[1].split("&", 1)[0]
            out += [line.replace(f"symbol={v}&", f"symbol={vs}&", 1) for vs, _, _ in copies.get(v, [(v, "", "")])]
        elif line[:1].isdigit() and '{"stream":"' in line[:40]:
            v = line.split('{"stream":"', 1)[1].split("@", 1)[0].upper()
            for vs, _, _ in copies[v]:
                out.append(line.replace(f'"stream":"{v.lower()}@', f'"stream":"{vs.lower()}@', 1)
                           .replace(f'"s":"{v}"', f'"s":"{vs}"', 1))
        else:
            out.append(line)
    session = out_dir / f"BINANCE-{n_symbols}.0"
    session.write_text("\n".join(out) + "\n")
    canon = [(vs[:-1] if vs.endswith("USDT") else vs) for v in venue_syms for vs, _, _ in copies[v]]
    return session, info_path, canon


if __name__ == "__main__":
    s, i, c = generate(int(sys.argv[1]), Path(sys.argv[2]))
    print(s, i, len(c))
