"""What the analysis reads from the outcome log: per-unit data of one experiment, as numpy arrays.

Units are counted by intent to treat: each exposed unit belongs to the group of its *first*
exposure (`arm` exposures by variant, `holdout` exposures to the group "holdout"), whatever it
was served later; forced, unallocated and out-of-slice units are not in the analysis. Every
completion of the experiment from its unit's first exposure on is one row, attributed to its
unit's group, with its feedback and reward score joined on, so a metric is a per-unit sum of a
row column (`Rows.unit_sums`). Feedback counts once per completion (a thumbs: the latest).

A/B pre-period data (for CUPED) are the same unit's completions before its first exposure, on
any model: rows of `Rows` kind too. In an arena, battles (not users) are randomized: each
variant's group holds its battle completions, each its own unit, and the voted battles come with
their style columns.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from router.db import Connection, connect, is_postgres, snapshot
from router.events import NOT_SHOWN
from router.store import SCHEMA_VERSION, OutcomeStore

HOLDOUT = "holdout"

# Per-completion columns: name -> SQL expression over the joined row.
_ROW_COLUMNS = {
    "ts": "c.ts",
    "ok": "c.status = 200",
    # An arena side never shown (the other side failed) is neither; arena groups drop it.
    "error": f"c.status NOT IN (200, {NOT_SHOWN})",
    "ttft_s": "c.ttft_s",
    "latency_s": "c.latency_s",
    "completion_tokens": "COALESCE(c.completion_tokens, 0)",
    "thumbs_up": "COALESCE(t.up, 0)",
    "thumbs_down": "COALESCE(t.down, 0)",
    "regenerate": "COALESCE(f.regen, 0)",
    "copy": "COALESCE(f.copied, 0)",
    "score": "s.score",
}
# Feedback and scores are joined as of the report's time (the first four parameters): one thumbs
# per completion, its latest (a user may change their mind); regenerate and copy as 0 or 1;
# scores of one reward model, the one that scored last (two models' scores are on two scales).
_ROW_SELECT = f"""
SELECT c.unit, c.completion_id, {", ".join(_ROW_COLUMNS.values())}
FROM completions c
LEFT JOIN (
    SELECT completion_id, CAST(value = 'up' AS INTEGER) AS up,
        CAST(value = 'down' AS INTEGER) AS down
    FROM (
        SELECT completion_id, value, ROW_NUMBER() OVER (
            PARTITION BY completion_id ORDER BY id DESC
        ) AS nth
        FROM feedback WHERE kind = 'thumbs' AND completion_id IS NOT NULL AND ts <= ?
    ) AS thumbs WHERE nth = 1
) t USING (completion_id)
LEFT JOIN (
    SELECT completion_id, MAX(CASE WHEN kind = 'regenerate' THEN 1 ELSE 0 END) AS regen,
        MAX(CASE WHEN kind = 'copy' THEN 1 ELSE 0 END) AS copied
    FROM feedback WHERE completion_id IS NOT NULL AND ts <= ? GROUP BY completion_id
) f USING (completion_id)
LEFT JOIN (
    SELECT completion_id, score FROM scores
    WHERE ts <= ? AND model = (SELECT model FROM scores WHERE ts <= ? ORDER BY ts DESC LIMIT 1)
) s USING (completion_id)
"""


@dataclass
class Rows:
    """Completions as columns, each row tied to a unit index (into the owner's unit list)."""

    unit: np.ndarray  # int index per row
    columns: dict[str, np.ndarray]  # float arrays; NaN where a value is missing
    custom: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # custom metric name -> (row index, value) of each custom feedback on these completions

    @property
    def size(self) -> int:
        return len(self.unit)

    def select(self, keep: np.ndarray) -> Rows:
        """The rows where `keep` is true, custom feedback following its rows."""
        new_index = np.cumsum(keep) - 1
        custom = {}
        for name, (rows, values) in self.custom.items():
            kept = keep[rows]
            if kept.any():
                custom[name] = (new_index[rows[kept]], values[kept])
        columns = {name: column[keep] for name, column in self.columns.items()}
        return Rows(self.unit[keep], columns, custom)

    def unit_sums(self, column: str, n_units: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-unit sum of a column (missing values count 0), optionally over masked rows."""
        values = np.nan_to_num(self.columns[column], nan=0.0)
        keep = np.ones(self.size, dtype=bool) if mask is None else mask
        return np.bincount(self.unit[keep], weights=values[keep], minlength=n_units)

    def unit_counts(self, column: str, n_units: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-unit number of rows where the column has a value."""
        present = ~np.isnan(self.columns[column])
        keep = present if mask is None else present & mask
        return np.bincount(self.unit[keep], minlength=n_units).astype(float)

    def custom_sums(
        self, name: str, n_units: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit (sum, count) of the custom feedback `name`."""
        rows, values = self.custom.get(name, (np.zeros(0, dtype=int), np.zeros(0)))
        if mask is not None:
            keep = mask[rows]
            rows, values = rows[keep], values[keep]
        units = self.unit[rows]
        sums = np.bincount(units, weights=values, minlength=n_units)
        counts = np.bincount(units, minlength=n_units).astype(float)
        return sums, counts


@dataclass
class Group:
    """One arm (or the holdout) of an A/B experiment: its units and their completions."""

    name: str
    units: list[str]
    first_exposure: np.ndarray  # ts per unit
    rows: Rows
    pre: Rows  # completions of these units before their first exposure

    @property
    def n_units(self) -> int:
        return len(self.units)


@dataclass
class BattleRows:
    """Voted battles of an arena experiment."""

    ts: np.ndarray
    variant_a: list[str]
    variant_b: list[str]
    vote: list[str]
    voters: list[str]  # the unit of each voted battle: its intervals resample these
    tokens: np.ndarray  # [n, 2] completion tokens of a and b (NaN if unknown)
    markdown: np.ndarray  # [n, 2, 3] headers, list items, bold of a and b
    battles: int  # all logged battles, voted or not
    pairs: dict[tuple[str, str], int]  # battles per unordered pair (sorted names), voted or not
    # The same by adaptive weights version (None: the configured weights), and the pair shares
    # of each logged version (`weights`): the sample-ratio test judges each period by its
    # own weights.
    pairs_by_version: dict[int | None, dict[tuple[str, str], int]]
    weights: dict[int, dict[tuple[str, str], float]]
    identity_revealed: np.ndarray  # bool per voted battle: an answer named a model (vote void)


@dataclass
class ExperimentData:
    name: str
    groups: dict[str, Group]
    battles: BattleRows | None
    start: float | None  # first exposure
    end: float | None  # last completion
    reward_model: str | None = None  # whose scores `score` holds: the model that scored last
    # (ts, config JSON) of each config the gateway put in force, oldest first (`ExperimentConfig`)
    configs: list[tuple[float, str]] = field(default_factory=list)

    @functools.cached_property
    def config_weights(self) -> list[dict[str, float] | None]:
        """Each logged config's arm weights (None for one an older arena-serve wrote)."""
        from router.experiment import Experiment

        out: list[dict[str, float] | None] = []
        for _, config in self.configs:
            try:
                arms = Experiment.model_validate_json(config).arms
            except ValueError:
                out.append(None)
                continue
            out.append({arm.variant: arm.weight for arm in arms})
        return out


def _migrated(path: str | Path) -> None:
    """Migrate a SQLite file no server opened since an upgrade. A PostgreSQL store is made
    and migrated by the outcome log replicas that write it."""
    if is_postgres(path):
        return
    db = connect(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()
    if 0 < version < SCHEMA_VERSION:
        OutcomeStore(path).close()  # opening it migrates it in place


def _rows(
    db: Connection,
    where: str,
    params: Sequence[object],
    until: float,
    units: dict[str, int] | None = None,
    unit_expr: str = "c.unit",
) -> tuple[Rows, dict[str, int]]:
    """Completion rows matching `where` as columns, with the unit index of each row, and the
    feedback and scores recorded up to `until`.

    With `units`, rows of other units are dropped; without, every new unit gets the next index.
    """
    select = _ROW_SELECT.replace("SELECT c.unit,", f"SELECT {unit_expr},", 1)
    cursor = db.execute(f"{select} WHERE {where}", (until, until, until, until, *params))
    known = {} if units is None else units
    unit_index, ids, values = [], [], []
    for unit, completion_id, *row in cursor:
        index = known.get(unit)
        if index is None:
            if units is not None:
                continue
            index = known[unit] = len(known)
        unit_index.append(index)
        ids.append(completion_id)
        values.append(row)
    table = np.array(values, dtype=float).reshape(len(values), len(_ROW_COLUMNS))
    columns = {name: table[:, i] for i, name in enumerate(_ROW_COLUMNS)}
    rows = Rows(np.array(unit_index, dtype=np.int64), columns)
    if ids:
        position = {cid: i for i, cid in enumerate(ids)}
        custom: dict[str, tuple[list[int], list[float]]] = {}
        for completion_id, name, number in db.execute(
            "SELECT f.completion_id, f.name, f.number FROM feedback f "
            "JOIN completions c USING (completion_id) "
            f"WHERE f.kind = 'custom' AND f.ts <= ? AND {where}",
            (until, *params),
        ):
            row = position.get(completion_id)
            if row is not None:
                entry = custom.setdefault(name, ([], []))
                entry[0].append(row)
                entry[1].append(float(number))
        rows.custom = {
            name: (np.array(r, dtype=np.int64), np.array(v, dtype=float))
            for name, (r, v) in custom.items()
        }
    return rows, known


def load(
    path: str | Path, experiment: str, until: float | None = None, *, new_to: str | None = None
) -> ExperimentData:
    """Everything the report of `experiment` needs from the store at `path` (read-only), as it
    was at `until`: events recorded later are left out, feedback and scores included. With
    `new_to`, the units ever exposed to that experiment are left out (a confirmation run
    counts only units its experiment never had).

    All of it is read in one transaction, a snapshot: the gateway's commits meanwhile are not
    half seen. A store of an earlier schema is migrated first (a log no server opened since).
    """
    _migrated(path)
    db = connect(path)
    try:
        snapshot(db)
        return _load(db, experiment, until if until is not None else float("inf"), new_to)
    finally:
        db.close()


def _new(column: str, new_to: str | None) -> tuple[str, tuple[str, ...]]:
    """A condition (and its parameter) that keeps rows whose unit `column` was never exposed to
    the experiment `new_to`; nothing without it."""
    if new_to is None:
        return "", ()
    return (
        f" AND {column} NOT IN (SELECT unit FROM exposures WHERE experiment = ? AND exposed = 1)",
        (new_to,),
    )


def seen_before(path: str | Path, experiment: str, new_to: str) -> int:
    """How many units exposed to `experiment` had been exposed to `new_to` (a confirmation
    run's units that were not new to its experiment, left out of its analysis)."""
    db = connect(path)
    try:
        return db.execute(
            "SELECT COUNT(DISTINCT unit) FROM exposures WHERE experiment = ? AND exposed = 1 "
            "AND unit IN (SELECT unit FROM exposures WHERE experiment = ? AND exposed = 1)",
            (experiment, new_to),
        ).fetchone()[0]
    finally:
        db.close()


def votes(path: str | Path, experiment: str) -> BattleRows | None:
    """The experiment's voted battles so far (None before its first battle), read-only."""
    _migrated(path)
    db = connect(path)
    try:
        snapshot(db)
        return _battles(db, experiment, float("inf"))
    finally:
        db.close()


def _rated(
    db: Connection, experiment: str, reward: str, end: float
) -> list[tuple[str, float | None, float]]:
    """A bandit's rated completions up to `end`: (variant, the propensity of its unit's
    assignment in force then, or None, reward): each completion's latest thumbs (up 1, down 0),
    or its reward score from the model that scored last."""
    assignment = (
        "(SELECT e.propensity FROM exposures e WHERE e.experiment = c.experiment "
        "AND e.unit = c.unit AND e.exposed = 1 AND e.ts <= c.ts ORDER BY e.ts DESC LIMIT 1)"
    )
    if reward == "thumbs_up_rate":
        query = (
            f"SELECT c.variant, {assignment}, f.value = 'up' FROM feedback f "
            "JOIN completions c USING (completion_id) WHERE c.experiment = ? AND c.ts <= ? "
            "AND f.id IN (SELECT MAX(id) FROM feedback WHERE kind = 'thumbs' "
            "AND completion_id IS NOT NULL AND ts <= ? GROUP BY completion_id)"
        )
    else:
        query = (
            f"SELECT c.variant, {assignment}, s.score FROM scores s "
            "JOIN completions c USING (completion_id) WHERE c.experiment = ? AND c.ts <= ? "
            "AND s.ts <= ? AND s.battle_id IS NULL "
            "AND s.model = (SELECT model FROM scores ORDER BY ts DESC LIMIT 1)"
        )
    return [(v, p, float(x)) for v, p, x in db.execute(query, (experiment, end, end))]


def bandit_rewards(
    path: str | Path, experiment: str, reward: str, reward_range: tuple[float, float]
) -> dict[str, tuple[float, float]]:
    """A bandit's rewards so far per variant (`_rated`), as (successes, trials) for its Beta
    posteriors: reward scores rescaled from `reward_range` to [0, 1] and clipped."""
    _migrated(path)
    db = connect(path)
    try:
        snapshot(db)
        rows = _rated(db, experiment, reward, float("inf"))
    finally:
        db.close()
    low, high = reward_range
    out: dict[str, tuple[float, float]] = {}
    for variant, _, value in rows:
        if reward != "thumbs_up_rate":
            value = min(1.0, max(0.0, (value - low) / (high - low)))
        successes, trials = out.get(variant, (0.0, 0.0))
        out[variant] = (successes + value, trials + 1.0)
    return out


@dataclass
class BanditRows:
    """A bandit's rated completions: each one's variant, the propensity of its unit's
    assignment in force then (the share its arm had when the unit was drawn), and its reward
    (a thumbs up 1, down 0; or its reward score); and the latest weights logged."""

    variant: list[str]
    propensity: np.ndarray
    reward: np.ndarray
    version: int | None
    shares: dict[str, float]
    # Assignments (exposure rows) per weights version and arm, and each logged version's
    # shares: the sample-ratio test judges each version by its own weights.
    assigned: dict[int | None, dict[str, int]]
    weights: dict[int, dict[str, float]]


def load_bandit(
    path: str | Path, experiment: str, reward: str, until: float | None = None
) -> BanditRows:
    """`BanditRows` of `experiment` as of `until` (read-only). A completion whose unit has no
    logged propensity then (a forced unit; an exposure from before version 6) is left out."""
    _migrated(path)
    end = until if until is not None else float("inf")
    db = connect(path)
    try:
        snapshot(db)
        rows = [r for r in _rated(db, experiment, reward, end) if r[1] is not None]
        history = db.execute(
            "SELECT version, weights FROM weights WHERE experiment = ? AND ts <= ? "
            "ORDER BY version",
            (experiment, end),
        ).fetchall()
        assigned: dict[int | None, dict[str, int]] = {}
        for version, variant, count in db.execute(
            "SELECT weights_version, variant, COUNT(*) FROM exposures WHERE experiment = ? "
            "AND reason = 'arm' AND ts <= ? GROUP BY weights_version, variant",
            (experiment, end),
        ):
            assigned.setdefault(version, {})[variant] = count
    finally:
        db.close()
    weights = {version: dict(json.loads(listed)) for version, listed in history}
    latest = history[-1][0] if history else None
    values = [float(value) for _, _, value in rows]
    return BanditRows(
        variant=[r[0] for r in rows],
        propensity=np.array([r[1] for r in rows], dtype=float),
        reward=np.array(values, dtype=float),
        version=latest,
        shares=weights.get(latest, {}) if latest is not None else {},
        assigned=assigned,
        weights=weights,
    )


GLOBAL_HOLDOUT, EXPOSED = "global_holdout", "exposed"


def load_global_holdout(path: str | Path, until: float | None = None) -> dict[str, Group]:
    """The gateway's global holdout against everyone else exposed, as two groups: the units
    any experiment held out (`global_holdout`), and the units any experiment exposed that were
    never held out (`exposed`), each from its first such exposure, with all its completions
    from then on (every experiment's and variant's) and before (the CUPED pre-period)."""
    _migrated(path)
    db = connect(path)
    end = until if until is not None else float("inf")
    try:
        snapshot(db)
        held = db.execute(
            "SELECT unit, MIN(ts) FROM exposures WHERE reason = 'global_holdout' AND ts <= ? "
            "GROUP BY unit ORDER BY unit",
            (end,),
        ).fetchall()
        out = {u for u, _ in held}
        exposed = db.execute(
            "SELECT unit, MIN(ts) FROM exposures WHERE exposed = 1 AND ts <= ? GROUP BY unit "
            "ORDER BY unit",
            (end,),
        ).fetchall()
        groups = {}
        for name, members in (
            (GLOBAL_HOLDOUT, held),
            (EXPOSED, [m for m in exposed if m[0] not in out]),
        ):
            index = {unit: i for i, (unit, _) in enumerate(members)}
            first = np.array([ts for _, ts in members], dtype=float)
            rows, _ = _rows(db, "c.ts <= ?", (end,), end, index)
            rows = rows.select(rows.columns["ts"] >= first[rows.unit])
            pre = _pre_period(db, "", index, first, end)
            groups[name] = Group(name, [u for u, _ in members], first, rows, pre)
        return groups
    finally:
        db.close()


def _load(
    db: Connection, experiment: str, until: float, new_to: str | None = None
) -> ExperimentData:
    battles = _battles(db, experiment, until, new_to)
    groups = (
        _arena_groups(db, experiment, until, new_to)
        if battles
        else _ab_groups(db, experiment, until, new_to)
    )
    start_end = db.execute(
        "SELECT (SELECT MIN(ts) FROM exposures WHERE experiment = ?), "
        "(SELECT MAX(ts) FROM completions WHERE experiment = ? AND ts <= ?)",
        (experiment, experiment, until),
    ).fetchone()
    scorer = db.execute(
        "SELECT model FROM scores WHERE ts <= ? ORDER BY ts DESC LIMIT 1", (until,)
    ).fetchone()
    configs = db.execute(
        "SELECT ts, config FROM experiment_configs WHERE experiment = ? AND ts <= ? ORDER BY ts",
        (experiment, until),
    ).fetchall()
    return ExperimentData(
        experiment,
        groups,
        battles,
        start_end[0],
        start_end[1],
        scorer[0] if scorer else None,
        [(float(ts), config) for ts, config in configs],
    )


def _ab_groups(
    db: Connection, experiment: str, until: float, new_to: str | None = None
) -> dict[str, Group]:
    """A/B groups: exposed units by their first exposure, and their completions from then on.

    A unit's earlier requests to the experiment (while it was not allocated, the experiment not
    started, or its unit forced) were served outside it and belong to the pre-period.
    """
    new, new_args = _new("unit", new_to)
    exposures = db.execute(  # each unit's first exposure
        "SELECT unit, variant, reason, ts FROM (SELECT unit, variant, reason, ts, "
        "ROW_NUMBER() OVER (PARTITION BY unit ORDER BY ts, id) AS nth FROM exposures "
        f"WHERE experiment = ? AND exposed = 1 AND ts <= ?{new}) AS first WHERE nth = 1 "
        "ORDER BY unit",
        (experiment, until, *new_args),
    ).fetchall()
    members: dict[str, list[tuple[str, float]]] = {}
    for unit, variant, reason, ts in exposures:
        group = HOLDOUT if reason == "holdout" else variant
        if group is not None:
            members.setdefault(group, []).append((unit, ts))
    groups = {}
    for name, units in sorted(members.items()):
        index = {unit: i for i, (unit, _) in enumerate(units)}
        first = np.array([ts for _, ts in units], dtype=float)
        rows, _ = _rows(
            db,
            "c.experiment = ? AND c.battle_id IS NULL AND c.ts <= ?",
            (experiment, until),
            until,
            index,
        )
        rows = rows.select(rows.columns["ts"] >= first[rows.unit])
        pre = _pre_period(db, experiment, index, first, until)
        groups[name] = Group(name, [u for u, _ in units], first, rows, pre)
    return groups


def _arena_groups(
    db: Connection, experiment: str, until: float, new_to: str | None = None
) -> dict[str, Group]:
    """Arena groups: each variant's battle completions, each completion its own unit (battles,
    not users, are what is randomized in an arena). A side that was never shown, because the
    other side failed, is left out: the voter saw neither answer."""
    variants = [
        v
        for (v,) in db.execute(
            "SELECT DISTINCT variant FROM completions "
            "WHERE experiment = ? AND battle_id IS NOT NULL",
            (experiment,),
        )
    ]
    new, new_args = _new("unit", new_to)
    if new:  # only the battles of units new to that experiment
        new = f" AND c.battle_id IN (SELECT battle_id FROM battles WHERE experiment = ?{new})"
        new_args = (experiment, *new_args)
    groups = {}
    for variant in sorted(variants):
        rows, index = _rows(
            db,
            "c.experiment = ? AND c.battle_id IS NOT NULL AND c.variant = ? AND c.ts <= ? "
            f"AND c.status != ?{new}",
            (experiment, variant, until, NOT_SHOWN, *new_args),
            until,
            unit_expr="c.completion_id",
        )
        empty = Rows(np.zeros(0, dtype=np.int64), {k: np.zeros(0) for k in _ROW_COLUMNS})
        groups[variant] = Group(variant, list(index), rows.columns["ts"].copy(), rows, empty)
    return groups


def _pre_period(
    db: Connection,
    experiment: str,
    index: dict[str, int],
    first: np.ndarray,
    until: float,
) -> Rows:
    """The units' completions before their first exposure, on any model, this experiment's
    unexposed requests included (CUPED covariates)."""
    rows, _ = _rows(db, "TRUE", (), until, index)
    return rows.select(rows.columns["ts"] < first[rows.unit])


def _battles(
    db: Connection, experiment: str, until: float, new_to: str | None = None
) -> BattleRows | None:
    new, new_args = _new("unit", new_to)
    total = db.execute(
        f"SELECT COUNT(*) FROM battles WHERE experiment = ? AND ts <= ?{new}",
        (experiment, until, *new_args),
    ).fetchone()[0]
    if not total:
        return None
    voted = db.execute(
        "SELECT b.ts, b.variant_a, b.variant_b, v.value, b.unit, b.identity_revealed, "
        "b.tokens_a, b.tokens_b, "
        "b.headers_a, b.headers_b, b.list_items_a, b.list_items_b, b.bold_a, b.bold_b "
        "FROM battles b JOIN feedback v ON v.battle_id = b.battle_id AND v.kind = 'vote' "
        f"AND v.ts <= ? WHERE b.experiment = ? AND b.ts <= ?{_new('b.unit', new_to)[0]} "
        "ORDER BY b.ts",
        (until, experiment, until, *new_args),
    ).fetchall()
    table = np.array([row[6:] for row in voted], dtype=float).reshape(len(voted), 8)
    pairs: dict[tuple[str, str], int] = {}
    by_version: dict[int | None, dict[tuple[str, str], int]] = {}
    for a, b, version, count in db.execute(
        "SELECT variant_a, variant_b, weights_version, COUNT(*) FROM battles "
        f"WHERE experiment = ? AND ts <= ?{new} GROUP BY variant_a, variant_b, weights_version",
        (experiment, until, *new_args),
    ):
        key = (min(a, b), max(a, b))
        pairs[key] = pairs.get(key, 0) + count
        period = by_version.setdefault(version, {})
        period[key] = period.get(key, 0) + count
    weights: dict[int, dict[tuple[str, str], float]] = {}
    for version, listed in db.execute(
        "SELECT version, weights FROM weights WHERE experiment = ?", (experiment,)
    ):
        shares: dict[tuple[str, str], float] = {}
        for a, b, share in json.loads(listed):
            key = (min(a, b), max(a, b))
            shares[key] = shares.get(key, 0.0) + float(share)
        weights[version] = shares
    return BattleRows(
        ts=np.array([row[0] for row in voted], dtype=float),
        variant_a=[row[1] for row in voted],
        variant_b=[row[2] for row in voted],
        vote=[row[3] for row in voted],
        voters=[row[4] for row in voted],
        tokens=table[:, :2],
        markdown=np.stack([table[:, [2, 4, 6]], table[:, [3, 5, 7]]], axis=1),
        battles=total,
        pairs=pairs,
        pairs_by_version=by_version,
        weights=weights,
        identity_revealed=np.array([bool(row[5]) for row in voted], dtype=bool),
    )
