//! An index from URI patterns (exact, prefix, wildcard) to values, shared by broker and dealer.
//!
//! - exact: one hash map;
//! - prefix: a hash map of prefixes plus the set of distinct prefix lengths in use, so a match
//!   costs one lookup per distinct length (a handful in practice) instead of a scan;
//! - wildcard: a component trie in which an empty component is a slot matching any one
//!   component (the NATS `pwc` slot), so a match visits only the branches that can match.
//!
//! No operation scans all patterns. The broker asks for every match; the dealer for the best
//! one (exact, then longest prefix, then the most specific wildcard).

use std::collections::{BTreeMap, HashMap};

use crate::uri::MatchPolicy;

/// A wildcard trie node, one level per URI component.
#[derive(Debug)]
struct Node<T> {
    literal: HashMap<String, Node<T>>,
    any: Option<Box<Node<T>>>,
    /// The value of a pattern that ends at this depth.
    value: Option<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            any: None,
            value: None,
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.literal.is_empty() && self.any.is_none()
    }

    fn get(&self, comps: &[&str]) -> Option<&T> {
        match comps.split_first() {
            None => self.value.as_ref(),
            Some((&"", rest)) => self.any.as_ref()?.get(rest),
            Some((c, rest)) => self.literal.get(*c)?.get(rest),
        }
    }

    fn get_mut(&mut self, comps: &[&str]) -> Option<&mut T> {
        match comps.split_first() {
            None => self.value.as_mut(),
            Some((&"", rest)) => self.any.as_mut()?.get_mut(rest),
            Some((c, rest)) => self.literal.get_mut(*c)?.get_mut(rest),
        }
    }

    fn slot(&mut self, comps: &[&str]) -> &mut Option<T> {
        match comps.split_first() {
            None => &mut self.value,
            Some((&"", rest)) => self.any.get_or_insert_with(Default::default).slot(rest),
            Some((c, rest)) => self.literal.entry((*c).to_owned()).or_default().slot(rest),
        }
    }

    /// Removes the value at `comps`, pruning nodes left empty.
    fn remove(&mut self, comps: &[&str]) -> Option<T> {
        match comps.split_first() {
            None => self.value.take(),
            Some((&"", rest)) => {
                let child = self.any.as_mut()?;
                let v = child.remove(rest);
                if child.is_empty() {
                    self.any = None;
                }
                v
            }
            Some((c, rest)) => {
                let child = self.literal.get_mut(*c)?;
                let v = child.remove(rest);
                if child.is_empty() {
                    self.literal.remove(*c);
                }
                v
            }
        }
    }

    /// Visits every pattern matching `comps`, with the count of literal components it used.
    fn matches<'a>(&'a self, comps: &[&str], literals: usize, f: &mut impl FnMut(&'a T, usize)) {
        match comps.split_first() {
            None => {
                if let Some(v) = &self.value {
                    f(v, literals)
                }
            }
            Some((c, rest)) => {
                if let Some(n) = self.literal.get(*c) {
                    n.matches(rest, literals + 1, f);
                }
                if let Some(n) = &self.any {
                    n.matches(rest, literals, f);
                }
            }
        }
    }
}

/// Patterns of all three policies mapped to values of type `T`.
#[derive(Debug)]
pub struct UriIndex<T> {
    exact: HashMap<String, T>,
    prefix: HashMap<String, T>,
    /// Distinct prefix lengths in use, with how many prefixes have each.
    prefix_lengths: BTreeMap<usize, usize>,
    wildcard: Node<T>,
    len: usize,
}

impl<T> Default for UriIndex<T> {
    fn default() -> Self {
        UriIndex {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            prefix_lengths: BTreeMap::new(),
            wildcard: Node::default(),
            len: 0,
        }
    }
}

