//! The data API's resource types: each one's plural and fields, with the kind that decides
//! how a field's filter values are read and compared.

/// How a field's filter values are read and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Bool,
    Text,
    /// A JSON list: `contains` only.
    List,
    /// A JSON object: not filterable.
    Object,
}

/// A data API resource type: its plural (the answer's key) and its fields.
#[derive(Debug)]
pub struct Resource {
    pub plural: &'static str,
    pub fields: &'static [(&'static str, Kind)],
}

impl Resource {
    pub(super) fn field(&self, name: &str) -> Option<(&'static str, Kind)> {
        self.fields.iter().copied().find(|(n, _)| *n == name)
    }
}

use Kind::{Bool, Int, List, Object, Text};

pub const MASTERS: Resource = Resource {
    plural: "masters",
    fields: &[
        ("masterid", Int),
        ("name", Text),
        ("active", Bool),
        ("last_active", Int),
        ("state", Text),
    ],
};

pub const BUILDERS: Resource = Resource {
    plural: "builders",
    fields: &[
        ("builderid", Int),
        ("name", Text),
        ("description", Text),
        ("masterids", List),
        ("tags", List),
        ("projectid", Int),
        ("description_format", Text),
        ("description_html", Text),
    ],
};

pub const WORKERS: Resource = Resource {
    plural: "workers",
    fields: &[
        ("workerid", Int),
        ("name", Text),
        ("paused", Bool),
        ("graceful", Bool),
        ("connected_to", List),
        ("configured_on", List),
        ("workerinfo", Object),
        ("pause_reason", Text),
    ],
};

pub const BUILDSETS: Resource = Resource {
    plural: "buildsets",
    fields: &[
        ("bsid", Int),
        ("external_idstring", Text),
        ("reason", Text),
        ("submitted_at", Int),
        ("complete", Bool),
        ("complete_at", Int),
        ("results", Int),
        ("parent_buildid", Int),
        ("parent_relationship", Text),
        ("rebuilt_buildid", Int),
        ("sourcestamps", List),
    ],
};

pub const BUILDREQUESTS: Resource = Resource {
    plural: "buildrequests",
    fields: &[
        ("buildrequestid", Int),
        ("buildsetid", Int),
        ("builderid", Int),
        ("priority", Int),
        ("claimed", Bool),
        ("claimed_at", Int),
        ("claimed_by_masterid", Int),
        ("complete", Bool),
        ("results", Int),
        ("submitted_at", Int),
        ("complete_at", Int),
        ("waited_for", Bool),
        ("properties", Object),
    ],
};

pub const BUILDS: Resource = Resource {
    plural: "builds",
    fields: &[
        ("buildid", Int),
        ("number", Int),
        ("builderid", Int),
        ("buildrequestid", Int),
        ("workerid", Int),
        ("masterid", Int),
        ("started_at", Int),
        ("complete", Bool),
        ("complete_at", Int),
        ("locks_duration_s", Int),
        ("state_string", Text),
        ("results", Int),
        ("properties", Object),
    ],
};

pub const STEPS: Resource = Resource {
    plural: "steps",
    fields: &[
        ("stepid", Int),
        ("number", Int),
        ("name", Text),
        ("buildid", Int),
        ("started_at", Int),
        ("complete", Bool),
        ("complete_at", Int),
        ("state_string", Text),
        ("results", Int),
        ("urls", List),
        ("hidden", Bool),
        ("locks_acquired_at", Int),
    ],
};

pub const LOGS: Resource = Resource {
    plural: "logs",
    fields: &[
        ("logid", Int),
        ("name", Text),
        ("slug", Text),
        ("stepid", Int),
        ("complete", Bool),
        ("num_lines", Int),
        ("type", Text),
    ],
};

pub const LOGCHUNKS: Resource = Resource {
    plural: "logchunks",
    fields: &[("logid", Int), ("firstline", Int), ("content", Text)],
};

pub const CHANGES: Resource = Resource {
    plural: "changes",
    fields: &[
        ("changeid", Int),
        ("author", Text),
        ("committer", Text),
        ("comments", Text),
        ("branch", Text),
        ("revision", Text),
        ("revlink", Text),
        ("when_timestamp", Int),
        ("category", Text),
        ("repository", Text),
        ("codebase", Text),
        ("project", Text),
        ("properties", Object),
        ("files", List),
        ("parent_changeids", List),
        ("sourcestamp", Object),
    ],
};

pub const SCHEDULERS: Resource = Resource {
    plural: "schedulers",
    fields: &[
        ("schedulerid", Int),
        ("name", Text),
        ("enabled", Bool),
        ("master", Object),
    ],
};

pub const FORCESCHEDULERS: Resource = Resource {
    plural: "forceschedulers",
    fields: &[
        ("name", Text),
        ("label", Text),
        ("button_name", Text),
        ("builder_names", List),
        ("all_fields", List),
        ("enabled", Bool),
    ],
};

/// Properties are one object of `name: [value, source]`: no field of it can be selected.
pub const PROPERTIES: Resource = Resource {
    plural: "properties",
    fields: &[],
};

/// Every resource type above, for `application.spec`.
pub const ALL: &[&Resource] = &[
    &MASTERS,
    &BUILDERS,
    &WORKERS,
    &BUILDSETS,
    &BUILDREQUESTS,
    &BUILDS,
    &STEPS,
    &LOGS,
    &LOGCHUNKS,
    &CHANGES,
    &SCHEDULERS,
    &FORCESCHEDULERS,
];
