//! The server crate reads top-down: no module imports one above it, and no
//! two files import each other, directly or around a circle. The layers
//! (docs/ARCHITECTURE.md), top first:
//!
//! | rank | modules |
//! |---|---|
//! | 9 | `main` (the binary) |
//! | 8 | `server` (wiring) |
//! | 7 | `http` |
//! | 6 | `transport` |
//! | 5 | `api` |
//! | 4 | `state` |
//! | 3 | services: `hub`, `presence`, `push`, `accounts`, `passwords`, `cluster` |
//! | 2 | support: `config`, `setup`, `tls`, `metrics` |
//! | 1 | foundations: `store`, `delivery`, `link`, `outbound`, `admission`, `quota` |
//!
//! A file may import its own rank or lower. Imports are read from the
//! source text: `use` trees (braces expanded), inline `crate::…` paths,
//! `super::…` paths, and `confab_server::…` in the binary; each resolves
//! to the file that defines the longest module prefix of the path. Unit
//! tests (after `#[cfg(test)]`) are left out, and so are a folder's
//! `mod.rs` edges to its own files (declaring and re-exporting children is
//! how a folder presents itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rank(module: &[String]) -> u32 {
    match module.first().map(String::as_str) {
        Some("<main>") => 9,
        Some("server") => 8,
        Some("http") => 7,
        Some("transport" | "admin") => 6,
        Some("api") => 5,
        Some("state") => 4,
        Some("hub" | "presence" | "push" | "accounts" | "passwords" | "cluster") => 3,
        Some("config" | "setup" | "tls" | "metrics") => 2,
        Some("store" | "delivery" | "link" | "outbound" | "admission" | "quota") => 1,
        None => 10, // lib.rs: declares everything
        Some(other) => panic!("module `{other}` has no layer: add it to this test and docs/ARCHITECTURE.md"),
    }
}

/// Every source file, by module path (`store/tx.rs` → `["store", "tx"]`).
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let file = parts.pop().unwrap();
            match file.as_str() {
                "lib.rs" | "mod.rs" => {}
                "main.rs" if parts.is_empty() => parts.push("<main>".into()),
                f => parts.push(f.trim_end_matches(".rs").into()),
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code of a file without comments, string literals and unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head: Vec<String> =
                tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            let mut prefix = prefix.to_vec();
            prefix.extend(head);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&prefix, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            go(&prefix, &inner[start..], out);
        } else {
            let tree = tree.split(" as ").next().unwrap_or(tree);
            let mut path = prefix.to_vec();
            path.extend(tree.split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from));
            out.push(path);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

/// Every path the code names: `use` trees and inline `crate::`/`super::`
/// paths.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before_ok = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before_ok {
            out.extend(expand(&after[..end]));
        }
        rest = &after[end.min(after.len())..];
    }
    for start in ["crate::", "super::", "confab_server::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let tail = &rest[at..];
            let len = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            out.push(tail[..len].split("::").filter(|s| !s.is_empty()).map(String::from).collect());
            rest = &tail[len.max(1)..];
        }
    }
    out
}

/// The file a path names, seen from `from`: the longest module prefix of
/// its absolute form that is a file. `None` for paths outside the crate.
fn resolve(
    from: &[String],
    from_is_folder: bool,
    path: &[String],
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut abs: Vec<String> = match path.first().map(String::as_str) {
        Some("crate" | "confab_server") => Vec::new(),
        Some("super") => {
            // A folder's mod.rs is its own module; a file's parent is its folder.
            let mut base = from.to_vec();
            if !from_is_folder {
                base.pop();
            }
            base
        }
        Some("self") => from.to_vec(),
        _ => return None,
    };
    let mut parts = path[1..].iter().peekable();
    if path.first().map(String::as_str) == Some("super") {
        while parts.peek().map(|p| p.as_str()) == Some("super") {
            abs.pop();
            parts.next();
        }
    }
    abs.extend(parts.cloned());
    (0..=abs.len()).rev().map(|n| abs[..n].to_vec()).find(|m| files.contains_key(m) && !m.is_empty())
}

#[test]
fn the_server_crate_has_no_upward_import_and_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut upward = Vec::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let is_folder = path.file_name().is_some_and(|f| f == "mod.rs" || f == "lib.rs");
        let edges = graph.entry(module.clone()).or_default();
        for p in paths(&code(&text)) {
            let Some(target) = resolve(module, is_folder, &p, &files) else { continue };
            if &target == module || (is_folder && target.starts_with(module)) {
                continue;
            }
            if rank(&target) > rank(module) {
                upward.push(format!("{} imports {} ({})", module.join("/"), target.join("/"), p.join("::")));
            }
            edges.insert(target);
        }
    }
    assert!(upward.is_empty(), "imports of a higher layer:\n{}", upward.join("\n"));
    // A cycle: a depth-first search that meets a module on its own path.
    fn visit(
        m: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            let circle: Vec<String> = path[at..].iter().chain([m]).map(|p| p.join("/")).collect();
            cycles.push(circle.join(" -> "));
            return;
        }
        if !done.insert(m.clone()) {
            return;
        }
        path.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, cycles);
        }
        path.pop();
    }
    let (mut done, mut cycles) = (BTreeSet::new(), Vec::new());
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    assert!(graph.len() > 40, "the test must see the whole crate ({} files)", graph.len());
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = code("use crate::{a::{B, c::D}, e};\n// use crate::ignored;\nfn f() { super::x::y(); crate::z::W }");
    let paths = paths(&code);
    for want in [vec!["crate", "a", "B"], vec!["crate", "a", "c", "D"], vec!["crate", "e"], vec!["super", "x", "y"]] {
        assert!(paths.iter().any(|p| p == &want), "missing {want:?} in {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.contains(&"ignored".to_string())), "comments are skipped");
    assert_eq!(expand("std::{io, fmt::Write as _}"), vec![vec!["std", "io"], vec!["std", "fmt", "Write"]]);
}
