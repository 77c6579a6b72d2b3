//! Seeded mutation tests of every file a model directory brings: config.json,
//! tokenizer.json, model.safetensors (header and data) and model state files. Each
//! mutant must give a result or an error, never a panic, an abort or a signal, and
//! the process runs under a 6 GiB address-space limit, so a size read from a mutant
//! and allocated unchecked fails the test. Fixed seeds: the same mutants every run.
//!
//! The structural mutants edit the files as JSON (numbers at their type's limits, wrong
//! types, removed and repeated keys, deep nesting; offsets, shapes, dtypes and names of
//! safetensors headers; shard names of an index) and load the whole model directory:
//! each either fails with an error or loads and runs a short forward, within a time
//! limit. tokenizer.json also gets structural mutants (parts known to make the
//! tokenizers crate hang, abort or blow up, values of odd types and sizes, keys removed
//! or written twice, deep nesting), each loaded and used within a time limit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use half::f16;
use ltm_engine::lm::config::GdnConfig;
use ltm_engine::lm::state_file::{load_model_state, save_model_state, SourcePosition};
use ltm_engine::lm::stream::{stream_text, LmStreamOptions};
use ltm_engine::lm::tokenizer::ModelTokenizer;
use ltm_engine::lm::weights::{expected_tensors, WeightFiles};
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::stream::{ContextFile, Format, Quiet, StreamOptions};
use ltm_engine::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Map, Value};

const MUTANTS: usize = 2000;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn limit_memory() {
    let limit = 6u64 << 30;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit with a valid struct only lowers this process's own limit.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &rl);
    }
}

/// One random edit: flip a bit, set a byte, delete, duplicate or insert a run, or
/// truncate; `focus` bytes at the front get most of the edits (the headers).
fn mutate(good: &[u8], focus: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut b = good.to_vec();
    let edits = rng.random_range(1..=3);
    for _ in 0..edits {
        if b.is_empty() {
            break;
        }
        let span = if rng.random_bool(0.85) {
            focus.min(b.len())
        } else {
            b.len()
        };
        let at = rng.random_range(0..span);
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => {
                let end = (at + rng.random_range(1..16)).min(b.len());
                b.drain(at..end);
            }
            3 => {
                let end = (at + rng.random_range(1..16)).min(b.len());
                let run = b[at..end].to_vec();
                b.splice(at..at, run);
            }
            4 => {
                let n = rng.random_range(1..8);
                let ins: Vec<u8> = (0..n)
                    .map(|_| b"0123456789-.e\"{}[],: "[rng.random_range(0..21)])
                    .collect();
                b.splice(at..at, ins);
            }
            5 => b.truncate(at),
            _ => {
                // A digit run replaced by a huge or negative number.
                let s = [
                    b"99999999999999999999".as_slice(),
                    b"-1",
                    b"4294967296",
                    b"1e300",
                    b"0",
                ][rng.random_range(0..5)];
                b.splice(at..(at + 1).min(b.len()), s.iter().copied());
            }
        }
    }
    b
}

#[test]
fn config_json_mutants() {
    limit_memory();
    let good = std::fs::read(fixture("gdn-gva/config.json")).unwrap();
    let original = GdnConfig::parse(std::str::from_utf8(&good).unwrap()).unwrap();
    let weights = WeightFiles::open(&fixture("gdn-gva")).unwrap();
    let mut rng = StdRng::seed_from_u64(0xC0F1);
    let (mut accepted, mut refused, mut loaded) = (0, 0, 0);
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, good.len(), &mut rng);
        let text = String::from_utf8_lossy(&bytes);
        match GdnConfig::parse(&text) {
            Err(msg) => {
                assert!(!msg.is_empty());
                refused += 1;
            }
            Ok(c) => {
                accepted += 1;
                // A config the weights load under has the original's shapes.
                if weights.load(&c).is_ok() {
                    loaded += 1;
                    assert_eq!(
                        (
                            c.hidden_size,
                            c.layers,
                            c.heads,
                            c.value_heads,
                            c.head_dim,
                            c.value_dim
                        ),
                        (
                            original.hidden_size,
                            original.layers,
                            original.heads,
                            original.value_heads,
                            original.head_dim,
                            original.value_dim
                        )
                    );
                }
            }
        }
    }
    eprintln!("config.json: {MUTANTS} mutants, {refused} refused, {accepted} parsed, {loaded} loaded the weights");
    assert!(refused > MUTANTS / 2 && accepted > 0);
}

