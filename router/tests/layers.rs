//! The router crate's layers, checked: every module may use only modules of lower layers, so
//! dependencies go one way (ARCHITECTURE.md, "Layers", draws the same table).
//!
//! The check reads the sources under `router/src`: every `crate::…` and `super::…` path, and
//! every path through a child module a file declares (`mod x;` then `x::…`), in code (comments
//! and string literals are skipped), is an edge from the file's unit to the unit the path names.
//! A unit is a module, or a module folder with everything below it, whichever is the longest
//! listed prefix. An edge to the same unit is free; any other must point to a lower layer. A
//! module that is in no unit fails the check too, so a new module gets its place in the
//! picture when it is added.
//!
//! `cargo test -p switchyard-router --test layers -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Lowest first. A unit may use units of the layers before its own, never its own layer's
/// other units or a later layer's.
const LAYERS: &[&[&str]] = &[
    // Data and primitives: no knowledge of sessions or realms.
    &[
        "wire",
        "uri",
        "logsafe",
        "shutdown",
        "tls",
        "timestamp",
        "metrics",
    ],
    &["error", "outbound", "id", "matcher"],
    &["session", "options"],
    // Routing inside one realm; what peers announced; authentication (interfaces, methods);
    // kill orders (data).
    &["broker", "dealer", "directory", "auth", "kill"],
    // What the layers above ask of a mesh's other nodes (a trait the mesh implements).
    &["config", "admission", "client", "cluster"],
    // A realm: broker + dealer + sessions, and the hooks the layers above plug in through.
    &["realm"],
    // What a session needs of the router: realms by name, limits, auth, shutdown, counters.
    &["context"],
    // One connection's session state machine, and in-process sessions.
    &["protocol"],
    &["service"],
    &["meta"],
    // The assembled router: a context with its meta services started.
    &["router"],
    &["mesh", "metrics::endpoint"],
    &["transport"],
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read router/src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `foo/bar.rs` → `["foo", "bar"]`; `foo/mod.rs` → `["foo"]`; `lib.rs` → `[]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src_dir()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The source with comments and the contents of string and char literals blanked (newlines
/// kept, so line numbers stay right).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied();
        let rest = |k: usize| at(i + k);
        if c[i] == '/' && rest(1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && rest(1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (rest(1) == Some('"') || rest(1) == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            out.push('"');
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(c[j]));
                j += 1;
            }
            out.push('"');
            i = j;
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a).
            if rest(1) == Some('\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
            } else if rest(2) == Some('\'') {
                out.push_str("' '");
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// The paths named after `prefix::` at byte `at` of `code`: one, or several for a
/// `prefix::{a, b::c}` group (each as its segments).
fn paths_at(code: &str, at: usize) -> Vec<Vec<String>> {
    let rest = &code[at..];
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (k, ch) in group.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (k, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        return items
            .into_iter()
            .map(|item| segments(item.trim()))
            .filter(|s| !s.is_empty())
            .collect();
    }
    vec![segments(rest)]
}

/// `a::b::{c}` → `["a", "b"]`: the leading identifiers of a path.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() || ident == "self" {
            break;
        }
        rest = &rest[ident.len()..];
        out.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// One reference from a file: the absolute module path it names, and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    target: Vec<String>,
    line: usize,
}

/// Every module path `code` (of the module `module`) names: `crate::`, `super::`, `self::` and
/// declared-child paths. Root re-exports (`crate::Router`) resolve through `reexports`.
fn references(
    code: &str,
    module: &[String],
    reexports: &HashMap<String, Vec<String>>,
) -> Vec<Reference> {
    let children = declared_children(code);
    let inline = inline_modules(code);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    // The module a position is in: the file's, or an inline `mod x { … }` inside it.
    let module_at = |at: usize| {
        let mut m = module.to_vec();
        for (name, start, end) in &inline {
            if *start <= at && at < *end {
                m.push(name.clone());
            }
        }
        m
    };
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1] as char) || bytes[i - 1] == b':');
        if !starts_word || !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let word: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if word.is_empty() || !rest[word.len()..].starts_with("::") {
            i += word.len().max(1);
            continue;
        }
        let mut at = i + word.len() + 2;
        let base: Vec<String> = match word.as_str() {
            "crate" => Vec::new(),
            "self" => module_at(i),
            "super" => {
                let mut m = module_at(i);
                m.pop();
                while code[at..].starts_with("super::") {
                    m.pop();
                    at += "super::".len();
                }
                m
            }
            w if children.contains(w) && module_at(i).len() == module.len() => {
                at = i; // the child's name is the path's first segment
                module.to_vec()
            }
            _ => {
                i = at;
                continue;
            }
        };
        for p in paths_at(code, at) {
            let target = match (base.is_empty(), p.first().and_then(|f| reexports.get(f))) {
                (true, Some(m)) => m.clone(),
                _ => base.iter().cloned().chain(p).collect(),
            };
            out.push(Reference {
                target,
                line: line_of(i),
            });
        }
        i += word.len() + 2;
    }
    out
}

/// Inline modules (`mod tests { … }`): name and byte range of their body.
fn inline_modules(code: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = code[from..].find("mod ") {
        let at = from + k;
        from = at + 4;
        if at > 0 && is_ident(code.as_bytes()[at - 1] as char) {
            continue;
        }
        let name: String = code[from..].chars().take_while(|c| is_ident(*c)).collect();
        let after = code[from + name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0;
        for (j, ch) in code[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((name.clone(), open, open + j));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The child modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_children(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let t = line.trim();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(name) = t.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            out.insert(name.trim().to_owned());
        }
    }
    out
}

/// `pub use config::{Limits, RealmConfig};` in lib.rs → Limits → config, RealmConfig → config.
fn root_reexports(lib: &str) -> HashMap<String, Vec<String>> {
    let mut map = HashMap::new();
    for stmt in lib.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, items) = match path.find("::{") {
            Some(k) => (
                &path[..k],
                path[k + 3..].trim_end_matches('}').split(',').collect(),
            ),
            None => match path.rfind("::") {
                Some(k) => (&path[..k], vec![&path[k + 2..]]),
                None => continue,
            },
        };
        let module: Vec<String> = module.split("::").map(str::to_owned).collect();
        for item in items {
            let name = item.split(" as ").last().unwrap_or(item).trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.clone());
            }
        }
    }
    map
}

/// The unit of a module path: the longest listed unit it is in.
fn unit_of(path: &[String]) -> Option<&'static str> {
    let joined = path.join("::");
    LAYERS
        .iter()
        .flat_map(|l| l.iter().copied())
        .filter(|u| joined == *u || joined.starts_with(&format!("{u}::")))
        .max_by_key(|u| u.len())
}

fn layer_of(unit: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&unit))
        .expect("a listed unit")
}

struct Graph {
    /// (from, to) → the first place it is used.
    edges: BTreeMap<(&'static str, &'static str), String>,
    /// Files whose module is in no unit.
    unplaced: Vec<String>,
}

fn graph() -> Graph {
    let src = src_dir();
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let reexports = root_reexports(&code_only(&lib));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = Graph {
        edges: BTreeMap::new(),
        unplaced: Vec::new(),
    };
    for file in files {
        let module = module_path(&file);
        if module.is_empty() {
            continue; // lib.rs: module declarations and re-exports only
        }
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        let Some(from) = unit_of(&module) else {
            g.unplaced.push(shown);
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source file");
        let code = code_only(&text);
        for r in references(&code, &module, &reexports) {
            let Some(to) = unit_of(&r.target) else {
                continue; // an item of the crate root (a macro) or a name the check cannot place
            };
            if to != from {
                g.edges
                    .entry((from, to))
                    .or_insert_with(|| format!("{shown}:{}", r.line));
            }
        }
    }
    g
}

#[test]
fn dependencies_point_down() {
    let g = graph();
    let mut by_unit: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in g.edges.keys() {
        by_unit.entry(from).or_default().push(to);
    }
    println!("module graph (unit → units it uses), by layer, lowest first:");
    for (n, layer) in LAYERS.iter().enumerate() {
        for unit in *layer {
            let uses = by_unit.get(unit).map(|v| v.join(", ")).unwrap_or_default();
            println!("  {n:>2} {unit:<18} → {uses}");
        }
    }
    let upward: Vec<String> = g
        .edges
        .iter()
        .filter(|((from, to), _)| layer_of(to) >= layer_of(from))
        .map(|((from, to), at)| {
            format!(
                "{from} (layer {}) uses {to} (layer {}) at {at}",
                layer_of(from),
                layer_of(to)
            )
        })
        .collect();
    assert!(
        g.unplaced.is_empty(),
        "modules in no layer (add them to LAYERS and to ARCHITECTURE.md): {:?}",
        g.unplaced
    );
    assert!(
        upward.is_empty(),
        "dependencies that do not point to a lower layer:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn every_listed_unit_exists() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let modules: Vec<String> = files.iter().map(|f| module_path(f).join("::")).collect();
    for unit in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            modules.iter().any(|m| m == unit),
            "LAYERS lists '{unit}', which is no module of router/src"
        );
    }
}

// The checker itself: it must see what it is meant to see, and nothing else.

fn refs(src: &str, module: &[&str]) -> Vec<Vec<String>> {
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    let mut reexports = HashMap::new();
    reexports.insert("Router".to_owned(), vec!["router".to_owned()]);
    references(&code_only(src), &module, &reexports)
        .into_iter()
        .map(|r| r.target)
        .collect()
}

fn path(p: &str) -> Vec<String> {
    p.split("::").map(str::to_owned).collect()
}

#[test]
fn checker_finds_crate_super_and_child_paths() {
    let src = "mod inner;\nuse crate::realm::Realm;\nuse crate::{meta::{self, X}, Router};\n\
               fn f() { super::frame::encode(); let _ = crate::wire::Value::Null; inner::g(); }";
    assert_eq!(
        refs(src, &["mesh", "link"]),
        vec![
            path("realm::Realm"),
            path("meta"),
            path("router"),
            path("mesh::frame::encode"),
            path("wire::Value::Null"),
            path("mesh::link::inner::g"),
        ]
    );
}

#[test]
fn checker_resolves_self_and_inline_modules() {
    let src = "pub mod endpoint;\nuse self::endpoint::render;\n\
               #[cfg(test)]\nmod tests {\n    use super::Metrics;\n    use super::super::wire;\n}";
    assert_eq!(
        refs(src, &["metrics"]),
        vec![
            path("metrics::endpoint::render"),
            path("metrics::Metrics"),
            path("wire"),
        ]
    );
}

#[test]
fn checker_skips_comments_and_literals() {
    let src = "// use crate::meta;\n/// [`crate::mesh`]\n/* crate::realm /* nested */ */\n\
               let s = \"crate::protocol\"; let r = r#\"crate::router\"#; let c = '\"';\n\
               let l: &'static str = \"x\"; use crate::wire;";
    assert_eq!(refs(src, &["broker"]), vec![path("wire")]);
}

#[test]
fn an_upward_edge_is_reported() {
    // The rule itself: realm (layer 5) using meta (layer 9) points up, and so does a unit
    // using another of its own layer.
    let from = unit_of(&path("realm")).unwrap();
    let to = unit_of(&path("meta::MetaService")).unwrap();
    assert!(layer_of(to) >= layer_of(from));
    assert!(layer_of("dealer") >= layer_of("broker"));
    assert!(layer_of("broker") < layer_of("realm"));
    // A unit's sub-unit is placed on its own: metrics::endpoint is not metrics.
    assert_eq!(
        unit_of(&path("metrics::endpoint::render")),
        Some("metrics::endpoint")
    );
    assert_eq!(unit_of(&path("metrics::Metrics")), Some("metrics"));
}