impl<T> UriIndex<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, policy: MatchPolicy, uri: &str) -> Option<&T> {
        match policy {
            MatchPolicy::Exact => self.exact.get(uri),
            MatchPolicy::Prefix => self.prefix.get(uri),
            MatchPolicy::Wildcard => self.wildcard.get(&components(uri)),
        }
    }

    pub fn get_mut(&mut self, policy: MatchPolicy, uri: &str) -> Option<&mut T> {
        match policy {
            MatchPolicy::Exact => self.exact.get_mut(uri),
            MatchPolicy::Prefix => self.prefix.get_mut(uri),
            MatchPolicy::Wildcard => self.wildcard.get_mut(&components(uri)),
        }
    }

    /// Inserts a pattern, returning the value it replaced.
    pub fn insert(&mut self, policy: MatchPolicy, uri: &str, value: T) -> Option<T> {
        let old = match policy {
            MatchPolicy::Exact => self.exact.insert(uri.to_owned(), value),
            MatchPolicy::Prefix => {
                let old = self.prefix.insert(uri.to_owned(), value);
                if old.is_none() {
                    *self.prefix_lengths.entry(uri.len()).or_default() += 1;
                }
                old
            }
            MatchPolicy::Wildcard => self.wildcard.slot(&components(uri)).replace(value),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, policy: MatchPolicy, uri: &str) -> Option<T> {
        let old = match policy {
            MatchPolicy::Exact => self.exact.remove(uri),
            MatchPolicy::Prefix => {
                let old = self.prefix.remove(uri);
                if old.is_some() {
                    if let Some(n) = self.prefix_lengths.get_mut(&uri.len()) {
                        *n -= 1;
                        if *n == 0 {
                            self.prefix_lengths.remove(&uri.len());
                        }
                    }
                }
                old
            }
            MatchPolicy::Wildcard => self.wildcard.remove(&components(uri)),
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Calls `f` for every pattern that matches the concrete `uri`, with its policy.
    pub fn for_each_match<'a>(&'a self, uri: &str, mut f: impl FnMut(MatchPolicy, &'a T)) {
        if let Some(v) = self.exact.get(uri) {
            f(MatchPolicy::Exact, v);
        }
        for &len in self.prefix_lengths.keys() {
            if len > uri.len() {
                break;
            }
            if uri.is_char_boundary(len) {
                if let Some(v) = self.prefix.get(&uri[..len]) {
                    f(MatchPolicy::Prefix, v);
                }
            }
        }
        if !self.wildcard.is_empty() {
            self.wildcard
                .matches(&components(uri), 0, &mut |v, _| f(MatchPolicy::Wildcard, v));
        }
    }

    /// The best match for a procedure: exact, else the longest prefix, else the wildcard with
    /// the most literal components (ties go to the one whose literals come first).
    pub fn best_match(&self, uri: &str) -> Option<(MatchPolicy, &T)> {
        if let Some(v) = self.exact.get(uri) {
            return Some((MatchPolicy::Exact, v));
        }
        if let Some(v) = self.longest_prefix(uri) {
            return Some((MatchPolicy::Prefix, v));
        }
        self.best_wildcard(uri).map(|v| (MatchPolicy::Wildcard, v))
    }

    /// The exact pattern equal to `uri`.
    pub fn exact(&self, uri: &str) -> Option<&T> {
        self.exact.get(uri)
    }

    /// The longest prefix pattern `uri` starts with.
    pub fn longest_prefix(&self, uri: &str) -> Option<&T> {
        for &len in self.prefix_lengths.keys().rev() {
            if len <= uri.len() && uri.is_char_boundary(len) {
                if let Some(v) = self.prefix.get(&uri[..len]) {
                    return Some(v);
                }
            }
        }
        None
    }

    /// The matching wildcard pattern with the most literal components (ties go to the one
    /// whose literals come first).
    pub fn best_wildcard(&self, uri: &str) -> Option<&T> {
        if self.wildcard.is_empty() {
            return None;
        }
        let mut best: Option<(&T, usize)> = None;
        // The trie visits literal branches before wildcard slots, so the first of equally
        // specific matches is the one whose literal components come earliest.
        self.wildcard
            .matches(&components(uri), 0, &mut |v, literals| {
                if best.is_none_or(|(_, l)| literals > l) {
                    best = Some((v, literals));
                }
            });
        best.map(|(v, _)| v)
    }
}

fn components(uri: &str) -> Vec<&str> {
    uri.split('.').collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use MatchPolicy::*;

    fn all(idx: &UriIndex<u32>, uri: &str) -> Vec<(MatchPolicy, u32)> {
        let mut v = Vec::new();
        idx.for_each_match(uri, |p, x| v.push((p, *x)));
        v.sort();
        v
    }

    #[test]
    fn matches_all_three_policies() {
        let mut idx = UriIndex::default();
        idx.insert(Exact, "com.example.topic", 1);
        idx.insert(Prefix, "com.example", 2);
        idx.insert(Prefix, "com", 3);
        idx.insert(Wildcard, "com..topic", 4);
        idx.insert(Wildcard, "com.example.", 5);
        idx.insert(Wildcard, "com.", 6);
        assert_eq!(
            all(&idx, "com.example.topic"),
            vec![
                (Exact, 1),
                (Prefix, 2),
                (Prefix, 3),
                (Wildcard, 4),
                (Wildcard, 5)
            ]
        );
        // Prefix is a string prefix: com.example matches com.example2.
        assert_eq!(
            all(&idx, "com.example2"),
            vec![(Prefix, 2), (Prefix, 3), (Wildcard, 6)]
        );
        assert_eq!(all(&idx, "org.other"), vec![]);
    }

    #[test]
    fn buildbot_wildcards() {
        let mut idx = UriIndex::default();
        idx.insert(Wildcard, "org.buildbot.mq.buildrequests..new", 1);
        idx.insert(Wildcard, "org.buildbot.mq.control.worker.7.", 2);
        assert_eq!(
            all(&idx, "org.buildbot.mq.buildrequests.42.new"),
            vec![(Wildcard, 1)]
        );
        assert_eq!(
            all(&idx, "org.buildbot.mq.buildrequests.42.claimed"),
            vec![]
        );
        assert_eq!(
            all(&idx, "org.buildbot.mq.control.worker.7.stop"),
            vec![(Wildcard, 2)]
        );
        assert_eq!(all(&idx, "org.buildbot.mq.control.worker.7.stop.x"), vec![]);
    }

    #[test]
    fn best_match_precedence() {
        let mut idx = UriIndex::default();
        idx.insert(Wildcard, "com..a", 1);
        idx.insert(Wildcard, "com.x.", 2);
        assert_eq!(idx.best_match("com.x.a").map(|(_, v)| *v), Some(2));
        idx.insert(Prefix, "com.x", 3);
        idx.insert(Prefix, "com.x.a", 4);
        assert_eq!(idx.best_match("com.x.a.b").map(|(_, v)| *v), Some(4));
        idx.insert(Exact, "com.x.a", 5);
        assert_eq!(idx.best_match("com.x.a").map(|(_, v)| *v), Some(5));
        assert_eq!(idx.best_match("org"), None);
    }

    #[test]
    fn remove_prunes_and_counts() {
        let mut idx = UriIndex::default();
        idx.insert(Wildcard, "a..c", 1);
        idx.insert(Prefix, "a.b", 2);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.remove(Wildcard, "a..c"), Some(1));
        assert_eq!(idx.remove(Wildcard, "a..c"), None);
        assert!(idx.wildcard.is_empty());
        assert_eq!(idx.remove(Prefix, "a.b"), Some(2));
        assert!(idx.prefix_lengths.is_empty());
        assert!(idx.is_empty());
    }

    #[test]
    fn many_patterns_match_without_scanning() {
        let mut idx = UriIndex::default();
        for i in 0..100_000u32 {
            idx.insert(Exact, &format!("com.app.t{i}"), i);
            idx.insert(Wildcard, &format!("com..t{i}"), i);
        }
        assert_eq!(
            all(&idx, "com.app.t99999"),
            vec![(Exact, 99_999), (Wildcard, 99_999)]
        );
    }
}
