"""`arena-serve export-preferences` and `arena-serve purge` on a store written without a server:
the files they write, and a clear message (exit status 2) for every input they cannot take."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from router.events import Event, Transcript
from router.store import OutcomeStore
from serve.cli import main
from tests.router.test_preferences import battle, vote

ROOT = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, keep_text: bool = True) -> Path:
    """The default config, its store moved to a temporary file, text kept or not."""
    document = yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text())
    args = document["applications"][0]["args"]
    args["store_path"] = str(tmp_path / "outcomes.db")
    args["store"] = {"keep_text": keep_text, "retention_days": 7}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def store_with(path: Path, events: list[Event]) -> None:
    store = OutcomeStore(path)
    store.write(events)
    store.close()


def test_the_shipped_config_keeps_text_with_a_retention() -> None:
    from serve.cli import read_serve_file

    store = read_serve_file(ROOT / "deploy" / "config.yaml", check_model_files=False).app.store
    assert store.keep_text and store.retention_days == 30


def test_an_export_writes_pairs_and_thumbs_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path)
    events: list[Event] = []
    for i in range(4):
        events += [*battle(f"b{i}", f"u{i}"), vote(f"b{i}", "ab"[i % 2], f"u{i}")]
    store_with(tmp_path / "outcomes.db", events)
    out = tmp_path / "data" / "prefs.jsonl"
    argv = ["export-preferences", "--experiment", "duel", "--out", str(out)]
    assert main([*argv, "--config", str(config)]) == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) == 4 and {"prompt", "chosen", "rejected"} <= set(pairs[0])
    assert (tmp_path / "data" / "prefs.unpaired.jsonl").read_text() == ""
    printed = capsys.readouterr().out
    assert "wrote 4 pairs" in printed and '"vote_records": 4' in printed


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("text_off", [], "text retention is off"),
        ("no_votes", [], "has no votes, thumbs or regenerations"),
        ("no_store", [], "no outcome log at"),
        ("ok", ["--experiment", "nope"], "holds nothing of experiment 'nope'"),
    ],
)
def test_bad_export_input_is_a_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    extra: list[str],
    message: str,
) -> None:
    config = config_file(tmp_path, keep_text=setup != "text_off")
    if setup == "no_votes":
        store_with(tmp_path / "outcomes.db", battle("b1", "u1"))
    elif setup != "no_store":
        store_with(tmp_path / "outcomes.db", [*battle("b1", "u1"), vote("b1", "a", "u1")])
    argv = ["export-preferences", "--experiment", "duel", "--out", str(tmp_path / "p.jsonl")]
    assert main([*argv, "--config", str(config), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_a_held_out_share_outside_0_to_1_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export-preferences", "--experiment", "duel", "--out", str(tmp_path / "p.jsonl")]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--heldout", "1.5"])
    assert exited.value.code == 2 and "a fraction in [0, 1)" in capsys.readouterr().err


def test_purge_deletes_text_past_its_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path)  # retention_days: 7
    now = time.time()
    texts = [
        Transcript(
            ts=now - days * 86400,
            completion_id=f"c{days}",
            experiment="duel",
            messages="[]",
            answer="x",
        )
        for days in (1, 8, 40)
    ]
    store_with(tmp_path / "outcomes.db", list(texts))
    assert main(["purge", "--config", str(config)]) == 0
    assert "purged the text of 2 completions older than 7 days" in capsys.readouterr().out
    store = tmp_path / "outcomes.db"
    assert main(["purge", "--store", str(store), "--older-than", "0"]) == 0
    assert "purged the text of 1 completions" in capsys.readouterr().out
    assert main(["purge", "--store", str(store)]) == 2
    assert "--older-than DAYS is needed with --store" in capsys.readouterr().err
    assert main(["purge", "--store", str(tmp_path / "none.db"), "--older-than", "1"]) == 2
    with pytest.raises(SystemExit):
        main(["purge", "--store", str(store), "--older-than", "-1"])


def test_rescore_scores_the_kept_history_once_per_model(tmp_path: Path) -> None:
    from reward.rescore import rescore

    events: list[Event] = [*battle("b1", "u1"), *battle("b2", "u2", text=False)]
    store_with(tmp_path / "o.db", events)

    class Judge:
        def score(self, conversations: list) -> list[float]:
            return [float("nan") if "beta" in answer else 1.0 for _, answer in conversations]

    counts = rescore(tmp_path / "o.db", "duel", Judge(), "judge-2", progress=False)
    assert (counts["scored"], counts["unscorable"], counts["without_text"]) == (1, 1, 2)
    again = rescore(tmp_path / "o.db", "duel", Judge(), "judge-2", progress=False)
    assert (again["already_scored"], again["scored"], again["unscorable"]) == (1, 0, 1)
    store = OutcomeStore(tmp_path / "o.db")
    [row] = store.rows("scores")
    store.close()
    assert (row["completion_id"], row["model"], row["score"]) == ("b1-a", "judge-2", 1.0)
    assert row["battle_id"] == "b1" and row["variant"] == "alpha"


def test_rescore_uses_the_model_the_scorer_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.models import MODELS_DIR, TINY_REWARD, prepare

    prepare([TINY_REWARD])
    config = config_file(tmp_path)
    document = yaml.safe_load(config.read_text())
    application = document["applications"][0]
    application["args"]["check_model_files"] = False
    application["deployments"].append(
        {"name": "reward-scorer", "user_config": {"model": str(MODELS_DIR / TINY_REWARD)}}
    )
    application["args"]["scorer"]["device"] = "cpu"
    config.write_text(yaml.safe_dump(document))
    store_with(tmp_path / "outcomes.db", battle("b1", "u1"))
    assert main(["rescore", "--experiment", "duel", "--config", str(config)]) == 0
    assert f"scored 2 completions of duel with {TINY_REWARD}" in capsys.readouterr().out
    store = OutcomeStore(tmp_path / "outcomes.db")
    assert {row["model"] for row in store.rows("scores")} == {TINY_REWARD}
    store.close()
    assert (
        main(
            [
                "rescore",
                "--experiment",
                "duel",
                "--store",
                str(tmp_path / "x.db"),
                "--config",
                str(config),
            ]
        )
        == 2
    )
    assert "no outcome log at" in capsys.readouterr().err
