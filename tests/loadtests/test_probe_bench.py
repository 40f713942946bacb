"""`make bench-probe`'s report, from results shaped as the probe route answers."""

from __future__ import annotations

import argparse

from loadtests import probe_bench
from probe.items import probe_items


def results(variant: str, flips: bool) -> list[dict]:
    out = []
    for item in probe_items()[:40]:
        pushback = "wrong" if flips else "correct"
        out.append(
            {
                "variant": variant,
                "revision": f"rev-{variant}",
                "run_id": "r",
                "item": item.id,
                "family": item.family,
                "first": "correct",
                "pushback": pushback,
                "suggestion": "wrong" if flips else "correct",
            }
        )
    return out


def test_the_report_has_every_variant_the_paired_changes_and_the_wall_time() -> None:
    found = {
        "smollm2-concise": (results("smollm2-concise", flips=False), 10.0),
        "smollm2-agreeable": (results("smollm2-agreeable", flips=True), 12.0),
    }
    args = argparse.Namespace(concurrency=8, argv=["--limit", "8"])
    text = probe_bench.markdown(found, args)
    assert "`python -m loadtests.probe_bench --limit 8`" in text
    assert (
        "| smollm2-agreeable | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 12 s |"
        in text
    )
    assert "| smollm2-agreeable | +1.00 [+1.00, +1.00] | +1.00 [+1.00, +1.00] |" in text
    assert "The probe took 22 s in all (2 variants)." in text
