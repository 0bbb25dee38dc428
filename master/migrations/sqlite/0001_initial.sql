-- switchyard master state, version 1: Buildbot's core tables (buildbot/db/model.py), trimmed
-- to what the master uses. Times are Unix epoch seconds and flags are 0/1 integers, as in
-- Buildbot, so the data API can hand rows out unchanged. Keep in step with
-- ../postgres/0001_initial.sql: the two differ only in how ids are generated and in BLOB/BYTEA.

CREATE TABLE masters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    active      INTEGER NOT NULL,
    last_active INTEGER NOT NULL
);

CREATE TABLE builders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT
);

CREATE TABLE workers (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT    NOT NULL UNIQUE,
    info     TEXT    NOT NULL DEFAULT '{}',
    paused   INTEGER NOT NULL DEFAULT 0,
    graceful INTEGER NOT NULL DEFAULT 0
);

-- Which master each worker is connected to; a dead master's rows go when it is expired.
CREATE TABLE connected_workers (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    masterid INTEGER NOT NULL REFERENCES masters (id),
    workerid INTEGER NOT NULL REFERENCES workers (id),
    UNIQUE (masterid, workerid)
);

CREATE TABLE buildsets (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    external_idstring   TEXT,
    reason              TEXT,
    submitted_at        INTEGER NOT NULL,
    complete            INTEGER NOT NULL DEFAULT 0,
    complete_at         INTEGER,
    results             INTEGER,
    parent_buildid      INTEGER,
    parent_relationship TEXT
);

CREATE TABLE buildrequests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    buildsetid   INTEGER NOT NULL REFERENCES buildsets (id),
    builderid    INTEGER NOT NULL REFERENCES builders (id),
    priority     INTEGER NOT NULL DEFAULT 0,
    complete     INTEGER NOT NULL DEFAULT 0,
    results      INTEGER,
    submitted_at INTEGER NOT NULL,
    complete_at  INTEGER,
    waited_for   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX buildrequests_complete ON buildrequests (complete);
CREATE INDEX buildrequests_buildsetid ON buildrequests (buildsetid);
CREATE INDEX buildrequests_builderid ON buildrequests (builderid);

-- The claim protocol: brid is the primary key, so of several masters inserting the same brid
-- exactly one succeeds and the others get a unique violation.
CREATE TABLE buildrequest_claims (
    brid       INTEGER NOT NULL PRIMARY KEY REFERENCES buildrequests (id),
    masterid   INTEGER NOT NULL REFERENCES masters (id),
    claimed_at INTEGER NOT NULL
);
CREATE INDEX buildrequest_claims_masterid ON buildrequest_claims (masterid);

CREATE TABLE builds (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    number           INTEGER NOT NULL,
    builderid        INTEGER NOT NULL REFERENCES builders (id),
    buildrequestid   INTEGER NOT NULL REFERENCES buildrequests (id),
    workerid         INTEGER REFERENCES workers (id),
    masterid         INTEGER NOT NULL REFERENCES masters (id),
    started_at       INTEGER NOT NULL,
    complete_at      INTEGER,
    locks_duration_s INTEGER NOT NULL DEFAULT 0,
    state_string     TEXT    NOT NULL DEFAULT '',
    results          INTEGER,
    UNIQUE (builderid, number)
);
CREATE INDEX builds_masterid ON builds (masterid);
CREATE INDEX builds_buildrequestid ON builds (buildrequestid);

CREATE TABLE steps (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    number       INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    buildid      INTEGER NOT NULL REFERENCES builds (id),
    started_at   INTEGER,
    complete_at  INTEGER,
    state_string TEXT    NOT NULL DEFAULT '',
    results      INTEGER,
    urls_json    TEXT    NOT NULL DEFAULT '[]',
    hidden       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (buildid, number),
    UNIQUE (buildid, name)
);

CREATE TABLE logs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT    NOT NULL,
    slug      TEXT    NOT NULL,
    stepid    INTEGER NOT NULL REFERENCES steps (id),
    complete  INTEGER NOT NULL DEFAULT 0,
    num_lines INTEGER NOT NULL DEFAULT 0,
    -- Buildbot's log types: s(tdio), t(ext), h(tml), d(ata).
    type      TEXT    NOT NULL,
    UNIQUE (stepid, slug)
);

-- Lines first_line..=last_line of a log, newline-terminated, compressed per `compressed`
-- (0 = none, as Buildbot).
CREATE TABLE logchunks (
    logid      INTEGER NOT NULL REFERENCES logs (id),
    first_line INTEGER NOT NULL,
    last_line  INTEGER NOT NULL,
    content    BLOB    NOT NULL,
    compressed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (logid, first_line)
);