#[test]
fn tokenizer_json_mutants() {
    limit_memory();
    let good = std::fs::read(fixture("gdn-gva/tokenizer.json")).unwrap();
    let mut rng = StdRng::seed_from_u64(0x70C3);
    let (mut ok, mut refused) = (0, 0);
    // The front holds the special tokens, normalizer, pre-tokenizer and
    // post-processor; the rest is the vocabulary and the merges.
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, 3000, &mut rng);
        match ModelTokenizer::parse(&String::from_utf8_lossy(&bytes), 4096) {
            Ok(t) => {
                ok += 1;
                for id in t
                    .encode("Hello, wörld!\n\tx = 42", true)
                    .unwrap_or_default()
                {
                    assert!(id < 4096);
                }
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("tokenizer.json: {MUTANTS} mutants, {refused} refused, {ok} accepted");
    assert!(refused > 0 && ok > 0);
}

#[test]
fn safetensors_mutants() {
    limit_memory();
    let good = std::fs::read(fixture("gdn-gva/model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let config = GdnConfig::load(&fixture("gdn-gva/config.json")).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5AFE);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, header, &mut rng);
        let result = WeightFiles::from_bytes("model.safetensors".into(), bytes)
            .and_then(|w| w.load(&config));
        match result {
            Ok((w, _)) => {
                ok += 1;
                assert_eq!(w.layers.len(), config.layers);
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("model.safetensors: {MUTANTS} mutants, {refused} refused, {ok} loaded");
    assert!(refused > MUTANTS / 2);
}

#[test]
fn model_state_file_mutants() {
    limit_memory();
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let mut s = model.session().unwrap();
    s.feed(&[1, 40, 41, 900], Logits::None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.state");
    let pos = SourcePosition {
        bytes: 9,
        crc32: 1,
        window_start: 9,
        tokens_past: 0,
        nll_sum: 1.0,
        nll_tokens: 3,
    };
    save_model_state(&path, &model, &s.snapshot().unwrap(), &pos).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut rng = StdRng::seed_from_u64(0x57A7);
    let mut refused = 0;
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, 120, &mut rng);
        if bytes == good {
            continue;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            load_model_state(&path, &model).is_err(),
            "a damaged state file was accepted"
        );
        refused += 1;
    }
    eprintln!("model state files: {refused} mutants, all refused");
}

/// Longest a structural mutant may take to load and run a forward: the slowest of
/// thousands takes milliseconds (each test prints it), an unchecked size read from a
/// mutant seconds or more.
const SLOW: Duration = Duration::from_secs(3);

/// Structural mutants of each kind.
const STRUCTURAL: usize = 2000;

const PROMPT: [u32; 5] = [1, 7, 40, 3, 2];

/// What a run of structural mutants gave.
#[derive(Debug, Default)]
struct Tally {
    refused: usize,
    /// Loaded as the original model (same config and weights: same logits).
    same: usize,
    /// Loaded as another model (a changed config, or bytes read as other tensors).
    other: usize,
    /// Of those, the ones whose finite but reinterpreted weights overflowed in the
    /// forward.
    other_non_finite: usize,
    slowest: Duration,
}

impl Tally {
    /// Loads the model directory `dir` and runs [`PROMPT`] through it: an error, the
    /// original's logits bit for bit when it is the original model (`original`:
    /// fingerprint and logits), or another model's logits (finite when
    /// `finite_weights`: the weights are the original's, only the config changed).
    fn check(&mut self, dir: &Path, original: &(u64, Vec<f32>), finite_weights: bool, what: &str) {
        let start = Instant::now();
        let result = LanguageModel::load(dir, Device::Cpu).and_then(|m| {
            let logits = m.session()?.feed(&PROMPT, Logits::All)?;
            Ok((m.fingerprint(), logits))
        });
        let took = start.elapsed();
        assert!(took < SLOW, "{what}: {took:?}");
        self.slowest = self.slowest.max(took);
        match result {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                self.refused += 1;
            }
            Ok((fingerprint, logits)) if fingerprint == original.0 => {
                assert!(
                    logits == original.1,
                    "{what}: the same model gave other logits"
                );
                self.same += 1;
            }
            Ok((_, logits)) => {
                self.other += 1;
                if !logits.iter().all(|x| x.is_finite()) {
                    assert!(!finite_weights, "{what}: non-finite logits");
                    self.other_non_finite += 1;
                }
            }
        }
    }
}

/// The reference run of a model directory: its fingerprint and logits of [`PROMPT`].
fn reference(dir: &Path) -> (u64, Vec<f32>) {
    let m = LanguageModel::load(dir, Device::Cpu).unwrap();
    let logits = m.session().unwrap().feed(&PROMPT, Logits::All).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    (m.fingerprint(), logits)
}

/// gdn-gva's config at a few dozen values per matrix: a model of a few KB whose
/// mutants load and run in well under a millisecond.
fn tiny_config() -> Value {
    let text = std::fs::read_to_string(fixture("gdn-gva/config.json")).unwrap();
    let mut c: Value = serde_json::from_str(&text).unwrap();
    for (k, v) in [
        ("hidden_size", 16),
        ("num_hidden_layers", 2),
        ("num_heads", 2),
        ("head_dim", 8),
        ("num_v_heads", 4),
        ("vocab_size", 64),
        ("intermediate_size", 32),
    ] {
        c[k] = json!(v);
    }
    c
}

type Tensors = Vec<(String, Vec<usize>, Vec<u8>)>;

/// Random f16 weights for `config` in the ranges trained models have.
fn tiny_tensors(config: &Value) -> Tensors {
    let c = GdnConfig::parse(&config.to_string()).unwrap();
    let mut rng = StdRng::seed_from_u64(0x7171);
    expected_tensors(&c)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let bytes = (0..n)
                .flat_map(|_| {
                    let x = if name.ends_with("norm.weight") {
                        1.0
                    } else if name.ends_with("A_log") {
                        rng.random_range(0.0..1.0)
                    } else if name.ends_with("dt_bias") {
                        -2.0
                    } else {
                        rng.random_range(-0.5..0.5)
                    };
                    f16::from_f32(x).to_le_bytes()
                })
                .collect();
            (name, shape, bytes)
        })
        .collect()
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F16, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A tiny model directory (no tokenizer): config.json and model.safetensors.
fn tiny_model(dir: &Path) -> Tensors {
    let config = tiny_config();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tensors = tiny_tensors(&config);
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    tensors
}

/// `[[…]]` nested `depth` deep.
fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// Numbers at their type's limits and values of every JSON type.
const LIMITS: [&str; 20] = [
    "0",
    "-1",
    "1",
    "2147483648",
    "4294967296",
    "9007199254740992",
    "18446744073709551616",
    "1e308",
    "-0.0",
    "1e-300",
    "0.5",
    "65536",
    "1048576",
    "true",
    "\"x\"",
    "null",
    "[]",
    "{}",
    "[[[1]]]",
    "-9223372036854775808",
];

fn pick<'a, T: ?Sized>(rng: &mut StdRng, from: &[&'a T]) -> &'a T {
    from[rng.random_range(0..from.len())]
}

/// `text` (a JSON object) with `"key": value` pairs inserted first, as a file may
/// repeat a key (a parsed map cannot hold the repeat).
fn with_raw_pairs(text: &str, pairs: &[String]) -> String {
    let mut out = String::from("{");
    for p in pairs {
        out.push_str(p);
        out.push(',');
    }
    if text == "{}" {
        out.pop();
        out.push('}');
    } else {
        out.push_str(&text[1..]);
    }
    out
}

/// One to three structural edits of a config: a field set to a value from [`LIMITS`],
/// removed, repeated with another value, or nested deep; now and then a top level
/// that is not an object.
fn mutate_config(good: &Map<String, Value>, rng: &mut StdRng) -> (String, String) {
    let mut fields = good.clone();
    let keys: Vec<&str> = good.keys().map(String::as_str).collect();
    let mut raw = Vec::new();
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let key = if rng.random_bool(0.92) {
            pick(rng, &keys).to_string()
        } else {
            pick(rng, &["_note", "rope_theta", "num_heads ", ""][..]).to_string()
        };
        let value = pick(rng, &LIMITS);
        match rng.random_range(0..6) {
            0..=2 => {
                fields.insert(key.clone(), serde_json::from_str(value).unwrap());
                what.push(format!("{key}={value}"));
            }
            3 => {
                fields.remove(&key);
                what.push(format!("-{key}"));
            }
            4 => {
                raw.push(format!("\"{key}\": {value}"));
                what.push(format!("{key} twice"));
            }
            _ => {
                let depth = *pick(rng, &[&2, &64, &127, &128, &129, &100_000]);
                fields.remove(&key);
                raw.push(format!("\"{key}\": {}", nested(depth)));
                what.push(format!("{key} nested {depth}"));
            }
        }
    }
    let mut text = with_raw_pairs(&Value::Object(fields).to_string(), &raw);
    if rng.random_bool(0.02) {
        text = pick(
            rng,
            &[format!("[{text}]").as_str(), "\"config\"", "7", "", "null"],
        )
        .to_string();
        what.push("top level".into());
    }
    (text, what.join(", "))
}

