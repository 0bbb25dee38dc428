-- switchyard master state, version 2: what the running master needs beyond the claim
-- protocol: worker build slots, builder and scheduler ownership, changes, properties, and a
-- master's lifecycle state. Keep in step with ../postgres/0002_master_engine.sql.

-- running | draining | stopped (graceful shutdown shows `draining` while builds finish).
ALTER TABLE masters ADD COLUMN state TEXT NOT NULL DEFAULT 'running';

-- A running build holds one of its worker's `max_builds` slots. (workerid, slot) is the
-- primary key, so of several masters taking the same slot exactly one succeeds: the same
-- unique-key arbitration as build request claims, and it makes a worker's limit hold across
-- every master. Released when the build ends, or by expiry when its master dies.
CREATE TABLE worker_leases (
    workerid    INTEGER NOT NULL REFERENCES workers (id),
    slot        INTEGER NOT NULL,
    masterid    INTEGER NOT NULL REFERENCES masters (id),
    brid        INTEGER NOT NULL REFERENCES buildrequests (id),
    acquired_at INTEGER NOT NULL,
    PRIMARY KEY (workerid, slot)
);
CREATE INDEX worker_leases_masterid ON worker_leases (masterid);

-- Which live masters run which builders (Buildbot's builder_masters): a request for a
-- builder no live master serves stays queued, visibly.
CREATE TABLE builder_masters (
    builderid INTEGER NOT NULL REFERENCES builders (id),
    masterid  INTEGER NOT NULL REFERENCES masters (id),
    PRIMARY KEY (builderid, masterid)
);

CREATE TABLE schedulers (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT   NOT NULL UNIQUE,
    enabled INTEGER NOT NULL DEFAULT 1,
    -- periodic schedulers: when the last buildset was made, so a takeover keeps the rhythm.
    last_run INTEGER
);

-- The one master running each scheduler (primary key: at most one owner); released when the
-- owner is expired or stops, taken over by another.
CREATE TABLE scheduler_masters (
    schedulerid INTEGER NOT NULL PRIMARY KEY REFERENCES schedulers (id),
    masterid    INTEGER NOT NULL REFERENCES masters (id),
    claimed_at  INTEGER NOT NULL
);

CREATE TABLE changes (
    changeid       INTEGER PRIMARY KEY AUTOINCREMENT,
    author         TEXT   NOT NULL,
    committer      TEXT,
    comments       TEXT   NOT NULL DEFAULT '',
    branch         TEXT,
    revision       TEXT,
    revlink        TEXT,
    when_timestamp INTEGER NOT NULL,
    category       TEXT,
    repository     TEXT   NOT NULL DEFAULT '',
    codebase       TEXT   NOT NULL DEFAULT '',
    project        TEXT   NOT NULL DEFAULT '',
    -- JSON: {"name": [value, source]} and ["path", ...], as Buildbot's data API shows them.
    properties     TEXT   NOT NULL DEFAULT '{}',
    files          TEXT   NOT NULL DEFAULT '[]'
);

ALTER TABLE buildsets ADD COLUMN scheduler TEXT;
ALTER TABLE buildsets ADD COLUMN changeid INTEGER;

-- JSON-encoded [value, source] pairs, as Buildbot stores them.
CREATE TABLE buildset_properties (
    buildsetid     INTEGER NOT NULL REFERENCES buildsets (id),
    property_name  TEXT   NOT NULL,
    property_value TEXT   NOT NULL,
    PRIMARY KEY (buildsetid, property_name)
);

CREATE TABLE build_properties (
    buildid INTEGER NOT NULL REFERENCES builds (id),
    name    TEXT   NOT NULL,
    value   TEXT   NOT NULL,
    source  TEXT   NOT NULL,
    PRIMARY KEY (buildid, name)
);
