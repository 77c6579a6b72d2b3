//! The built-in memory model: streaming is independent of window sizes, states save and
//! load, the newest writes win and stay recallable past capacity.

use ltm_engine::memory_model::mix::SplitMix64;
use ltm_engine::memory_model::{MemoryModel, ModelConfig};
use ltm_engine::state_file::{load_state, save_state};
use ltm_engine::stream::stream_file;
use ltm_engine::Device;

fn model(bytes: u64) -> MemoryModel {
    MemoryModel::new(ModelConfig::with_state_bytes(bytes).unwrap(), Device::Cpu).unwrap()
}

fn hash(rng: &mut SplitMix64) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..16).map(|_| A[rng.below(52) as usize] as char).collect()
}

/// `n` random pairs and their text, `KEY = VALUE` per line.
fn pairs(seed: u64, n: usize) -> (Vec<(String, String)>, String) {
    let mut rng = SplitMix64::new(seed);
    let p: Vec<(String, String)> = (0..n).map(|_| (hash(&mut rng), hash(&mut rng))).collect();
    let text = p.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    (p, text)
}

fn recall(m: &MemoryModel, p: &[(String, String)]) -> f64 {
    let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    let got = m.next_words(&keys).unwrap();
    let ok = got.iter().zip(p).filter(|(d, (_, v))| &d.text == v).count();
    ok as f64 / p.len() as f64
}

#[test]
fn window_sizes_do_not_change_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = pairs(1, 3000);
    let path = dir.path().join("ctx.txt");
    // Long words (cut into pieces) and punctuation too.
    let text = format!("{text}a_very_long_word_of_many_pieces, then more; words\n{text}");
    std::fs::write(&path, &text).unwrap();
    let mut states = Vec::new();
    for (window_bytes, window_tokens) in [(1 << 20, 4096), (7, 3), (4096, 1), (100_000, 777)] {
        let mut m = model(2 << 20);
        let stats = stream_file(
            &mut m.streamer(window_tokens).unwrap(),
            &path,
            window_bytes,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(stats.bytes, text.len() as u64);
        // Pieces `a_very_long_word`, `_of_many_pieces`, then 3 words: 4 written.
        assert_eq!(
            stats.writes,
            2 * 3000 + 4,
            "one write per word after the first of a line"
        );
        // The state counts the tokens it has consumed (what --resume skips).
        assert_eq!(m.state().tokens_seen(), stats.tokens);
        states.push(m.into_state());
    }
    assert!(states[0].values().iter().any(|&x| x != 0.0));
    for s in &states[1..] {
        assert_eq!(s, &states[0]);
    }
}

#[test]
fn newest_writes_win_and_stay_recallable_past_capacity() {
    let mut m = model(4 << 20); // 1,926 rows
    let rows = (m.config().heads * m.config().rows) as f64;
    let n = (2.0 * rows) as usize; // twice what the state holds well
    let (p, text) = pairs(2, n);
    let mut w = m.writer(4096);
    w.feed(&mut m, text.as_bytes()).unwrap();
    w.finish(&mut m).unwrap();
    let all = recall(&m, &p);
    let newest = recall(&m, &p[n - n / 20..]);
    let oldest = recall(&m, &p[..n / 20]);
    eprintln!("2× load: recall {all:.3}, newest 5% {newest:.3}, oldest 5% {oldest:.3}");
    assert!(all < 0.8, "not over capacity: {all}");
    assert!(newest >= 0.95, "newest 5% recalled {newest}");
    assert!(oldest < newest);

    // A rewrite replaces: the newest value for a key is what is read.
    let (k, _) = &p[0];
    let mut w = m.writer(16);
    w.feed(
        &mut m,
        format!("{k} = NewValue\n{k} = NewerValue\n").as_bytes(),
    )
    .unwrap();
    w.finish(&mut m).unwrap();
    assert_eq!(m.next_words(&[k.as_str()]).unwrap()[0].text, "NewerValue");
}

#[test]
fn saved_states_answer_the_same_and_continue_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (p, text) = pairs(3, 2000);
    let (first, second) = text.split_at(text.len() / 2 + 7); // mid-line, mid-word
    let config = ModelConfig::with_state_bytes(8 << 20).unwrap();

    let mut whole = MemoryModel::new(config.clone(), Device::Cpu).unwrap();
    let mut w = whole.writer(1000);
    w.feed(&mut whole, text.as_bytes()).unwrap();
    w.finish(&mut whole).unwrap();

    // Half, saved and loaded, then the rest: the tokenizer must not carry anything
    // across the cut that the state does not hold, so cut on a line boundary.
    let cut = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    let (first_lines, rest_lines) = text.split_at(cut);
    let mut half = MemoryModel::new(config.clone(), Device::Cpu).unwrap();
    let mut w = half.writer(1000);
    w.feed(&mut half, first_lines.as_bytes()).unwrap();
    w.finish(&mut half).unwrap();
    let path = dir.path().join("half.ltmstate");
    save_state(&path, half.memory_config(), half.state()).unwrap();
    let loaded = load_state(&path, half.memory_config()).unwrap();
    let mut resumed = MemoryModel::with_state(config.clone(), Device::Cpu, loaded).unwrap();
    let mut w = resumed.writer(1000);
    w.feed(&mut resumed, rest_lines.as_bytes()).unwrap();
    w.finish(&mut resumed).unwrap();
    assert_eq!(resumed.state(), whole.state());
    assert_eq!(recall(&resumed, &p), 1.0, "2,000 pairs in 3,854 rows");

    // Feeding the same text cut mid-word into one writer is the same as whole.
    let mut cut_model = MemoryModel::new(config.clone(), Device::Cpu).unwrap();
    let mut w = cut_model.writer(1000);
    w.feed(&mut cut_model, first.as_bytes()).unwrap();
    w.feed(&mut cut_model, second.as_bytes()).unwrap();
    w.finish(&mut cut_model).unwrap();
    assert_eq!(cut_model.state(), whole.state());

    // A state of another model (seed) is refused by its fingerprint.
    let mut other = config.clone();
    other.seed ^= 1;
    let e = load_state(&path, &other.memory_config())
        .unwrap_err()
        .to_string();
    assert!(e.contains("another configuration"), "{e}");
}

#[test]
fn queries_need_a_word() {
    let m = model(1 << 20);
    let e = m.next_words(&["= '"]).unwrap_err().to_string();
    assert!(e.contains("no word"), "{e}");
}

#[test]
fn state_bytes_are_checked_and_reported() {
    let c = ModelConfig::with_state_bytes(256 << 20).unwrap();
    assert!(c.state_bytes() <= 256 << 20);
    assert!(c.state_bytes() > (256 << 20) - 2 * ModelConfig::ROW_BYTES * c.heads as u64);
    let m = MemoryModel::new(c.clone(), Device::Cpu).unwrap();
    assert_eq!(m.state().size_bytes() as u64, c.state_bytes());
    let e = ModelConfig::with_state_bytes(1000).unwrap_err().to_string();
    assert!(e.contains("--state-bytes 1000"), "{e}");
    let mut bad = c;
    bad.beta = 0.0;
    assert!(bad.validate().is_err());
}
