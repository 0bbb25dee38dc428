//! Build results, with Buildbot's names and integer codes (`buildbot/process/results.py`),
//! because the codes are stored in the database and handed out unchanged on the bus and the
//! data API, where Buildbot tools expect them.

use std::fmt;

/// The result of a step, build, build request or buildset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum Results {
    Success = 0,
    Warnings = 1,
    Failure = 2,
    Skipped = 3,
    Exception = 4,
    /// The work stopped for a reason outside it (a worker lost, a master expired): run again.
    Retry = 5,
    Cancelled = 6,
}

impl Results {
    pub const ALL: [Results; 7] = [
        Results::Success,
        Results::Warnings,
        Results::Failure,
        Results::Skipped,
        Results::Exception,
        Results::Retry,
        Results::Cancelled,
    ];

    /// The integer stored in `results` columns.
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<Results> {
        Results::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The worse of two results, by Buildbot's order (`worst_status`): SKIPPED < SUCCESS <
    /// WARNINGS < FAILURE < EXCEPTION < RETRY < CANCELLED.
    pub fn worst(self, other: Results) -> Results {
        fn rank(r: Results) -> u8 {
            match r {
                Results::Skipped => 0,
                Results::Success => 1,
                Results::Warnings => 2,
                Results::Failure => 3,
                Results::Exception => 4,
                Results::Retry => 5,
                Results::Cancelled => 6,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// Buildbot's lower-case name (`Results[code]` in Python).
    pub fn name(self) -> &'static str {
        match self {
            Results::Success => "success",
            Results::Warnings => "warnings",
            Results::Failure => "failure",
            Results::Skipped => "skipped",
            Results::Exception => "exception",
            Results::Retry => "retry",
            Results::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_buildbot() {
        let codes: Vec<i64> = Results::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(Results::from_code(5), Some(Results::Retry));
        assert_eq!(Results::from_code(7), None);
        assert_eq!(Results::Cancelled.to_string(), "cancelled");
        assert_eq!(Results::Skipped.worst(Results::Success), Results::Success);
        assert_eq!(Results::Failure.worst(Results::Warnings), Results::Failure);
        assert_eq!(Results::Retry.worst(Results::Cancelled), Results::Cancelled);
    }
}