#[test]
fn config_json_structural_mutants() {
    limit_memory();
    let dir = tempfile::tempdir().unwrap();
    // The fixture's trained weights, so a config the weights load under runs real
    // values: its logits must be finite.
    std::fs::copy(
        fixture("gdn-gva/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let good_text = std::fs::read_to_string(fixture("gdn-gva/config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), &good_text).unwrap();
    let original = reference(dir.path());
    let good: Map<String, Value> = serde_json::from_str(&good_text).unwrap();
    let mut rng = StdRng::seed_from_u64(0xC0F2);
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..STRUCTURAL {
        let (text, what) = mutate_config(&good, &mut rng);
        std::fs::write(dir.path().join("config.json"), &text).unwrap();
        tally.check(dir.path(), &original, true, &what);
    }
    eprintln!(
        "config.json structural: {STRUCTURAL} mutants in {:?}: {tally:?}",
        start.elapsed()
    );
    assert!(
        tally.refused > STRUCTURAL / 2 && tally.same + tally.other > 0,
        "{tally:?}"
    );
}

/// The header of a safetensors file as a JSON object, and the data after it.
fn split_safetensors(bytes: &[u8]) -> (Map<String, Value>, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        &bytes[8 + n..],
    )
}

fn join_safetensors(header: &str, len_error: i64, data: &[u8]) -> Vec<u8> {
    let len = (header.len() as i64 + len_error) as u64;
    [&len.to_le_bytes(), header.as_bytes(), data].concat()
}

/// One to three structural edits of a safetensors header: data offsets that overlap,
/// swap or pass the end; shapes with dimensions at their type's limits, added or
/// dropped; other dtypes (with and without a shape that keeps the byte count);
/// entries repeated, renamed, removed or added; odd metadata; a wrong length prefix.
fn mutate_header(good: &[u8], rng: &mut StdRng) -> (Vec<u8>, String) {
    let (mut map, data) = split_safetensors(good);
    let names: Vec<String> = map
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let total = data.len() as u64;
    let mut raw = Vec::new();
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let name = names[rng.random_range(0..names.len())].clone();
        let Some(entry) = map.get(&name).cloned() else {
            continue;
        };
        let offsets: Vec<u64> = entry["data_offsets"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let (s, e) = match offsets[..] {
            [s, e] => (s, e),
            _ => (0, 0),
        };
        let k = rng.random_range(1..64u64);
        let mut entry = entry;
        match rng.random_range(0..9) {
            0 => {
                let new = *pick(
                    rng,
                    &[
                        &[s.saturating_sub(k), e.saturating_sub(k)],
                        &[s, e + k],
                        &[e, s],
                        &[s, total + k],
                        &[total, total + k],
                        &[u64::MAX - 1, u64::MAX],
                        &[s + 1, e + 1],
                        &[0, e - s],
                    ],
                );
                entry["data_offsets"] = json!(new);
                what.push(format!("{name} offsets {new:?}"));
            }
            1 => {
                let shape = entry["shape"].as_array_mut().unwrap();
                match rng.random_range(0..4) {
                    0 if !shape.is_empty() => {
                        let i = rng.random_range(0..shape.len());
                        let v = pick(rng, &LIMITS);
                        shape[i] = serde_json::from_str(v).unwrap();
                    }
                    1 => shape.push(json!(1)),
                    2 => shape.reverse(),
                    _ => {
                        shape.pop();
                    }
                }
                what.push(format!("{name} shape {}", entry["shape"]));
            }
            2 => {
                let dtype = pick(
                    rng,
                    &[
                        &json!("BF16"),
                        &json!("F32"),
                        &json!("F64"),
                        &json!("I32"),
                        &json!("U8"),
                        &json!("BOOL"),
                        &json!("F8_E4M3"),
                        &json!("I64"),
                        &json!("nope"),
                        &json!(7),
                        &Value::Null,
                    ],
                )
                .clone();
                // Half the time the first dimension keeps the byte count, so the
                // file stays valid and the tensor's bytes are read as another type.
                if rng.random_bool(0.5) {
                    let width = match dtype.as_str() {
                        Some("F32" | "I32") => 4,
                        Some("F64" | "I64") => 8,
                        Some("U8" | "BOOL" | "F8_E4M3") => 1,
                        _ => 2,
                    };
                    if let Some(d0) = entry["shape"][0].as_u64() {
                        let elems = d0 * 2 / width;
                        entry["shape"][0] = json!(elems.max(1));
                    }
                }
                entry["dtype"] = dtype.clone();
                what.push(format!("{name} dtype {dtype}"));
            }
            3 => {
                let other = &names[rng.random_range(0..names.len())];
                let twin = if rng.random_bool(0.5) {
                    &entry
                } else {
                    &map[other]
                };
                raw.push(format!("\"{name}\": {twin}"));
                what.push(format!("{name} twice"));
            }
            4 => {
                map.remove(&name);
                let new = if rng.random_bool(0.5) {
                    names[rng.random_range(0..names.len())].clone()
                } else {
                    format!("{name}.x")
                };
                what.push(format!("{name} renamed {new}"));
                map.insert(new, entry);
                continue;
            }
            5 => {
                map.remove(&name);
                what.push(format!("-{name}"));
                continue;
            }
            6 => {
                let meta = pick(
                    rng,
                    &[
                        &json!({"format": "pt"}),
                        &json!({"a": 1}),
                        &json!([]),
                        &json!("x"),
                    ],
                )
                .clone();
                map.insert("__metadata__".into(), meta.clone());
                what.push(format!("metadata {meta}"));
            }
            7 => {
                let depth = *pick(rng, &[&64, &127, &128, &129, &100_000]);
                raw.push(format!("\"__metadata__\": {}", nested(depth)));
                what.push(format!("metadata nested {depth}"));
            }
            _ => {
                let at = *pick(rng, &[&s, &e, &total]);
                map.insert(
                    format!("model.extra{k}"),
                    json!({"dtype": "F16", "shape": [0], "data_offsets": [at, at]}),
                );
                what.push(format!("empty tensor at {at}"));
            }
        }
        map.insert(name, entry);
    }
    let mut header = with_raw_pairs(&Value::Object(map).to_string(), &raw);
    if rng.random_bool(0.2) {
        header.push_str(&" ".repeat(rng.random_range(1..16)));
        what.push("padded".into());
    }
    let len_error = if rng.random_bool(0.05) {
        what.push("length prefix off".into());
        *pick(rng, &[&-8i64, &-1, &1, &8, &(1 << 40)])
    } else {
        0
    };
    (join_safetensors(&header, len_error, data), what.join(", "))
}

