//! Log lines that carry values from the network: [`Trunc`] bounds each one, so a client
//! cannot write megabytes into the log with one oversized authid, URI or node name.

use std::fmt;

/// How many bytes of a value a log line shows.
pub const LOG_VALUE_MAX: usize = 128;

/// Displays at most [`LOG_VALUE_MAX`] bytes of a string (cut on a character boundary),
/// followed by `…(N bytes)` when it was cut.
pub struct Trunc<'a>(pub &'a str);

impl fmt::Display for Trunc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= LOG_VALUE_MAX {
            return f.write_str(s);
        }
        let mut end = LOG_VALUE_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…({} bytes)", &s[..end], s.len())
    }
}

impl fmt::Debug for Trunc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        assert_eq!(Trunc("short").to_string(), "short");
        let long = "é".repeat(100); // 200 bytes
        let shown = Trunc(&long).to_string();
        assert!(shown.ends_with("…(200 bytes)"), "{shown}");
        assert!(shown.len() < LOG_VALUE_MAX + 20);
    }
}
