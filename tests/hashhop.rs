//! HashHop: the generator's format, eval's scoring, recall under capacity, determinism,
//! and clear errors for bad files.

use std::collections::HashMap;
use std::path::Path;

use ltm_engine::hashhop::{eval, generate, read_targets, EvalOptions, GenerateOptions};
use ltm_engine::memory_model::ModelConfig;

fn options(state_bytes: u64) -> EvalOptions {
    let mut o = EvalOptions::new(ModelConfig::with_state_bytes(state_bytes).unwrap());
    o.device = ltm_engine::Device::Cpu;
    o
}

/// `KEY = VALUE` / `KEY = 'VALUE'` lines of a prompt, in file order.
fn parse_prompt(path: &Path) -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        !text.ends_with('\n'),
        "Magic's prompt has no newline after the last line"
    );
    text.split('\n')
        .map(|line| {
            let (k, v) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("bad line `{line}`"));
            let quoted = v.starts_with('\'') && v.ends_with('\'');
            let v = v.trim_matches('\'');
            for h in [k, v] {
                assert_eq!(h.len(), 16, "hash `{h}`");
                assert!(h.bytes().all(|b| b.is_ascii_alphabetic()), "hash `{h}`");
            }
            (k.to_string(), v.to_string(), quoted)
        })
        .collect()
}

