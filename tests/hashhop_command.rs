//! `ltm-engine hashhop generate` and `eval` end to end, and their errors.

use std::process::Command;

fn ltm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn generate_then_eval_reports_recall_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hh");
    let out_s = out.to_str().unwrap();
    let g = ltm(&[
        "hashhop",
        "generate",
        "--tokens",
        "20000",
        "--hops",
        "2",
        "--queries",
        "50",
        "--seed",
        "3",
        "--out",
        out_s,
        "--json",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let g: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert_eq!(g["chains"], 858);
    let prompt = out.join("prompt.txt");
    let targets = out.join("targets.json");
    let answers = dir.path().join("answers.json");
    let e = ltm(&[
        "hashhop",
        "eval",
        "--context-file",
        prompt.to_str().unwrap(),
        "--targets",
        targets.to_str().unwrap(),
        "--state-bytes",
        "32MiB",
        "--device",
        "cpu",
        "--json",
        "--answers",
        answers.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let r: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(r["queries"], 50);
    assert_eq!(r["correct"], 50, "{r}");
    assert_eq!(r["by_hops"][0]["hops"], 2);
    assert_eq!(r["pairs"], 1716);
    assert!(r["state_bytes"].as_u64().unwrap() <= 32 << 20);
    assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0);
    let a: serde_json::Value = serde_json::from_slice(&std::fs::read(&answers).unwrap()).unwrap();
    assert_eq!(a.as_array().unwrap().len(), 50);

    // Plain text output names recall per hop and the state size.
    let e = ltm(&[
        "hashhop",
        "eval",
        "--context-file",
        prompt.to_str().unwrap(),
        "--targets",
        targets.to_str().unwrap(),
        "--state-bytes",
        "32MiB",
    ]);
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(
        text.contains("recall 100.00% (50 of 50 queries)") && text.contains("2 hops"),
        "{text}"
    );
}

#[test]
fn a_malformed_prompt_fails_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("p.txt");
    std::fs::write(&prompt, "aaaa = bbbb\nbbbb = 'cccc'\nnot a pair\n").unwrap();
    let targets = dir.path().join("t.json");
    std::fs::write(&targets, r#"{"aaaa": "cccc"}"#).unwrap();
    let e = ltm(&[
        "hashhop",
        "eval",
        "--context-file",
        prompt.to_str().unwrap(),
        "--targets",
        targets.to_str().unwrap(),
    ]);
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("p.txt: line 3") && err.contains("not a pair"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
