//! The layers hold: every module's imports point down (ARCHITECTURE.md has the picture).
//!
//! The test reads every `.rs` file under `src/`, takes out comments and string literals, and
//! follows every path that starts at `crate::` (in `use` lines, groups included, and inline) or
//! climbs out of its module with `super::`. A path from one top-level module into another must
//! go to a lower layer. Modules of one layer do not import each other, so there is no import
//! circle either. Inside `source`, one database's folder does not reach into another's: what
//! they share lives in `source/` itself or below.

use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may import only from lower rows.
const LAYERS: &[&[&str]] = &[
    // Leaves: configuration schema, error classification, failpoints, `sluice check` findings,
    // metric names.
    &["config", "error", "failpoint", "finding", "metrics"],
    // The model: change events, their encodings, dead letters.
    &["event"],
    // The contract between stages: batches, acks, the sequence cut, positions on disk.
    &["contract"],
    // What the stages report for `/status`.
    &["status"],
    // Storage: the lake, its commit protocol, Parquet, ODS, compaction, DDL, schema histories.
    &["lake"],
    // Connectors and stages that stand alone.
    &["source", "transform", "kafka"],
    // The sink stage runs the transforms inside it.
    &["sink"],
    // Topologies: embedded, Kafka mode's stages, supervision.
    &["topology"],
    // Commands beside `run` (the CLI is main.rs, above all of these), and the fuzz tests' window.
    &["command", "decoders"],
];

/// Modules that sit above every layer: the crate root and its test modules.
const ABOVE_ALL: &[&str] = &["lib", "main", "golden_tests", "architecture_tests"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/source/mysql/binlog.rs` is `["source", "mysql", "binlog"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The text with comments, string and char literals blanked out (paths in docs do not count).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
            out.push_str("\"\"");
            i += end;
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            out.push_str("\"\"");
            i += (j + 1).min(rest.len());
        } else if rest.starts_with("'\\''") || rest.starts_with("'\"'") {
            out.push_str("' '");
            i += if rest.starts_with("'\\''") { 4 } else { 3 };
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Split `a, b::{c, d}, e` at its top-level commas.
fn split_top(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(group[start..].trim());
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Every path a `use` tree names, each as its segments: `a::{b, c::d}` gives `a::b`, `a::c::d`.
fn expand_tree(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string())
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let mut base = prefix.to_vec();
        base.extend(head);
        for item in split_top(&tree[open + 1..close]) {
            expand_tree(&base, item, out);
        }
    } else {
        let name = tree.split(" as ").next().unwrap_or(tree).trim();
        let mut path = prefix.to_vec();
        path.extend(
            name.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self")
                .map(String::from),
        );
        out.push(path);
    }
}

/// The paths a file's code names: every `use` tree in full, and every inline `crate::…` or
/// `super::…` path, as absolute module paths (`super` resolved against the file's module).
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut trees = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let preceded_ok = at == 0
            || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
        let tail = &rest[at + 4..];
        let end = tail.find(';').unwrap_or(tail.len());
        if preceded_ok {
            expand_tree(&[], &tail[..end], &mut trees);
        }
        rest = &tail[end.min(tail.len())..];
    }
    // Inline paths: an identifier chain starting at `crate` or `super`.
    let mut inline = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if starts_word && chars[i].is_alphabetic() {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == ':')
            {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if word.starts_with("crate::") || word.starts_with("super::") {
                inline.push(
                    word.split("::")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                );
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    trees
        .into_iter()
        .chain(inline)
        .filter_map(|path: Vec<String>| absolute(module, &path))
        .filter(|path| !path.is_empty())
        .collect()
}

/// `crate::a::b` is `a::b`; `super::x` climbs from the file's module. Other paths (external
/// crates, `self::`, local names) are not imports between sluice's modules.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    match path.first()?.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "super" => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        _ => None,
    }
}

#[test]
fn imports_point_down_the_layers_only() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    // Every folder under source/ is one kind of source (a new one is covered without a word here).
    let source_kinds: Vec<String> = std::fs::read_dir(src.join("source"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let top = module[0].as_str();
        if ABOVE_ALL.contains(&top) {
            continue;
        }
        let Some(from) = rank(top) else {
            wrong.push(format!(
                "{}: module `{top}` is in no layer: add it to LAYERS and to ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for path in named_paths(&module, &code) {
            let Some(target) = path.first() else { continue };
            if target == top {
                // Inside `source`, one database's folder does not use another's.
                if top == "source"
                    && module.len() > 1
                    && path.len() > 1
                    && source_kinds.contains(&path[1])
                    && source_kinds.contains(&module[1])
                    && path[1] != module[1]
                {
                    wrong.push(format!(
                        "{}: source `{}` uses source `{}` (`{}`): move what they share to source/ or below",
                        file.display(),
                        module[1],
                        path[1],
                        path.join("::")
                    ));
                }
                continue;
            }
            match rank(target) {
                Some(to) if to < from => {}
                Some(to) => wrong.push(format!(
                    "{}: `{top}` (layer {from}) uses `{}` (layer {to}): imports point down only",
                    file.display(),
                    path.join("::")
                )),
                None if ABOVE_ALL.contains(&target.as_str()) => wrong.push(format!(
                    "{}: `{top}` uses `{}`, which is above every layer",
                    file.display(),
                    path.join("::")
                )),
                None => {} // a name local to the file, such as an enum's variants
            }
        }
    }
    // A path named in a `use` and again inline is one finding.
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_groups_inline_paths_and_super_but_not_comments() {
    let module: Vec<String> = ["source", "mysql", "binlog"].map(String::from).to_vec();
    let code = code_only(
        "use crate::{lake::store::Store, contract::{batch::SourceBatch, cut}};\n\
         // use crate::topology::run;\n\
         let s = \"crate::command\";\n\
         fn f() { crate::sink::open(); super::super::postgres::x(); }\n",
    );
    let paths: Vec<String> = named_paths(&module, &code)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "lake::store::Store",
            "contract::batch::SourceBatch",
            "contract::cut",
            "sink::open",
            "source::postgres::x",
        ]
    );
}
