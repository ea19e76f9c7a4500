//! No source file imports a file that imports it back (issue 13's house plan): the rooms of a
//! service (`grpc` → `domain` → `store`) only call downwards, and a module's children reach their
//! siblings directly rather than through the parent's re-exports. Read from the sources: every
//! `crate::`/`super::`/`self::` path (in `use` items with their brace groups, and in code), and
//! `use child::...` of a module's own children, resolved to the file that defines the module.
//! Test modules (`#[cfg(test)]` to the end of a file) and comments are left out: `use super::*`
//! in a test module is the file itself, and a doc link imports nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src` (`lib.rs`/`main.rs` → [], `a/mod.rs` → [a], `a/b.rs`
/// → [a, b]).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file defining the longest prefix of `path` that is a module of the crate.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    for len in (0..=path.len()).rev() {
        let prefix = &path[..len];
        if prefix.is_empty() {
            return [src.join("lib.rs"), src.join("main.rs")]
                .into_iter()
                .find(|p| p.exists());
        }
        let base = prefix.iter().fold(src.to_path_buf(), |p, s| p.join(s));
        let candidates = [base.with_extension("rs"), base.join("mod.rs")];
        if let Some(found) = candidates.into_iter().find(|p| p.exists()) {
            return Some(found);
        }
    }
    None
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e` (whitespace already removed).
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let Some(close) = tree.rfind('}').filter(|close| *close > open) else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The paths a file's code names, before resolution.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // a `use` item starts a line (strings and comments that say "use ..." do not)
    let use_item = regex::Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);").unwrap();
    for found in use_item.captures_iter(code) {
        let tree: String = found[1].chars().filter(|c| !c.is_whitespace()).collect();
        paths.extend(expand(&tree));
    }
    let in_code =
        regex::Regex::new(r"\b(?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
    paths.extend(in_code.find_iter(code).map(|m| m.as_str().to_owned()));
    paths
}

/// Resolves a named path from the module `here` to a module path of the crate, if it is one.
fn resolve(src: &Path, here: &[String], named: &str) -> Option<Vec<String>> {
    let segments: Vec<&str> = named
        .split("::")
        .map(|s| s.split(" as ").next().unwrap_or(s))
        .collect();
    let mut path: Vec<String> = match segments.first()? {
        &"crate" => Vec::new(),
        &"self" => here.to_vec(),
        &"super" => here.to_vec(),
        first => {
            // `use child::...` from a module to one of its own children
            let mut child = here.to_vec();
            child.push((*first).to_owned());
            let base = child.iter().fold(src.to_path_buf(), |p, s| p.join(s));
            if !base.with_extension("rs").exists() && !base.join("mod.rs").exists() {
                return None;
            }
            here.to_vec()
        }
    };
    let mut rest = &segments[..];
    if matches!(segments[0], "crate" | "self") {
        rest = &segments[1..];
    }
    for segment in rest {
        match *segment {
            "super" => {
                path.pop()?;
            }
            "*" | "self" => {}
            s => path.push(s.to_owned()),
        }
    }
    Some(path)
}

#[test]
fn no_source_file_imports_a_file_that_imports_it_back() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cycles = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    assert!(
        crates.len() >= 10,
        "found the workspace's crates: {crates:?}"
    );
    for src in crates {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut imports: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
            // comments (doc links included) name paths without importing them
            let code: String = code
                .lines()
                .map(|line| line.split("//").next().unwrap_or(line))
                .collect::<Vec<_>>()
                .join("\n");
            let here = module_of(&src, file);
            for named in named_paths(&code) {
                let Some(target) = resolve(&src, &here, &named).and_then(|m| file_of(&src, &m))
                else {
                    continue;
                };
                if &target != file {
                    imports.entry(file.clone()).or_default().insert(target);
                }
            }
        }
        for (file, targets) in &imports {
            for target in targets {
                if file < target && imports.get(target).is_some_and(|t| t.contains(file)) {
                    let show = |p: &Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();
                    cycles.push(format!("{} <-> {}", show(file), show(target)));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other (move what both need to a third file, or import the \
         sibling directly instead of through the parent's re-exports):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_import_reader_sees_brace_groups_children_and_parents() {
    assert_eq!(
        expand("crate::{a::{b,c},d}"),
        ["crate::a::b", "crate::a::c", "crate::d"]
    );
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../transfers/src");
    let here = vec!["domain".to_owned(), "batch".to_owned()];
    assert_eq!(
        resolve(&src, &here, "super::movement::Command"),
        Some(vec![
            "domain".to_owned(),
            "movement".to_owned(),
            "Command".to_owned()
        ])
    );
    assert_eq!(
        file_of(&src, &["store".to_owned(), "apply_batch".to_owned()]),
        Some(src.join("store.rs"))
    );
    let domain = vec!["domain".to_owned()];
    assert_eq!(
        resolve(&src, &domain, "movement::Kind"),
        Some(vec![
            "domain".to_owned(),
            "movement".to_owned(),
            "Kind".to_owned()
        ]),
        "a module's use of its own child"
    );
    assert_eq!(
        resolve(&src, &domain, "ledger_model::AccountId"),
        None,
        "another crate"
    );
}