#[test]
fn safetensors_header_structural_mutants() {
    limit_memory();
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let original = reference(dir.path());
    let path = dir.path().join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    // Padding alone keeps the model: the same logits.
    let (map, data) = split_safetensors(&good);
    let padded = Value::Object(map).to_string() + "    ";
    std::fs::write(&path, join_safetensors(&padded, 0, data)).unwrap();
    assert_eq!(reference(dir.path()), original);

    let mut rng = StdRng::seed_from_u64(0x5AF2);
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..STRUCTURAL {
        let (bytes, what) = mutate_header(&good, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        tally.check(dir.path(), &original, false, &what);
    }
    eprintln!(
        "model.safetensors header structural: {STRUCTURAL} mutants in {:?}: {tally:?}",
        start.elapsed()
    );
    assert!(
        tally.refused > STRUCTURAL / 2 && tally.same > 0,
        "{tally:?}"
    );
}

const SHARDS: [&str; 2] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// The tiny model in two shards with their index (returned: the weight map's JSON).
fn sharded_tiny_model(dir: &Path) -> Map<String, Value> {
    let tensors = tiny_model(dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let half = tensors.len() / 2;
    let mut map = Map::new();
    for (shard, part) in SHARDS.iter().zip([&tensors[..half], &tensors[half..]]) {
        write_safetensors(&dir.join(shard), part);
        for (name, _, _) in part {
            map.insert(name.clone(), json!(shard));
        }
    }
    write_index(dir, &map);
    map
}

fn write_index(dir: &Path, map: &Map<String, Value>) {
    let index = json!({"metadata": {"total_size": 1}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// One to three structural edits of a shard index: entries removed, moved to the
/// other shard, added for tensors no shard holds, repeated; shard names that leave
/// the directory, name a missing or non-safetensors file, or are not strings;
/// a missing or mistyped weight map; deep nesting.
fn mutate_index(good: &Map<String, Value>, rng: &mut StdRng) -> (String, String) {
    let mut map = good.clone();
    let names: Vec<String> = good.keys().cloned().collect();
    let mut raw = Vec::new();
    let mut what = Vec::new();
    let mut metadata = json!({"total_size": 1}).to_string();
    let mut top = None;
    for _ in 0..rng.random_range(1..=3) {
        let name = names[rng.random_range(0..names.len())].clone();
        let shard = pick(rng, &SHARDS);
        match rng.random_range(0..8) {
            0 => {
                map.remove(&name);
                what.push(format!("-{name}"));
            }
            1 => {
                map.insert(name.clone(), json!(shard));
                what.push(format!("{name} in {shard}"));
            }
            2 => {
                let ghost = pick(
                    rng,
                    &[
                        "model.ghost",
                        "lm_head.weight.x",
                        "model.layers.2.attn_norm.weight",
                    ],
                );
                map.insert(ghost.to_string(), json!(shard));
                what.push(format!("{ghost} in {shard}"));
            }
            3 => {
                let bad = pick(
                    rng,
                    &[
                        format!("../{shard}").as_str(),
                        format!("/tmp/{shard}").as_str(),
                        format!("./{shard}").as_str(),
                        format!("{shard}/").as_str(),
                        format!("sub/{shard}").as_str(),
                        format!(".{shard}").as_str(),
                        format!("{shard}\\x").as_str(),
                        "",
                        ".",
                        "..",
                        "config.json",
                        "model-00009-of-00002.safetensors",
                    ],
                )
                .to_string();
                what.push(format!("{name} in {bad:?}"));
                map.insert(name, json!(bad));
            }
            4 => {
                let v = pick(rng, &LIMITS);
                map.insert(name.clone(), serde_json::from_str(v).unwrap());
                what.push(format!("{name} = {v}"));
            }
            5 => {
                raw.push(format!("\"{name}\": \"{shard}\""));
                what.push(format!("{name} twice, in {shard}"));
            }
            6 => {
                top = Some(
                    pick(
                        rng,
                        &[
                            "{\"metadata\": {}}",
                            "{\"weight_map\": []}",
                            "{\"weight_map\": \"x\"}",
                            "[]",
                            "{\"weight_map\": {}, \"weight_map\": {}}",
                        ],
                    )
                    .to_string(),
                );
                what.push(format!("top level {top:?}"));
            }
            _ => {
                let depth = *pick(rng, &[&64, &127, &128, &129, &100_000]);
                metadata = nested(depth);
                what.push(format!("metadata nested {depth}"));
            }
        }
    }
    let weight_map = with_raw_pairs(&Value::Object(map).to_string(), &raw);
    let text = top
        .unwrap_or_else(|| format!("{{\"metadata\": {metadata}, \"weight_map\": {weight_map}}}"));
    (text, what.join(", "))
}

#[test]
fn shard_index_structural_mutants() {
    limit_memory();
    let dir = tempfile::tempdir().unwrap();
    let good = sharded_tiny_model(dir.path());
    let original = reference(dir.path());
    let mut rng = StdRng::seed_from_u64(0x1DE7);
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..STRUCTURAL {
        let (text, what) = mutate_index(&good, &mut rng);
        std::fs::write(dir.path().join("model.safetensors.index.json"), &text).unwrap();
        tally.check(dir.path(), &original, true, &what);
    }
    eprintln!(
        "model.safetensors.index.json structural: {STRUCTURAL} mutants in {:?}: {tally:?}",
        start.elapsed()
    );
    assert!(
        tally.refused > STRUCTURAL / 2 && tally.same > 0,
        "{tally:?}"
    );
}

fn load_error(dir: &Path) -> String {
    match LanguageModel::load(dir, Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_config_asking_for_a_million_layers_fails_at_once() {
    limit_memory();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("gdn-gva/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture("gdn-gva/config.json")).unwrap();
    let mut c: Value = serde_json::from_str(&text).unwrap();
    c["num_hidden_layers"] = json!(1 << 20);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let start = Instant::now();
    let e = load_error(dir.path());
    // It took 30 s and 3.3 GB to list the tensors of a million layers first.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(
        e.contains("`model.layers.2.attn_norm.weight` is missing"),
        "{e}"
    );
}

#[test]
fn non_finite_weights_are_refused_by_tensor_and_element() {
    let dir = tempfile::tempdir().unwrap();
    let good = tiny_model(dir.path());
    let cases = [
        (
            "model.layers.1.attn.v_proj.weight",
            5,
            f16::NAN,
            "element 5",
        ),
        (
            "model.layers.0.attn_norm.weight",
            3,
            f16::INFINITY,
            "element 3",
        ),
        ("lm_head.weight", 1000, f16::NEG_INFINITY, "element 1000"),
        // Finite, but -exp(100) is not.
        (
            "model.layers.0.attn.A_log",
            2,
            f16::from_f32(100.0),
            "element 2",
        ),
    ];
    let config = GdnConfig::parse(&tiny_config().to_string()).unwrap();
    for (tensor, at, value, want) in cases {
        let mut tensors = good.clone();
        let t = tensors.iter_mut().find(|t| t.0 == tensor).unwrap();
        t.2[2 * at..2 * at + 2].copy_from_slice(&value.to_le_bytes());
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &tensors);
        let e = load_error(dir.path());
        assert!(e.contains(tensor) && e.contains(want), "{e}");
        assert!(e.contains("model.safetensors"), "{e}");
        // The device's path (vectors converted, matrices checked as stored).
        let files = WeightFiles::open(dir.path()).unwrap();
        let e = files.load_vectors(&config).err().unwrap().to_string();
        assert!(e.contains(tensor) && e.contains(want), "{e}");
    }
}

#[test]
fn shard_index_problems_blame_the_right_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = sharded_tiny_model(dir.path());
    assert!(LanguageModel::load(dir.path(), Device::Cpu).is_ok());
    let shard = |i: usize| dir.path().join(SHARDS[i]).display().to_string();

    // A ghost entry: the index puts a tensor in the second shard, which lacks it.
    let mut map = good.clone();
    map.insert("model.ghost".into(), json!(SHARDS[1]));
    write_index(dir.path(), &map);
    let e = load_error(dir.path());
    assert!(
        e.starts_with(&shard(1)) && e.contains("model.ghost") && !e.contains(SHARDS[0]),
        "{e}"
    );

    // One tensor in both shards: both named.
    let tensors = tiny_tensors(&tiny_config());
    let half = tensors.len() / 2;
    let mut second = tensors[half..].to_vec();
    second.push(tensors[0].clone());
    write_safetensors(&dir.path().join(SHARDS[1]), &second);
    write_index(dir.path(), &good);
    let e = load_error(dir.path());
    assert!(
        e.contains(&shard(0)) && e.contains(&shard(1)) && e.contains(&tensors[0].0),
        "{e}"
    );
    write_safetensors(&dir.path().join(SHARDS[1]), &tensors[half..]);

    // A key given twice: serde_json alone keeps the last, here the right shard.
    let first = &tensors[0].0;
    let text = std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap();
    let twice = text.replacen(
        "\"weight_map\":{",
        &format!("\"weight_map\":{{\"{first}\":\"{}\",", SHARDS[1]),
        1,
    );
    assert_ne!(twice, text);
    std::fs::write(dir.path().join("model.safetensors.index.json"), twice).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains(&format!("\"{first}\" appears twice")), "{e}");

    // Paths out of the directory are refused; a shard that is a link to a file
    // elsewhere loads (the Hugging Face cache links snapshots to blobs).
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("w.safetensors");
    std::fs::copy(dir.path().join(SHARDS[1]), &outside).unwrap();
    let mut map = good.clone();
    for v in map.values_mut().filter(|v| *v == SHARDS[1]) {
        *v = json!(outside.display().to_string());
    }
    write_index(dir.path(), &map);
    let e = load_error(dir.path());
    assert!(e.contains("not a plain file name"), "{e}");
    for v in map
        .values_mut()
        .filter(|v| v.as_str().unwrap().contains('/'))
    {
        *v = json!(format!("../{}", SHARDS[1]));
    }
    write_index(dir.path(), &map);
    let e = load_error(dir.path());
    assert!(e.contains("not a plain file name"), "{e}");
    std::fs::remove_file(dir.path().join(SHARDS[1])).unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join(SHARDS[1])).unwrap();
    write_index(dir.path(), &good);
    assert!(LanguageModel::load(dir.path(), Device::Cpu).is_ok());
}

#[test]
fn a_name_given_twice_in_a_safetensors_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let path = dir.path().join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    let (map, data) = split_safetensors(&good);
    // The same entry twice: the file is otherwise valid, and the safetensors crate
    // keeps one of the two silently.
    let name = "model.norm.weight";
    let header = with_raw_pairs(
        &Value::Object(map.clone()).to_string(),
        &[format!("\"{name}\": {}", map[name])],
    );
    let twice = join_safetensors(&header, 0, data);
    assert!(safetensors::SafeTensors::deserialize(&twice).is_ok());
    std::fs::write(&path, twice).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains(&format!("\"{name}\" appears twice")), "{e}");
}

/// A state of gdn-gva after `tokens` tokens, saved at `position`, loaded back.
fn saved_state(
    model: &LanguageModel,
    tokens: &[u32],
    position: SourcePosition,
    edit: impl FnOnce(&mut ltm_engine::lm::ModelState),
) -> (
    tempfile::TempDir,
    PathBuf,
    ltm_engine::Result<SourcePosition>,
) {
    let mut s = model.session().unwrap();
    s.feed(tokens, Logits::None).unwrap();
    let mut state = s.snapshot().unwrap();
    edit(&mut state);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.state");
    save_model_state(&path, model, &state, &position).unwrap();
    let loaded = load_model_state(&path, model).map(|(_, p)| p);
    (dir, path, loaded)
}

#[test]
fn crafted_state_files_with_valid_checksums_are_refused() {
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let at_end = SourcePosition {
        bytes: 9,
        crc32: 1,
        window_start: 9,
        tokens_past: 0,
        nll_sum: 1.0,
        nll_tokens: 3,
    };
    let (_d, _, ok) = saved_state(&model, &[1, 40, 41, 900], at_end, |_| {});
    assert_eq!(ok.unwrap(), at_end);
    let state_len = model.memory_config().state_len();
    let (_d, _, e) = saved_state(&model, &[1, 40, 41, 900], at_end, |s| {
        s.layers[1].conv[7] = f32::NAN;
    });
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "non-finite value at layer 1, element {}",
            state_len + 7
        )),
        "{e}"
    );
    let (_d, _, e) = saved_state(&model, &[1, 40, 41, 900], at_end, |s| {
        s.layers[0].memory.values_mut()[11] = f32::INFINITY;
    });
    let e = e.unwrap_err().to_string();
    assert!(e.contains("non-finite value at layer 0, element 11"), "{e}");
    let (_d, _, e) = saved_state(&model, &[1, 40, 41, 900], at_end, |s| {
        s.last_hidden.as_mut().unwrap()[2] = f32::NEG_INFINITY;
    });
    let e = e.unwrap_err().to_string();
    assert!(e.contains("last hidden vector, element 2"), "{e}");
    for (nll_sum, nll_tokens, want) in [
        (-1.0, 3, "NLL sum is -1.0"),
        (f64::INFINITY, 3, "NLL sum is inf"),
        (f64::NAN, 3, "NLL sum is NaN"),
        (5.0, 0, "over 0 tokens"),
        (1.0, 5, "NLL tokens is 5"),
    ] {
        let position = SourcePosition {
            nll_sum,
            nll_tokens,
            ..at_end
        };
        let (_d, _, e) = saved_state(&model, &[1, 40, 41, 900], position, |_| {});
        let e = e.unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("s.state"), "{e}");
    }
}

