"""deploy/grafana/dm.json: valid dashboard JSON, and every metric family the supervisor exports
on /metrics is charted by some panel (so a new metric or a rename shows up here)."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dashboard_charts_every_exported_metric(tmp_path):
    from dm import config as dmconfig
    from dm.supervisor import Supervisor

    dash = json.loads((ROOT / "deploy/grafana/dm.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    cfg = dmconfig.parse({"dm": {"instance": "g", "run_dir": str(tmp_path)}})
    text = Supervisor(cfg, "x.toml").metrics_text().decode()
    families = re.findall(r"^# TYPE (\S+) (\S+)", text, re.M)
    assert families
    for name, kind in families:
        base = name[:-6] if name.endswith("_total") else name
        names = {name, base, base + "_total", base + "_bucket"}
        covered = any(n in e for n in names for e in exprs) or any(
            re.fullmatch(pat, n) for e in exprs for pat in re.findall(r'__name__=~"([^"]+)"', e) for n in names)
        assert covered, f"/metrics family {name} ({kind}) is on no dashboard panel"
