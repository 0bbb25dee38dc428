//! The git step's shell script, and the checks that keep values from properties (a forced
//! build's `branch` or `revision`, a change's) from ever becoming options of a git command.
//!
//! Two layers: every ref is validated here first ([`check_ref`], git's `check-ref-format`
//! rules plus a ban on a leading `-`), and the script still passes it after
//! `--end-of-options` and before `--`, so git would read it as a revision even if a check
//! were missed.

use std::fmt;

/// Longest branch or revision accepted (git allows longer, nobody needs it).
const MAX_REF_LEN: usize = 255;

/// Why a branch or revision was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRef {
    pub what: &'static str,
    /// The refused value, shortened for the log.
    pub value: String,
    pub reason: &'static str,
}

impl fmt::Display for BadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing the {} {:?}: {}",
            self.what, self.value, self.reason
        )
    }
}

impl std::error::Error for BadRef {}

/// Checks a branch name or revision as `git check-ref-format --allow-onelevel` would, and
/// refuses what git could read as an option.
pub fn check_ref(what: &'static str, value: &str) -> Result<(), BadRef> {
    let refuse = |reason| {
        let mut shown: String = value.chars().take(80).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        Err(BadRef {
            what,
            value: shown,
            reason,
        })
    };
    if value.is_empty() {
        return refuse("it is empty");
    }
    if value.len() > MAX_REF_LEN {
        return refuse("it is longer than 255 bytes");
    }
    if value.starts_with('-') {
        return refuse("it starts with '-' (git would read it as an option)");
    }
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return refuse("it contains a space, a control character or one of ~ ^ : ? * [ \\");
    }
    if value.contains("..") || value.contains("@{") || value == "@" {
        return refuse("it contains '..' or '@{', or is '@'");
    }
    if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
        return refuse("it has an empty path component");
    }
    if value.ends_with('.') {
        return refuse("it ends with '.'");
    }
    if value
        .split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return refuse("a component starts with '.' or ends with '.lock'");
    }
    Ok(())
}

/// Quotes a string for `/bin/sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script of a git step: clone or fetch `repo` into the workdir, then check out
/// `revision`, else `branch`, else the remote's default branch. Fails with [`BadRef`] if a
/// branch or revision is not a valid ref.
pub fn checkout_script(
    repo: &str,
    branch: Option<&str>,
    revision: Option<&str>,
) -> Result<String, BadRef> {
    if let Some(b) = branch {
        check_ref("branch", b)?;
    }
    if let Some(r) = revision {
        check_ref("revision", r)?;
    }
    let mut script = format!(
        "set -e\nif [ -d .git ]; then git remote set-url -- origin {r}; git fetch --prune --tags origin; \
         else git clone --no-checkout -- {r} .; fi\n",
        r = sh_quote(repo)
    );
    match (revision, branch) {
        (Some(rev), _) => script.push_str(&format!(
            "git checkout --force --end-of-options {} --\n",
            sh_quote(rev)
        )),
        (None, Some(b)) => script.push_str(&format!(
            "git checkout --force -B {b} --end-of-options {o} --\n",
            b = sh_quote(b),
            o = sh_quote(&format!("origin/{b}"))
        )),
        (None, None) => script.push_str(
            "git checkout --force \"$(git symbolic-ref --short refs/remotes/origin/HEAD 2>/dev/null | sed 's#^origin/##' || echo HEAD)\" -- 2>/dev/null \
             || git checkout --force origin/HEAD --\n",
        ),
    }
    script.push_str("git log -1 --format='checked out %H'\n");
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_refs_pass() {
        for r in [
            "main",
            "feature/x-1",
            "v1.2.3",
            "0123456789abcdef0123456789abcdef01234567",
            "refs/heads/main",
        ] {
            assert_eq!(check_ref("branch", r), Ok(()), "{r}");
        }
    }

    #[test]
    fn options_and_malformed_refs_are_refused() {
        for r in [
            "--orphan=x",
            "-b",
            "",
            "a b",
            "a..b",
            "a~1",
            "x^{}",
            "a:b",
            "a\nb",
            "/a",
            "a/",
            "a//b",
            ".hidden",
            "a/.b",
            "x.lock",
            "x.",
            "@",
            "a@{1}",
            "a\\b",
            "a*",
        ] {
            assert!(check_ref("revision", r).is_err(), "{r:?} accepted");
        }
        assert!(check_ref("branch", &"a".repeat(256)).is_err());
        let e = check_ref("revision", "--orphan=x").unwrap_err();
        assert!(e.to_string().contains("starts with '-'"), "{e}");
        assert!(checkout_script("r", None, Some("--orphan=x")).is_err());
        assert!(checkout_script("r", Some("-f"), None).is_err());
    }

    #[test]
    fn revisions_follow_end_of_options() {
        let s = checkout_script("/r", Some("main"), Some("abc")).unwrap();
        assert!(
            s.contains("git checkout --force --end-of-options 'abc' --"),
            "{s}"
        );
        let s = checkout_script("/r", Some("dev"), None).unwrap();
        assert!(
            s.contains("-B 'dev' --end-of-options 'origin/dev' --"),
            "{s}"
        );
        assert!(s.contains("git clone --no-checkout -- '/r' ."), "{s}");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}