#[test]
fn a_resumed_position_past_its_window_is_refused() {
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let text = "The memory has a fixed size. It forgets by a gate and writes what it lacks.\n";
    let ids = model
        .require_tokenizer()
        .unwrap()
        .encode(text, true)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, text).unwrap();
    let resume = |past: usize| {
        // The state stands `past` tokens into the one window that is the whole text.
        let position = SourcePosition {
            bytes: text.len() as u64,
            crc32: crc32fast::hash(text.as_bytes()),
            window_start: 0,
            tokens_past: past as u64,
            nll_sum: 0.0,
            nll_tokens: 0,
        };
        let fed: Vec<u32> = (0..past).map(|i| ids[i % ids.len()]).collect();
        let (_d, path, loaded) = saved_state(&model, &fed, position, |_| {});
        let (state, mut position) = load_model_state(&path, &model).unwrap();
        assert_eq!(loaded.unwrap(), position);
        let mut session = model.resume(state).unwrap();
        let file = ContextFile::open(&ctx, Some(Format::Text)).unwrap();
        let options = StreamOptions {
            resume: true,
            ..StreamOptions::default()
        };
        let lm = LmStreamOptions {
            loaded_from: Some(path),
            perplexity: false,
            ..LmStreamOptions::default()
        };
        stream_text(
            &file,
            &mut session,
            &mut position,
            &options,
            &lm,
            &mut Quiet,
        )
    };
    let s = resume(3).unwrap();
    assert_eq!(s.tokens, ids.len() as u64 - 3);
    // More tokens than the window holds: every one of them was skipped silently.
    for past in [ids.len(), ids.len() + 40] {
        let e = resume(past).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "{past} tokens into the window of bytes 0..{}",
                text.len()
            )) && e.contains("s.state"),
            "{e}"
        );
    }
}

