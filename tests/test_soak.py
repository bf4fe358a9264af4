"""The soak of bench/soak.py, short: a Sampler and a scraped exporter stay
flat (memory, file descriptors) and nothing fails. The long run (1,000,000
samples) is ``python bench/soak.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.mark.slow
def test_short_soak() -> None:
    proc = subprocess.run([sys.executable, str(SOAK), "--samples", "30000", "--json"], capture_output=True,
                          text=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(result)
    assert result["samples"] == 30000 and result["scrapes"] > 0
    assert result["errors"] == [] and result["scrape_errors"] == 0 and result["failed_scans"] == 0
    for who, growth in result["growth"].items():
        assert growth["rss"] <= 1 << 20 and growth["fds"] <= 0, (who, growth)
    assert result["ok"] and proc.returncode == 0, proc.stderr
