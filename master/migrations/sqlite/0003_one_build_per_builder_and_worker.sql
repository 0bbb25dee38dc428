-- switchyard master state, version 3. Keep in step with ../postgres/0003_one_build_per_builder_and_worker.sql.

-- Buildbot's rule: at most one build of a builder runs on one worker at a time (two builds
-- of a builder share its workdir on the worker, and would trample each other's checkout).
-- A worker slot now records the builder it is taken for, and (workerid, builderid) is
-- unique: of two masters starting the same builder on the same worker, exactly one takes
-- the slot, and the rule is released with the slot on every path (the build's end, RETRY,
-- a dead master's expiry, a clean stop), since it is the same row.
ALTER TABLE worker_leases ADD COLUMN builderid INTEGER REFERENCES builders (id);

-- Slots taken before this version: the builder of the request each serves, on the first
-- slot per (worker, builder) only (NULLs never collide), so the unique index can be built
-- whatever was running during the upgrade.
UPDATE worker_leases SET builderid = (
    SELECT r.builderid FROM buildrequests r WHERE r.id = worker_leases.brid
) WHERE NOT EXISTS (
    SELECT 1 FROM worker_leases o
    JOIN buildrequests ro ON ro.id = o.brid
    JOIN buildrequests me ON me.id = worker_leases.brid
    WHERE o.workerid = worker_leases.workerid AND ro.builderid = me.builderid
      AND o.slot < worker_leases.slot
);

CREATE UNIQUE INDEX worker_leases_worker_builder ON worker_leases (workerid, builderid);

-- The heartbeat's repair looks for incomplete buildsets whose requests all completed.
CREATE INDEX buildsets_complete ON buildsets (complete);
