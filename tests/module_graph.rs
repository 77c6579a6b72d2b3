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

/// Each source file under `src/` (its path relative to `src/`, `/`-separated) with its
/// code outside test modules.
fn code_by_file() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&f).unwrap();
            (rel, text.split("#[cfg(test)]").next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn the_forward_block_loop_exists_once() {
    let files = code_by_file();
    // The calls that make up a block (the ops' definitions are `fn name(`, not these):
    // only the one forward strings them together.
    for call in [
        ".gated_delta_rule(",
        ".swiglu(",
        ".norm(NormAt::Mixer(",
        ".norm(NormAt::Channel(",
        "TraceStage::ResidualMid",
    ] {
        let at: Vec<&str> = files
            .iter()
            .filter(|(_, code)| code.contains(call))
            .map(|(f, _)| f.as_str())
            .collect();
        assert_eq!(at, ["lm/forward.rs"], "`{call}` outside the one forward");
    }
    let forward = &files.iter().find(|(f, _)| f == "lm/forward.rs").unwrap().1;
    assert_eq!(forward.matches("for l in blocks").count(), 1);
    // The devices implement operations; none walks a model's layers itself.
    for (file, code) in &files {
        if file.starts_with("lm/cpu/") || file.starts_with("lm/cuda/") {
            for walk in [
                "layers.iter().enumerate()",
                "for (l, lw) in",
                "for l in 0..",
            ] {
                assert!(!code.contains(walk), "{file} walks the layers: `{walk}`");
            }
        }
    }
}

#[test]
fn no_module_outside_the_cuda_implementation_names_a_cuda_type() {
    let cuda_names = [
        "cudarc",
        "CudaBackend",
        "CudaSession",
        "CudaModelSession",
        "DeviceModel",
        "DeviceBuffer",
        "as_cuda",
        "backend::cuda",
    ];
    // The CUDA implementation: the backend's and the language model's, the model
    // kernels' launch geometry; the backend seam that picks a device; the binary's
    // `info`; the CPU's segment planner shares the CUDA plan's pure split function.
    let inside = |f: &str| {
        f.starts_with("backend/cuda/")
            || f.starts_with("lm/cuda/")
            || f.starts_with("lm/kernels/")
            || f.starts_with("bin/")
            || [
                "backend/mod.rs",
                "backend/device.rs",
                "backend/cpu/segments.rs",
            ]
            .contains(&f)
    };
    let mut checked = 0;
    for (file, code) in code_by_file() {
        if inside(&file) {
            continue;
        }
        checked += 1;
        // Comments may name them (a doc link says where the device's side is).
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for name in cuda_names {
            assert!(!code.contains(name), "{file} names `{name}`");
        }
    }
    assert!(checked > 50, "only {checked} files checked");
}

#[test]
fn no_layer_weights_are_declared_more_than_once() {
    // A field declaration: the name, a type, a comma, nothing else on the line (a struct
    // literal's value has a call, a path or a lower-case variable).
    let declares = |code: &str, field: &str| {
        code.lines().any(|line| {
            let l = line.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(": "))
                .is_some_and(|ty| {
                    ty.ends_with(',')
                        && ty.starts_with(|c: char| c.is_ascii_uppercase())
                        && !ty.contains("::")
                        && !ty.contains('(')
                })
        })
    };
    let files = code_by_file();
    for field in [
        // Not `conv`: a sequence's state names its conv cache so too.
        "attn_norm",
        "in_proj",
        "decay_rate",
        "dt_bias",
        "o_norm",
        "o_proj",
        "mlp_norm",
        "gate_up",
        "down",
    ] {
        let at: Vec<&str> = files
            .iter()
            .filter(|(_, code)| declares(code, field))
            .map(|(f, _)| f.as_str())
            .collect();
        assert_eq!(
            at,
            ["lm/block.rs"],
            "`{field}` declared outside BlockWeights"
        );
    }
}
