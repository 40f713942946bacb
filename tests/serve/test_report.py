"""`arena-serve report`: terminal tables, PNG plots and a self-contained HTML page."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from router.analysis.simulate import Arm, Traffic, simulate_ab, simulate_arena
from serve.cli import main, read_serve_file

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The default config with its store moved to a temporary file."""
    document = copy.deepcopy(yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text()))
    document["applications"][0]["args"]["store_path"] = str(tmp_path / "outcomes.db")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_an_ab_report_writes_its_plots_and_page(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = read_serve_file(config)
    experiment = served.gateway.experiments[0]
    arms = {"smollm2-friendly": Arm(thumbs_up=0.35)}
    simulate_ab(served.app.store_file, experiment, Traffic(units=1500, arms=arms))
    out = tmp_path / "report"
    command = ["report", "--experiment", experiment.name, "--config", str(config)]
    assert main([*command, "--out", str(out), "--reps", "50"]) == 0
    printed = capsys.readouterr().out
    assert "verdict:" in printed and "thumbs_up_rate" in printed
    assert {p.name for p in out.iterdir()} == {
        "lift_forest.png",
        "sequential_p_value.png",
        "report.html",
    }
    for png in ("lift_forest.png", "sequential_p_value.png"):
        assert (out / png).read_bytes().startswith(PNG)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Verdict" in page


def test_an_arena_report_draws_the_leaderboard(config: Path, tmp_path: Path) -> None:
    served = read_serve_file(config)
    experiment = served.gateway.experiments[1]
    ratings = {"smollm2-concise": 1000, "smollm2-friendly": 1050}
    simulate_arena(served.app.store_file, experiment, battles=600, ratings=ratings)
    out = tmp_path / "report"
    command = ["report", "--experiment", experiment.name, "--config", str(config)]
    assert main([*command, "--out", str(out), "--reps", "50"]) == 0
    assert (out / "leaderboard.png").read_bytes().startswith(PNG)


def test_json_output_and_errors(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--experiment", "concise-vs-friendly", "--config", str(config)]) == 2
    assert "no outcome log" in capsys.readouterr().err
    served = read_serve_file(config)
    simulate_ab(served.app.store_file, served.gateway.experiments[0], Traffic(units=50))
    assert main(["report", "--experiment", "nope", "--config", str(config)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    command = ["report", "--experiment", "concise-vs-friendly", "--config", str(config)]
    assert main([*command, "--json", "--reps", "10"]) == 0
    assert '"verdict"' in capsys.readouterr().out


def test_bad_report_input_is_a_message_not_a_traceback(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["report", "--experiment", "concise-vs-friendly", "--config", str(config)]
    not_a_log = tmp_path / "garbage.db"
    not_a_log.write_text("garbage")
    assert main([*base, "--store", str(not_a_log)]) == 2
    assert "is not an arena-serve outcome log" in capsys.readouterr().err
    served = read_serve_file(config)
    simulate_ab(served.app.store_file, served.gateway.experiments[0], Traffic(units=50))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main([*base, "--out", str(a_file)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([*base, "--reps", "1"])
    assert exited.value.code == 2 and "at least 2 replicates" in capsys.readouterr().err


def test_a_rerun_leaves_no_plot_of_an_earlier_report(config: Path, tmp_path: Path) -> None:
    served = read_serve_file(config)
    out = tmp_path / "out"
    out.mkdir()
    (out / "leaderboard.png").write_bytes(b"stale")  # an A/B report draws no leaderboard
    simulate_ab(served.app.store_file, served.gateway.experiments[0], Traffic(units=50))
    command = ["report", "--experiment", "concise-vs-friendly", "--config", str(config)]
    main([*command, "--reps", "10", "--out", str(out)])
    assert not (out / "leaderboard.png").exists() and (out / "report.html").exists()


def test_p_values_below_the_plot_floor_are_drawn_on_it() -> None:
    from serve.report import P_FLOOR, _floored

    points, floored = _floored([0.5, 1e-30, None])
    assert points[:2] == [0.5, P_FLOOR] and math.isnan(points[2])
    assert floored == [False, True, False]
