//! The library's top-level modules import one another without cycles (in particular
//! `stream`, `memory_model` and `lm` never import one another's way back, and the
//! trait and tokenizers they share import none of them), read off the `crate::` paths of
//! the sources outside their test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "bin" {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules its non-test code names as `crate::x`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                graph.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    graph
}

#[test]
fn no_import_cycles_between_modules() {
    let graph = imports();
    // The scheduler and the models it drives meet only in `streamable` (the trait):
    // neither side of these pairs may import the other's way back.
    for (a, b) in [
        ("memory_model", "stream"),
        ("stream", "memory_model"),
        ("stream", "lm"),
        ("streamable", "stream"),
        ("streamable", "memory_model"),
        ("streamable", "lm"),
        ("tokenize", "stream"),
        ("tokenize", "memory_model"),
        ("tokenize", "lm"),
    ] {
        assert!(
            !graph.get(a).is_some_and(|m| m.contains(b)),
            "{a} imports {b}: {graph:?}"
        );
    }
    // The modules these checks name must exist, or they would check nothing.
    for m in ["memory_model", "stream", "lm", "streamable", "tokenize"] {
        assert!(graph.contains_key(m), "no module {m} in {graph:?}");
    }
    // Depth-first search for a path back to where it started.
    fn reaches(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        target: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        graph.get(from).into_iter().flatten().any(|next| {
            next == target || (seen.insert(next.clone()) && reaches(graph, next, target, seen))
        })
    }
    for module in graph.keys() {
        assert!(
            !reaches(&graph, module, module, &mut BTreeSet::new()),
            "{module} imports itself through other modules: {graph:?}"
        );
    }
}
