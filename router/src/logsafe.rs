//! Log lines that carry what the network sent: [`Trunc`] cuts a client's string (an authid,
//! a URI, a peer's node name, an error text quoting input) so that no single value can make
//! a log line longer than a few hundred bytes.

use std::fmt;

/// How much of a value a log line shows.
pub const LOG_MAX_BYTES: usize = 128;

/// Displays a string cut at [`LOG_MAX_BYTES`] (on a char boundary) followed by
/// `…(N bytes)` when it is longer. `{:?}` quotes and escapes the shown part.
#[derive(Clone, Copy)]
pub struct Trunc<'a>(pub &'a str);

impl Trunc<'_> {
    /// The shown part, and whether anything was left out.
    fn head(&self) -> (&str, bool) {
        if self.0.len() <= LOG_MAX_BYTES {
            return (self.0, false);
        }
        let mut end = LOG_MAX_BYTES;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        (&self.0[..end], true)
    }
}

impl fmt::Display for Trunc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head() {
            (s, false) => f.write_str(s),
            (s, true) => write!(f, "{s}…({} bytes)", self.0.len()),
        }
    }
}

impl fmt::Debug for Trunc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head() {
            (s, false) => write!(f, "{s:?}"),
            (s, true) => write!(f, "{s:?}…({} bytes)", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole() {
        assert_eq!(Trunc("alice").to_string(), "alice");
        assert_eq!(format!("{:?}", Trunc("a\"b")), "\"a\\\"b\"");
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let long = "é".repeat(1000); // 2000 bytes
        let shown = Trunc(&long).to_string();
        assert!(shown.ends_with("…(2000 bytes)"), "{shown}");
        assert!(shown.len() < LOG_MAX_BYTES + 20);
        assert!(shown.starts_with(&"é".repeat(64)));
    }
}
