//! A model's `tokenizer.json` is input: settings that would change what the engine
//! reads are refused, a tokenizer that loses text is refused, one whose parts panic
//! is refused without the panic's text on stderr, and a state saved with one
//! tokenizer is refused with another.

use std::path::{Path, PathBuf};

use ltm_engine::lm::state_file::{load_model_state, save_model_state, SourcePosition};
use ltm_engine::lm::tokenizer::ModelTokenizer;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;
use serde_json::{json, Value};

const VOCAB: usize = 4096;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn good() -> Value {
    let text = std::fs::read_to_string(fixture("gdn-gva/tokenizer.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn parse(v: &Value) -> Result<ModelTokenizer, String> {
    ModelTokenizer::parse(&v.to_string(), VOCAB)
}

#[test]
fn the_fixtures_load_and_round_trip() {
    for name in ["gdn-tiny", "gdn-gva"] {
        let t = ModelTokenizer::load(&fixture(name).join("tokenizer.json"), VOCAB).unwrap();
        let text = "Grüße, world!\n\tx = 42 漢字";
        assert_eq!(t.decode(&t.encode(text, false).unwrap()).unwrap(), text);
    }
}

#[test]
fn truncation_is_refused_naming_the_field() {
    let mut v = good();
    v["truncation"] =
        json!({"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0});
    let e = parse(&v)
        .err()
        .expect("a truncating tokenizer was accepted");
    assert!(e.contains("`truncation`"), "{e}");
}

#[test]
fn padding_is_refused_naming_the_field() {
    let mut v = good();
    v["padding"] = json!({"strategy": {"Fixed": 2000}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"});
    let e = parse(&v).err().expect("a padding tokenizer was accepted");
    assert!(e.contains("`padding`"), "{e}");
}

#[test]
fn an_empty_vocabulary_is_refused_as_losing_text() {
    let mut v = good();
    v["model"]["vocab"] = json!({"<unk>": 0, "<s>": 1, "</s>": 2});
    v["model"]["merges"] = json!([]);
    let e = parse(&v).err().expect("an empty vocabulary was accepted");
    assert!(e.contains("loses text"), "{e}");
}

#[test]
fn a_normalizer_that_deletes_text_is_refused() {
    let mut v = good();
    v["normalizer"] = json!({"type": "Replace", "pattern": {"Regex": "[aeiou]"}, "content": ""});
    let e = parse(&v)
        .err()
        .expect("a normalizer deleting vowels was accepted");
    assert!(e.contains("loses text"), "{e}");
}

#[test]
fn a_vocabulary_without_the_high_bytes_is_refused_as_dropping_text() {
    // Byte-level BPE writes bytes 0x80..=0xFF as the characters U+00A1.. and U+0100..;
    // without them (and no unknown token) every non-ASCII character vanishes.
    let mut v = good();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|k, _| {
        k.chars()
            .all(|c| (c as u32) < 0xA1 || c == 'Ġ' || c == 'Ċ' || c == 'ĉ')
    });
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    let merges = v["model"]["merges"].as_array_mut().unwrap();
    merges.retain(|m| {
        let (a, b) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
        kept.contains(a) && kept.contains(b) && kept.contains(&format!("{a}{b}"))
    });
    let e = parse(&v)
        .err()
        .expect("a tokenizer dropping non-ASCII text was accepted");
    assert!(e.contains("drops"), "{e}");
}

#[test]
fn merges_far_beyond_the_vocabulary_are_refused_before_the_crate_reads_them() {
    let mut v = good();
    v["model"]["merges"] = json!(vec![["a", "b"]; 16 * 4096 + 1]);
    let e = parse(&v)
        .err()
        .expect("65,537 merges for 4,096 tokens were accepted");
    assert!(e.contains("`model.merges` has 65537 merges"), "{e}");
}

/// The test binary runs `name` again in a child process with output capture off,
/// so what a panic hook prints reaches the child's stderr.
fn stderr_of_child(name: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("LTM_TOKENIZER_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed: {stderr}");
    stderr
}

#[test]
fn a_panicking_tokenizer_is_refused_without_printing_the_panic() {
    if std::env::var_os("LTM_TOKENIZER_CHILD").is_none() {
        let stderr = stderr_of_child("a_panicking_tokenizer_is_refused_without_printing_the_panic");
        // The crate's panic names its source file and says what failed.
        for text in ["fixed_length.rs", "chunk size"] {
            assert!(!stderr.contains(text), "the panic was printed: {stderr}");
        }
        assert!(
            stderr.contains("refused:"),
            "the child did not run: {stderr}"
        );
        return;
    }
    // `FixedLength` of length 0 parses, then panics on every text (`chunks(0)`).
    let mut v = good();
    v["pre_tokenizer"] = json!({"type": "FixedLength", "length": 0});
    let e = parse(&v).err().expect("a panicking tokenizer was accepted");
    eprintln!("refused: {e}");
    // A panic elsewhere, outside the tokenizer, must still be reported.
    let other = std::thread::spawn(|| panic!("ordinary panic")).join();
    assert!(other.is_err());
}

#[test]
fn ordinary_panics_still_print_while_a_tokenizer_is_refused() {
    if std::env::var_os("LTM_TOKENIZER_CHILD").is_none() {
        let stderr = stderr_of_child("ordinary_panics_still_print_while_a_tokenizer_is_refused");
        assert!(stderr.contains("ordinary panic"), "{stderr}");
        return;
    }
    let mut v = good();
    v["pre_tokenizer"] = json!({"type": "FixedLength", "length": 0});
    assert!(parse(&v).is_err());
    let other = std::thread::spawn(|| panic!("ordinary panic")).join();
    assert!(other.is_err());
}

fn copy_model(to: &Path) {
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("gdn-gva").join(f), to.join(f)).unwrap();
    }
}

#[test]
fn a_state_saved_with_another_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("m");
    std::fs::create_dir(&model_dir).unwrap();
    copy_model(&model_dir);
    let model = LanguageModel::load(&model_dir, Device::Cpu).unwrap();
    let mut s = model.session().unwrap();
    s.feed(&[1, 40, 41], Logits::None).unwrap();
    let path = dir.path().join("s.state");
    save_model_state(
        &path,
        &model,
        &s.snapshot().unwrap(),
        &SourcePosition::default(),
    )
    .unwrap();
    assert!(load_model_state(&path, &model).is_ok());

    // Same weights and config, another tokenizer: the ids the state was fed from
    // meant other text.
    let mut v = good();
    v["added_tokens"][2]["content"] = json!("<eos>");
    v["model"]["vocab"].as_object_mut().unwrap().remove("</s>");
    v["model"]["vocab"]["<eos>"] = json!(2);
    std::fs::write(model_dir.join("tokenizer.json"), v.to_string()).unwrap();
    let other = LanguageModel::load(&model_dir, Device::Cpu).unwrap();
    let e = load_model_state(&path, &other).expect_err("a state of another tokenizer was accepted");
    assert!(e.to_string().contains("tokenizer"), "{e}");
}