#[test]
fn generated_files_parse_back_into_the_same_chains() {
    let dir = tempfile::tempdir().unwrap();
    for (hops, cot) in [(1, false), (3, false), (3, true), (2, true)] {
        let out = dir.path().join(format!("h{hops}-{cot}"));
        let tokens = 20_000;
        let g = generate(
            &GenerateOptions {
                tokens,
                hops,
                queries: 25,
                cot,
                seed: 5,
            },
            &out,
        )
        .unwrap();
        let lines = parse_prompt(&g.prompt);
        // Magic's sizing: ceil(3·tokens / (35·hops)) chains of `hops` lines.
        let chains = (3 * tokens).div_ceil(35 * hops as u64);
        assert_eq!(g.chains, chains);
        assert_eq!(lines.len() as u64, chains * hops as u64);
        assert_eq!(
            lines.iter().filter(|l| l.2).count() as u64,
            chains,
            "one quoted line per chain"
        );
        let bytes = std::fs::metadata(&g.prompt).unwrap().len();
        assert_eq!(bytes, g.prompt_bytes);
        assert!(
            (bytes as f64 / (3 * tokens) as f64 - 1.0).abs() < 0.1,
            "{bytes} bytes"
        );
        // Lines are shuffled: the quoted (last-level) lines are not all at the end.
        assert!(lines[..lines.len() / 2].iter().any(|l| l.2) || hops == 1);

        let next: HashMap<&str, (&str, bool)> = lines
            .iter()
            .map(|(k, v, q)| (k.as_str(), (v.as_str(), *q)))
            .collect();
        assert_eq!(next.len(), lines.len(), "keys are unique");
        let targets = read_targets(&g.targets).unwrap();
        assert_eq!(targets.len(), 25);
        for t in &targets {
            let mut at = t.query.as_str();
            let mut chain = Vec::new();
            for hop in 0..hops {
                let (v, quoted) = next[at];
                assert_eq!(quoted, hop == hops - 1, "only the last level is quoted");
                chain.push(v.to_string());
                at = v;
            }
            assert!(!next.contains_key(at), "chains end at the quoted value");
            if cot {
                assert_eq!(t.chain, chain);
            } else {
                assert_eq!(t.chain, [chain.last().unwrap().clone()]);
            }
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_files_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, seed| {
        generate(
            &GenerateOptions {
                tokens: 30_000,
                hops: 2,
                queries: 100,
                cot: false,
                seed,
            },
            dir.path().join(name),
        )
        .unwrap()
    };
    let (a, b, c) = (make("a", 9), make("b", 9), make("c", 10));
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(read(&a.prompt), read(&b.prompt));
    assert_eq!(read(&a.targets), read(&b.targets));
    assert_ne!(read(&a.prompt), read(&c.prompt));
    // Over capacity (4 MiB state, 1,926 rows, for 2,572 pairs), so answers are partly
    // wrong: the same wrong answers each time shows the whole path is deterministic.
    let o = options(4 << 20);
    let r1 = eval(&a.prompt, &a.targets, &o).unwrap();
    let r2 = eval(&b.prompt, &b.targets, &o).unwrap();
    assert!(r1.recall < 1.0 && r1.recall > 0.0, "recall {}", r1.recall);
    assert_eq!(r1.answers, r2.answers);
}

#[test]
fn recall_well_under_capacity_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    for (hops, cot) in [(1, false), (2, false), (4, true)] {
        let g = generate(
            &GenerateOptions {
                tokens: 50_000,
                hops,
                queries: 300.min(150_000 / (35 * hops)),
                cot,
                seed: 77,
            },
            dir.path().join(format!("{hops}")),
        )
        .unwrap();
        // ~4,300 pairs in 64 MiB (30,840 rows): well under capacity.
        let r = eval(&g.prompt, &g.targets, &options(64 << 20)).unwrap();
        assert_eq!(r.pairs, g.lines);
        assert_eq!(r.writes, g.lines, "one write per pair");
        assert_eq!(r.correct, r.queries, "{hops} hops: recall {}", r.recall);
        assert_eq!(r.by_hops.len(), 1);
        assert_eq!(r.by_hops[0].hops, hops);
        assert!(r.answers.iter().all(|a| a.chain.len() == hops));
        assert_eq!(
            r.state_bytes,
            ModelConfig::with_state_bytes(64 << 20)
                .unwrap()
                .state_bytes()
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn eval_scores_a_hand_made_case() {
    let dir = tempfile::tempdir().unwrap();
    // Three 2-hop chains, written as Magic writes them (shuffled, last level quoted).
    let prompt = write(
        dir.path(),
        "prompt.txt",
        "bbbb = 'cccc'\naaaa = bbbb\nxxxx = yyyy\nqqqq = rrrr\nrrrr = 'ssss'\nyyyy = 'zzzz'",
    );
    // aaaa → cccc right, xxxx → zzzz right, qqqq → rrrr wrong (stops one hop short).
    let targets = write(
        dir.path(),
        "targets.json",
        r#"{"aaaa": "cccc", "xxxx": "zzzz", "qqqq": "rrrr"}"#,
    );
    let r = eval(&prompt, &targets, &options(1 << 20)).unwrap();
    assert_eq!((r.queries, r.correct), (3, 2));
    assert!((r.recall - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(r.by_hops.len(), 1);
    assert_eq!(
        (
            r.by_hops[0].hops,
            r.by_hops[0].queries,
            r.by_hops[0].correct
        ),
        (2, 3, 2)
    );
    let q = r.answers.iter().find(|a| a.query == "qqqq").unwrap();
    assert_eq!(q.chain, ["rrrr", "ssss"]);
    assert!(!q.correct);
    assert_eq!(r.pairs, 6);
    // A sample: the first queries in hash order.
    let mut o = options(1 << 20);
    o.max_queries = Some(2);
    let r = eval(&prompt, &targets, &o).unwrap();
    assert_eq!(r.queries, 2);
    let asked: Vec<&str> = r.answers.iter().map(|a| a.query.as_str()).collect();
    assert_eq!(asked, ["aaaa", "qqqq"]);

    // The same prompt with chain-of-thought targets: every hop is scored, and the hop
    // count comes from each chain.
    let cot = write(
        dir.path(),
        "cot.json",
        r#"{"aaaa": "bbbb = cccc", "xxxx": "yyyy = zzzz", "bbbb": "cccc", "qqqq": "rrrr = zzzz"}"#,
    );
    let r = eval(&prompt, &cot, &options(1 << 20)).unwrap();
    assert_eq!((r.queries, r.correct), (4, 3));
    let hops: Vec<(usize, usize, usize)> = r
        .by_hops
        .iter()
        .map(|h| (h.hops, h.queries, h.correct))
        .collect();
    assert_eq!(hops, [(1, 1, 1), (2, 3, 2)]);
}

fn eval_error(prompt: &str, targets: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "prompt.txt", prompt);
    let t = write(dir.path(), "targets.json", targets);
    eval(&p, &t, &options(1 << 20)).unwrap_err().to_string()
}

#[test]
fn bad_files_get_clear_errors() {
    let ok = "aaaa = 'bbbb'\ncccc = 'dddd'";
    let e = eval_error(
        "aaaa = 'bbbb'\ncccc = 'dddd'\neeee : ffff\n",
        r#"{"aaaa": "bbbb"}"#,
    );
    assert!(
        e.contains("prompt.txt") && e.contains("line 3") && e.contains("eeee : ffff"),
        "{e}"
    );
    assert!(e.contains("expected `KEY = VALUE`"), "{e}");

    let e = eval_error(ok, r#"{"aaaa": "bbbb", "gggg": "dddd"}"#);
    assert!(
        e.contains("targets.json") && e.contains("`gggg`") && e.contains("not a key"),
        "{e}"
    );
    let e = eval_error(ok, r#"{"aaaa": "hhhh"}"#);
    assert!(e.contains("`hhhh`") && e.contains("not a value"), "{e}");

    let e = eval_error(ok, "[1, 2]");
    assert!(
        e.contains("targets.json") && e.contains("JSON object"),
        "{e}"
    );
    let e = eval_error(ok, "{}");
    assert!(e.contains("no queries"), "{e}");
    let e = eval_error(ok, r#"{"aaaa": 5}"#);
    assert!(e.contains("must be a string"), "{e}");
    let e = eval_error(ok, r#"{"aaaa": "bb-bb"}"#);
    assert!(e.contains("is not a hash"), "{e}");

    let e = eval_error("", r#"{"aaaa": "bbbb"}"#);
    assert!(e.contains("prompt.txt") && e.contains("empty"), "{e}");
    let e = eval_error("\n\n", r#"{"aaaa": "bbbb"}"#);
    assert!(e.contains("no `KEY = VALUE` lines"), "{e}");
    let e = eval_error("aaaaaaaaaaaaaaaaaaaa = 'bbbb'", r#"{"aaaa": "bbbb"}"#);
    assert!(e.contains("line 1") && e.contains("at most 16"), "{e}");
    // 3 pairs of which 2 quoted: not whole chains, so the hop count is unknown.
    let e = eval_error(
        "aaaa = 'bbbb'\ncccc = dddd\ndddd = 'eeee'",
        r#"{"aaaa": "bbbb"}"#,
    );
    assert!(e.contains("--hops"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "targets.json", r#"{"aaaa": "bbbb"}"#);
    let e = eval(dir.path().join("missing.txt"), &t, &options(1 << 20))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.txt"), "{e}");
}