/// Offsets of the integer fields of a model state file's header (after the magic):
/// version, fingerprint, six shape fields, tokens, last-hidden flag, bytes, CRC,
/// window start, tokens past, NLL sum, NLL tokens.
const STATE_FIELDS: [(usize, usize); 16] = [
    (8, 4),
    (12, 8),
    (20, 4),
    (24, 4),
    (28, 4),
    (32, 4),
    (36, 4),
    (40, 4),
    (44, 8),
    (52, 4),
    (56, 8),
    (64, 4),
    (68, 8),
    (76, 8),
    (84, 8),
    (92, 8),
];

#[test]
fn state_header_fields_at_their_limits_with_valid_checksums() {
    limit_memory();
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let inside = SourcePosition {
        bytes: 90,
        crc32: 1,
        window_start: 40,
        tokens_past: 2,
        nll_sum: 1.0,
        nll_tokens: 3,
    };
    let (_d, path, loaded) = saved_state(&model, &[1, 40, 41, 900], inside, |_| {});
    assert_eq!(loaded.unwrap(), inside);
    let good = std::fs::read(&path).unwrap();
    let limits: [u64; 9] = [
        0,
        1,
        3,
        1 << 31,
        u32::MAX as u64,
        1 << 53,
        (1 << 53) + 1,
        1 << 63,
        u64::MAX,
    ];
    let (mut refused, mut loaded_ok) = (0, 0);
    for &(at, width) in &STATE_FIELDS {
        for value in limits {
            let mut bytes = good.clone();
            let le = value.to_le_bytes();
            bytes[at..at + width].copy_from_slice(&le[..width]);
            if at == 84 {
                // The NLL sum is an f64: its limits as floats.
                let x = [
                    0.0,
                    1.0,
                    -0.0,
                    f64::MAX,
                    -1.0,
                    f64::NAN,
                    f64::INFINITY,
                    1e-300,
                    3.0,
                ][limits.iter().position(|&v| v == value).unwrap()];
                bytes[at..at + 8].copy_from_slice(&x.to_le_bytes());
            }
            let crc = crc32fast::hash(&bytes[..100]);
            bytes[100..104].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            match load_model_state(&path, &model) {
                Err(e) => {
                    assert!(e.to_string().contains("s.state"), "{e}");
                    refused += 1;
                }
                Ok((state, p)) => {
                    // Whatever loads is consistent: a position inside its window
                    // and within the tokens fed, a finite tally.
                    assert!(state.tokens <= 1 << 53 && p.tokens_past <= state.tokens);
                    assert!(p.nll_tokens <= state.tokens && p.nll_sum.is_finite());
                    assert!(p.nll_sum >= 0.0 && p.window_start <= p.bytes);
                    assert_eq!(p.tokens_past == 0, p.window_start == p.bytes);
                    loaded_ok += 1;
                }
            }
        }
    }
    eprintln!("model state headers: {refused} refused, {loaded_ok} loaded");
    assert!(refused > 100 && loaded_ok > 0);
}

fn tokenizer_json() -> Value {
    let text = std::fs::read_to_string(fixture("gdn-gva/tokenizer.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `v` is refused at load, quickly, with an error that contains `names`.
fn refused_quickly(v: &Value, names: &str) {
    let start = Instant::now();
    let result = ModelTokenizer::parse(&v.to_string(), 4096);
    let took = start.elapsed();
    let e = result.err().expect("a hostile tokenizer was accepted");
    assert!(e.contains(names), "{e}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {e}");
}

#[test]
fn a_huge_added_token_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 4000,
        "content": "x".repeat(1 << 20), "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": false}));
    refused_quickly(&v, "`added_tokens[3].content` is a string of 1048576 bytes");
}

#[test]
fn a_normalizer_that_multiplies_text_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["normalizer"] =
        json!({"type": "Replace", "pattern": {"String": "a"}, "content": "a".repeat(1000)});
    refused_quickly(&v, "`normalizer` can turn one byte of text into 1000 bytes");
    // Each small, but multiplied along a sequence.
    let step = json!({"type": "Replace", "pattern": {"Regex": "a"}, "content": "aaa"});
    v["normalizer"] = json!({"type": "Sequence", "normalizers": vec![step; 8]});
    refused_quickly(&v, "into 65536 bytes");
}

#[test]
fn a_template_of_a_million_ids_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["post_processor"]["special_tokens"]["<s>"] =
        json!({"id": "<s>", "ids": vec![1; 1 << 20], "tokens": vec!["<s>"; 1 << 20]});
    refused_quickly(
        &v,
        "`post_processor.special_tokens.<s>.ids` has 1048576 elements",
    );
}

