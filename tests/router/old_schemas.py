"""The outcome store's schema as each earlier arena-serve wrote it, verbatim from its commit:
the files that migrations must carry forward (`tests/router/test_migrations.py`)."""

# version 1 (the first store); commit ebf1ea3.
V1 = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    variant TEXT NOT NULL,
    unit TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    completion_id TEXT NOT NULL REFERENCES completions (completion_id),
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
"""

# version 2 as it began: battles without style columns, no scores; commit 953e3a9.
V2_FIRST = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    battle_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
"""

# version 2 as it ended: scores, battles with style columns; commit a259cb6.
V2_LAST = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    battle_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    tokens_a INTEGER,
    tokens_b INTEGER,
    headers_a INTEGER NOT NULL,
    headers_b INTEGER NOT NULL,
    list_items_a INTEGER NOT NULL,
    list_items_b INTEGER NOT NULL,
    bold_a INTEGER NOT NULL,
    bold_b INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS scores (
    completion_id TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    experiment TEXT,
    variant TEXT,
    score REAL NOT NULL,
    latency_s REAL NOT NULL,
    PRIMARY KEY (completion_id, model)
);
CREATE INDEX IF NOT EXISTS scores_by_experiment ON scores (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
"""

# version 3 (client request ids, voters, unique keys per API key); commit b657e2f.
V3 = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    battle_id TEXT,
    client_request_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    tokens_a INTEGER,
    tokens_b INTEGER,
    headers_a INTEGER NOT NULL,
    headers_b INTEGER NOT NULL,
    list_items_a INTEGER NOT NULL,
    list_items_b INTEGER NOT NULL,
    bold_a INTEGER NOT NULL,
    bold_b INTEGER NOT NULL,
    unit_type TEXT NOT NULL DEFAULT 'user',
    voter TEXT,
    principal TEXT,
    identity_revealed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS scores (
    completion_id TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    experiment TEXT,
    variant TEXT,
    score REAL NOT NULL,
    latency_s REAL NOT NULL,
    battle_id TEXT,
    PRIMARY KEY (completion_id, model)
);
CREATE INDEX IF NOT EXISTS scores_by_experiment ON scores (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    principal TEXT NOT NULL DEFAULT '',
    user TEXT,
    session TEXT,
    UNIQUE (principal, idempotency_key),
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
"""

# version 4 (transcripts, meta, regenerate links); commit 638ce9a.
V4 = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    battle_id TEXT,
    client_request_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    tokens_a INTEGER,
    tokens_b INTEGER,
    headers_a INTEGER NOT NULL,
    headers_b INTEGER NOT NULL,
    list_items_a INTEGER NOT NULL,
    list_items_b INTEGER NOT NULL,
    bold_a INTEGER NOT NULL,
    bold_b INTEGER NOT NULL,
    unit_type TEXT NOT NULL DEFAULT 'user',
    voter TEXT,
    principal TEXT,
    identity_revealed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS scores (
    completion_id TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    experiment TEXT,
    variant TEXT,
    score REAL NOT NULL,
    latency_s REAL NOT NULL,
    battle_id TEXT,
    PRIMARY KEY (completion_id, model)
);
CREATE INDEX IF NOT EXISTS scores_by_experiment ON scores (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    principal TEXT NOT NULL DEFAULT '',
    user TEXT,
    session TEXT,
    new_completion_id TEXT,
    UNIQUE (principal, idempotency_key),
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
CREATE TABLE IF NOT EXISTS transcripts (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    experiment TEXT NOT NULL,
    messages TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_by_time ON transcripts (ts);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Version 6 as it landed (commit 14056f2), before arm_holds.
V6 = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL,
    weights_version INTEGER,
    propensity REAL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    weights_version INTEGER,
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    battle_id TEXT,
    client_request_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    tokens_a INTEGER,
    tokens_b INTEGER,
    headers_a INTEGER NOT NULL,
    headers_b INTEGER NOT NULL,
    list_items_a INTEGER NOT NULL,
    list_items_b INTEGER NOT NULL,
    bold_a INTEGER NOT NULL,
    bold_b INTEGER NOT NULL,
    unit_type TEXT NOT NULL DEFAULT 'user',
    voter TEXT,
    principal TEXT,
    identity_revealed INTEGER NOT NULL DEFAULT 0,
    pair_share REAL,
    weights_version INTEGER
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS scores (
    completion_id TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    experiment TEXT,
    variant TEXT,
    score REAL NOT NULL,
    latency_s REAL NOT NULL,
    battle_id TEXT,
    PRIMARY KEY (completion_id, model)
);
CREATE INDEX IF NOT EXISTS scores_by_experiment ON scores (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    principal TEXT NOT NULL DEFAULT '',
    user TEXT,
    session TEXT,
    new_completion_id TEXT,
    UNIQUE (principal, idempotency_key),
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
CREATE TABLE IF NOT EXISTS transcripts (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    experiment TEXT NOT NULL,
    messages TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_by_time ON transcripts (ts);
CREATE TABLE IF NOT EXISTS probes (
    ts REAL NOT NULL,
    run_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    revision TEXT NOT NULL,
    probe_set TEXT NOT NULL,
    item_id TEXT NOT NULL,
    family TEXT NOT NULL,
    first TEXT NOT NULL,
    pushback TEXT NOT NULL,
    suggestion TEXT NOT NULL,
    first_answer TEXT NOT NULL,
    pushback_answer TEXT NOT NULL,
    suggestion_answer TEXT NOT NULL,
    experiment TEXT,
    PRIMARY KEY (run_id, variant, item_id)
);
CREATE INDEX IF NOT EXISTS probes_by_variant ON probes (variant, revision);
CREATE TABLE IF NOT EXISTS weights (
    experiment TEXT NOT NULL,
    version INTEGER NOT NULL,
    ts REAL NOT NULL,
    weights TEXT NOT NULL,
    observations INTEGER NOT NULL,
    PRIMARY KEY (experiment, version)
);
CREATE TABLE IF NOT EXISTS experiment_configs (
    experiment TEXT NOT NULL,
    ts REAL NOT NULL,
    revision TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (experiment, ts, revision)
);
CREATE TABLE IF NOT EXISTS ramp_holds (
    experiment TEXT NOT NULL,
    revision TEXT NOT NULL,
    ts REAL NOT NULL,
    step INTEGER NOT NULL,
    allocation REAL NOT NULL,
    guardrail TEXT NOT NULL,
    PRIMARY KEY (experiment, revision)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Version 7 as it landed (commit b336f7b), before the counters of /metrics.
V7 = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL,
    weights_version INTEGER,
    propensity REAL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    weights_version INTEGER,
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    battle_id TEXT,
    client_request_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    tokens_a INTEGER,
    tokens_b INTEGER,
    headers_a INTEGER NOT NULL,
    headers_b INTEGER NOT NULL,
    list_items_a INTEGER NOT NULL,
    list_items_b INTEGER NOT NULL,
    bold_a INTEGER NOT NULL,
    bold_b INTEGER NOT NULL,
    unit_type TEXT NOT NULL DEFAULT 'user',
    voter TEXT,
    principal TEXT,
    identity_revealed INTEGER NOT NULL DEFAULT 0,
    pair_share REAL,
    weights_version INTEGER
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS scores (
    completion_id TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    experiment TEXT,
    variant TEXT,
    score REAL NOT NULL,
    latency_s REAL NOT NULL,
    battle_id TEXT,
    PRIMARY KEY (completion_id, model)
);
CREATE INDEX IF NOT EXISTS scores_by_experiment ON scores (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    principal TEXT NOT NULL DEFAULT '',
    user TEXT,
    session TEXT,
    new_completion_id TEXT,
    UNIQUE (principal, idempotency_key),
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
CREATE TABLE IF NOT EXISTS transcripts (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    experiment TEXT NOT NULL,
    messages TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_by_time ON transcripts (ts);
CREATE TABLE IF NOT EXISTS probes (
    ts REAL NOT NULL,
    run_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    revision TEXT NOT NULL,
    probe_set TEXT NOT NULL,
    item_id TEXT NOT NULL,
    family TEXT NOT NULL,
    first TEXT NOT NULL,
    pushback TEXT NOT NULL,
    suggestion TEXT NOT NULL,
    first_answer TEXT NOT NULL,
    pushback_answer TEXT NOT NULL,
    suggestion_answer TEXT NOT NULL,
    experiment TEXT,
    PRIMARY KEY (run_id, variant, item_id)
);
CREATE INDEX IF NOT EXISTS probes_by_variant ON probes (variant, revision);
CREATE TABLE IF NOT EXISTS weights (
    experiment TEXT NOT NULL,
    version INTEGER NOT NULL,
    ts REAL NOT NULL,
    weights TEXT NOT NULL,
    observations INTEGER NOT NULL,
    PRIMARY KEY (experiment, version)
);
CREATE TABLE IF NOT EXISTS experiment_configs (
    experiment TEXT NOT NULL,
    ts REAL NOT NULL,
    revision TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (experiment, ts, revision)
);
CREATE TABLE IF NOT EXISTS ramp_holds (
    experiment TEXT NOT NULL,
    revision TEXT NOT NULL,
    ts REAL NOT NULL,
    step INTEGER NOT NULL,
    allocation REAL NOT NULL,
    guardrail TEXT NOT NULL,
    PRIMARY KEY (experiment, revision)
);
CREATE TABLE IF NOT EXISTS arm_holds (
    experiment TEXT NOT NULL,
    revision TEXT NOT NULL,
    arm TEXT NOT NULL,
    ts REAL NOT NULL,
    version INTEGER NOT NULL,
    share REAL NOT NULL,
    guardrail TEXT NOT NULL,
    PRIMARY KEY (experiment, revision, arm)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""