#[test]
fn a_charsmap_declaring_an_8_gb_trie_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": "/P///w=="});
    refused_quickly(&v, "declares a trie of 1073741823 units");
}

#[test]
fn a_charsmap_whose_trie_points_outside_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": "BAAAAP////8="});
    refused_quickly(&v, "its trie points outside the table");
}

#[test]
fn a_huge_regex_and_deep_nesting_are_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["pre_tokenizer"] = json!({"type": "Split", "pattern": {"Regex": "(a|b)".repeat(500)},
        "behavior": "Isolated", "invert": false});
    refused_quickly(
        &v,
        "`pre_tokenizer.pattern.Regex` is a string of 2500 bytes",
    );
    // Deeper than serde_json's limit, and deeper than the engine's, which is lower.
    for (depth, names) in [(100, "recursion limit"), (40, "nested more than 24 deep")] {
        let mut n = json!({"type": "Lowercase"});
        for _ in 0..depth {
            n = json!({"type": "Sequence", "normalizers": [n]});
        }
        v = tokenizer_json();
        v["normalizer"] = n;
        refused_quickly(&v, names);
    }
}

#[test]
fn encoding_more_than_16_tokens_a_byte_is_refused() {
    limit_memory();
    // 60 bytes of control characters (one token each) for every snowman: a growth of
    // 20, under the load's bound of 64, but 20 tokens a byte. The probes have no
    // snowman, so it loads; the first text with one is refused.
    let controls: String = (1u8..32)
        .filter(|b| !b"\t\n\x0b\x0c\r".contains(b))
        .map(char::from)
        .cycle()
        .take(60)
        .collect();
    let mut v = tokenizer_json();
    v["normalizer"] = json!({"type": "Replace", "pattern": {"String": "☃"}, "content": controls});
    let t = ModelTokenizer::parse(&v.to_string(), 4096).unwrap();
    assert!(t.encode("a snowman", true).is_ok());
    let e = t.encode("☃☃☃", true).unwrap_err().to_string();
    assert!(
        e.contains("more than 16 a byte") && e.contains("tokenizer.json"),
        "{e}"
    );
}

fn pick_copy<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

const NUMBERS: [f64; 6] = [
    -1.0,
    0.5,
    4294967296.0,
    1.8446744073709552e19,
    1e300,
    -1e300,
];

/// A value of `kind` that a tokenizer part does not expect, or a limit of its range.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(""),
        3 => json!([]),
        4 => json!({}),
        5 => json!(0),
        6 => json!(u32::MAX),
        7 => json!(u64::MAX),
        8 => json!(i64::MIN),
        9 => json!(NUMBERS[rng.random_range(0..NUMBERS.len())]),
        10 => json!("\u{0}\u{FFFF}é漢"),
        11 => json!("x".repeat([2, 1024, 1025, 5000][rng.random_range(0..4)])),
        12 => json!({"type": "Sequence"}),
        _ => json!([1, "a", null]),
    }
}

const REGEXES: [&str; 12] = [
    "",
    "a",
    ".",
    "a*",
    "(a*)*b",
    "(?=a)",
    "\\b",
    "(x+x+)+y",
    "[",
    "(?<=a)b",
    ".{0,1000}",
    "\\p{L}+|\\s+",
];

fn sized(rng: &mut StdRng) -> usize {
    // The megabyte parts have tests of their own: here they are rare, for speed.
    if rng.random_bool(0.02) {
        return 1 << 20;
    }
    pick_copy(
        rng,
        &[0, 1, 3, 64, 256, 257, 1000, 1024, 1025, 5000, 100_000],
    )
}

fn random_text(rng: &mut StdRng) -> String {
    let n = sized(rng);
    ["a", "▁", " ", "\u{0}"][rng.random_range(0..4)].repeat(n)
}

fn replace(rng: &mut StdRng) -> Value {
    let pattern = if rng.random_bool(0.5) {
        json!({"String": pick_copy(rng, &["a", "", " ", "ab"])})
    } else {
        json!({"Regex": REGEXES[rng.random_range(0..REGEXES.len())]})
    };
    json!({"type": "Replace", "pattern": pattern, "content": random_text(rng)})
}

fn charsmap(rng: &mut StdRng) -> String {
    use std::fmt::Write;
    let n = rng.random_range(0..64);
    let mut bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    if n >= 4 && rng.random_bool(0.5) {
        // A plausible size, so the trie itself gets looked at.
        let size = 4 * rng.random_range(0..(n as u32 / 4).max(1));
        bytes[..4].copy_from_slice(&size.to_le_bytes());
    }
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = c.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - c.len()));
        for i in 0..4 {
            let ch = if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            };
            s.write_char(ch).unwrap();
        }
    }
    s
}

/// One of the parts that make the crate hang, abort or blow up, or that change what
/// the engine reads, put in its place with random sizes.
fn hostile(v: &mut Value, rng: &mut StdRng) {
    // An earlier edit may have changed what holds the parts.
    if !v.is_object() {
        return;
    }
    for part in ["model", "post_processor"] {
        if !v[part].is_object() {
            v[part] = json!({});
        }
    }
    if !v["added_tokens"].is_array() {
        v["added_tokens"] = json!([]);
    }
    match rng.random_range(0..14) {
        0 => {
            v["added_tokens"]
                .as_array_mut()
                .unwrap()
                .push(json!({"id": rng.random_range(0..5000),
            "content": random_text(rng), "single_word": rng.random_bool(0.5), "lstrip": false,
            "rstrip": false, "normalized": rng.random_bool(0.5), "special": rng.random_bool(0.5)}))
        }
        1 => v["normalizer"] = replace(rng),
        2 => {
            let n = rng.random_range(1..12);
            v["normalizer"] = json!({"type": "Sequence", "normalizers": (0..n).map(|_| replace(rng)).collect::<Vec<_>>()});
        }
        3 => v["normalizer"] = json!({"type": "Prepend", "prepend": random_text(rng)}),
        4 => {
            v["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": charsmap(rng)})
        }
        5 => {
            let n = sized(rng);
            let m = if rng.random_bool(0.8) { n } else { sized(rng) };
            v["post_processor"]["special_tokens"]["<s>"] = json!({"id": "<s>", "ids": vec![rng.random_range(0..5000); n], "tokens": vec!["<s>"; m]});
        }
        6 => {
            let piece = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
            v["post_processor"]["single"] = json!(vec![piece; sized(rng).min(5000)]);
        }
        7 => {
            v["truncation"] = json!({"direction": "Right", "max_length": rng.random_range(0..3000),
            "strategy": "LongestFirst", "stride": rng.random_range(0..10)})
        }
        8 => {
            v["padding"] = json!({"strategy": {"Fixed": rng.random_range(0..3000)}, "direction": "Right",
            "pad_to_multiple_of": null, "pad_id": rng.random_range(0..5000), "pad_type_id": 0, "pad_token": "<unk>"})
        }
        9 => {
            v["pre_tokenizer"] =
                json!({"type": "FixedLength", "length": pick_copy(rng, &[0u64, 1, u64::MAX])})
        }
        10 => {
            v["pre_tokenizer"] = json!({"type": "Split",
            "pattern": {"Regex": REGEXES[rng.random_range(0..REGEXES.len())]},
            "behavior": pick_copy(rng, &["Removed", "Isolated", "MergedWithPrevious", "Contiguous"]),
            "invert": rng.random_bool(0.5)})
        }
        11 => {
            v["decoder"] =
                json!({"type": "Strip", "content": " ", "start": sized(rng), "stop": u64::MAX})
        }
        12 => {
            let m = &mut v["model"];
            match rng.random_range(0..5) {
                0 => m["dropout"] = json!([0.0, 1.0, 2.0, -1.0][rng.random_range(0..4)]),
                1 => m["unk_token"] = json!(random_text(rng)),
                2 => m["byte_fallback"] = json!(true),
                3 => m["end_of_word_suffix"] = json!(random_text(rng)),
                _ => {
                    m["type"] = json!(["WordPiece", "Unigram", "WordLevel"][rng.random_range(0..3)])
                }
            }
        }
        _ => {
            v["normalizer"] =
                json!({"type": pick_copy(rng, &["NFKC", "Lowercase", "BertNormalizer", "Nmt"])})
        }
    }
}

/// JSON pointers of every value, with the vocabulary and the merges represented by
/// their first few entries.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    let bulk = at == "/model/vocab" || at == "/model/merges";
    match v {
        Value::Object(m) => {
            for (k, c) in m.iter().take(if bulk { 8 } else { usize::MAX }) {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate().take(if bulk { 8 } else { usize::MAX }) {
                pointers(c, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// `v` as JSON text, with the object at `dup` (if any) holding its first key twice,
/// the first time with `extra` as its value.
fn write_json(v: &Value, at: &str, dup: &str, extra: &Value, out: &mut String) {
    if !dup.starts_with(at) {
        out.push_str(&v.to_string());
        return;
    }
    match v {
        Value::Object(m) => {
            out.push('{');
            if at == dup {
                if let Some(k) = m.keys().next() {
                    out.push_str(&format!("{}:{extra},", Value::from(k.as_str())));
                }
            }
            for (i, (k, c)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                let esc = k.replace('~', "~0").replace('/', "~1");
                write_json(c, &format!("{at}/{esc}"), dup, extra, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, c) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(c, &format!("{at}/{i}"), dup, extra, out);
            }
            out.push(']');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// One structural mutant of the tokenizer's JSON, as text: hostile parts, values at
/// type limits or of the wrong type, keys removed or written twice, deep nesting.
fn structural(good: &Value, rng: &mut StdRng) -> String {
    let mut v = good.clone();
    let mut dup = None;
    for _ in 0..rng.random_range(1..=3) {
        let mut all = Vec::new();
        pointers(&v, "", &mut all);
        let at = all[rng.random_range(0..all.len())].clone();
        match rng.random_range(0..6) {
            0 | 1 => hostile(&mut v, rng),
            2 => *v.pointer_mut(&at).unwrap() = odd_value(rng),
            3 => {
                let (parent, key) = at.rsplit_once('/').unwrap_or(("", ""));
                match v.pointer_mut(parent) {
                    Some(Value::Object(m)) => {
                        m.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(a)) if !a.is_empty() => {
                        a.remove(key.parse::<usize>().unwrap_or(0).min(a.len() - 1));
                    }
                    _ => {}
                }
            }
            4 => {
                let target = v.pointer_mut(&at).unwrap();
                let mut n = target.take();
                for _ in 0..rng.random_range(1..200) {
                    n = match rng.random_range(0..3) {
                        0 => json!([n]),
                        1 => json!({"a": n}),
                        _ => json!({"type": "Sequence", "normalizers": [n]}),
                    };
                }
                *target = n;
            }
            _ => {
                if v.pointer(&at).is_some_and(Value::is_object) {
                    dup = Some((at, odd_value(rng)));
                }
            }
        }
    }
    match dup {
        Some((at, extra)) if v.pointer(&at).is_some_and(Value::is_object) => {
            let mut out = String::new();
            write_json(&v, "", &at, &extra, &mut out);
            out
        }
        _ => v.to_string(),
    }
}

/// The fixture's tokenizer cut to its first 640 ids (every byte, the specials and the
/// first merges): the same parts, parsed eight times faster, so the mutants stay quick.
fn small_tokenizer_json() -> Value {
    let mut v = tokenizer_json();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|_, id| id.as_u64().unwrap() < 640);
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    v["model"]["merges"].as_array_mut().unwrap().retain(|m| {
        let (a, b) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
        kept.contains(a) && kept.contains(b) && kept.contains(&format!("{a}{b}"))
    });
    v
}

#[test]
fn tokenizer_json_structural_mutants() {
    limit_memory();
    let good = small_tokenizer_json();
    assert!(ModelTokenizer::parse(&good.to_string(), 4096).is_ok());
    let mut rng = StdRng::seed_from_u64(0x5747);
    let (mut ok, mut refused) = (0, 0);
    let mut slowest = (Duration::ZERO, String::new());
    let start = Instant::now();
    for i in 0..MUTANTS {
        let text = structural(&good, &mut rng);
        let t0 = Instant::now();
        match ModelTokenizer::parse(&text, 4096) {
            Ok(t) => {
                ok += 1;
                if let Ok(ids) = t.encode("Hello, wörld!\n\tx = 42", true) {
                    assert!(ids.iter().all(|&id| id < 4096) && ids.len() <= 16 * 24 + 256);
                    let _ = t.decode(&ids);
                }
            }
            Err(e) => {
                assert!(!e.is_empty());
                refused += 1;
            }
        }
        let took = t0.elapsed();
        if took > slowest.0 {
            slowest = (took, format!("mutant {i} ({} bytes)", text.len()));
        }
    }
    eprintln!(
        "tokenizer.json structural: {MUTANTS} mutants in {:?}, {refused} refused, {ok} accepted, slowest {:?} ({})",
        start.elapsed(),
        slowest.0,
        slowest.1
    );
    assert!(slowest.0 < Duration::from_secs(2), "{slowest:?}");
    assert!(refused > MUTANTS / 4 && ok > MUTANTS / 20);
}
