//! Mutation tests of every parser (issue 11): a seeded mutator turns a valid file into
//! thousands of damaged ones, always the same for a seed. Each must be refused with an
//! error or, where the damage leaves a valid file, accepted for what it now says —
//! never a panic, an abort, a signal or a header accepted that does not describe its
//! data. The process runs under an address-space limit, so a size taken on trust from
//! a mutant fails an allocation (an abort) instead of passing unnoticed.

use std::ops::Range;
use std::path::Path;

use ltm_engine::hashhop::files::PromptChecker;
use ltm_engine::hashhop::{generate, read_targets, GenerateOptions};
use ltm_engine::memory_model::{MemoryModel, ModelConfig};
use ltm_engine::safetensors_io::read_kernel_inputs;
use ltm_engine::state_file::{load_state, save_state, HEADER_LEN};
use ltm_engine::stream::stream_file;
use ltm_engine::stream::{ContextFile, Format, Tokenizer};
use ltm_engine::{Backend, CpuBackend, Device, Error, MemoryConfig, State};

/// Mutants per parser and format.
const MUTANTS: usize = 2_000;

/// SplitMix64: tiny, and the same sequence on every platform and release.
struct Mutator(u64);

impl Mutator {
    fn new(seed: u64) -> Self {
        Mutator(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// 1–3 edits of `base`; half of them land in `hot` (a header, say), where one
    /// wrong byte changes the meaning of the rest.
    fn mutate(&mut self, base: &[u8], hot: Range<usize>) -> Vec<u8> {
        let mut b = base.to_vec();
        for _ in 0..1 + self.below(3) {
            let len = b.len();
            let at = if self.below(2) == 0 && hot.end > hot.start && hot.end <= len {
                hot.start + self.below(hot.end - hot.start)
            } else {
                self.below(len.max(1))
            };
            const BYTES: [u8; 12] = [
                0, 1, 0x7f, 0x80, 0xff, b'\n', b'=', b'"', b'\'', b',', 0xc3, b' ',
            ];
            const U32S: [u32; 6] = [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX, 1 << 20];
            const U64S: [u64; 6] = [0, 1, 1 << 32, 1 << 53, 1 << 63, u64::MAX];
            match self.below(11) {
                0 if at < len => b[at] ^= 1 << self.below(8),
                1 if at < len => b[at] = self.pick(&BYTES),
                2 if at + 4 <= len => {
                    let v = self.pick(&U32S);
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                3 if at + 8 <= len => {
                    let v = self.pick(&U64S);
                    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                4 => b.truncate(at),
                5 => {
                    for _ in 0..1 + self.below(64) {
                        b.push(self.next() as u8);
                    }
                }
                6 if at < len => {
                    let end = (at + 1 + self.below(16)).min(len);
                    b.drain(at..end);
                }
                7 => {
                    let n = 1 + self.below(8);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
                    b.splice(at.min(len)..at.min(len), bytes);
                }
                8 if at < len => {
                    let end = (at + 1 + self.below(32)).min(len);
                    let chunk = b[at..end].to_vec();
                    b.splice(end..end, chunk);
                }
                9 if at < len => b[at] = b'0' + self.below(10) as u8,
                _ if len > 1 => {
                    let other = self.below(len);
                    b.swap(at.min(len - 1), other);
                }
                _ => b.push(b'x'),
            }
        }
        b
    }
}

/// Caps this process's address space, once: an allocation sized by a mutant then fails
/// (and an unchecked one aborts the test) instead of succeeding on a large machine.
fn limit_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limit = 8u64 << 30;
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit with a valid struct; lowering a limit is always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) };
    });
}

/// A directory for mutants: in memory where there is one (thousands of small files
/// written on a disk shared with other jobs would make the test wait on it).
fn scratch() -> tempfile::TempDir {
    match std::fs::metadata("/dev/shm") {
        Ok(m) if m.is_dir() => tempfile::tempdir_in("/dev/shm").unwrap(),
        _ => tempfile::tempdir().unwrap(),
    }
}

/// Writes mutant `i` under a name of its own: rewriting one file in place makes ext4
/// flush it each time (its protection against truncate-and-rewrite).
fn write_mutant(dir: &Path, name: &str, i: usize, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(format!("{i}-{name}"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Outcomes of one parser's mutants.
#[derive(Default, Debug)]
struct Tally {
    refused: usize,
    accepted: usize,
    unchanged: usize,
}

impl Tally {
    fn report(&self, name: &str) {
        eprintln!(
            "{name}: {} mutants: {} refused, {} accepted as valid, {} equal to the original",
            self.refused + self.accepted + self.unchanged,
            self.refused,
            self.accepted,
            self.unchanged
        );
        assert_eq!(self.refused + self.accepted + self.unchanged, MUTANTS);
    }
}

#[test]
fn state_file_mutants_are_all_refused() {
    limit_memory();
    let dir = scratch();
    let config = MemoryConfig::new(2, 8, 4);
    let mut state = State::zeros(&config, 1);
    for (i, v) in state.values_mut().iter_mut().enumerate() {
        *v = i as f32 * 0.25 - 3.0;
    }
    state.set_tokens_seen(12_345);
    state.set_source(ltm_engine::Source {
        tokens: 12_000,
        bytes: 80_000,
        crc32: 0x1234_5678,
    });
    let path = dir.path().join("s.ltmstate");
    save_state(&path, &config, &state).unwrap();
    let base = std::fs::read(&path).unwrap();
    let mut m = Mutator::new(0x5747_4531);
    let mut tally = Tally::default();
    for i in 0..MUTANTS {
        let bytes = m.mutate(&base, 0..HEADER_LEN);
        let path = write_mutant(dir.path(), "s.ltmstate", i, &bytes);
        let got = load_state(&path, &config);
        std::fs::remove_file(&path).unwrap();
        if bytes == base {
            assert_eq!(
                got.unwrap(),
                state,
                "mutant {i}: the original no longer loads"
            );
            tally.unchanged += 1;
            continue;
        }
        // Every byte is under the checksum: any change is a corruption.
        match got {
            Err(Error::StateFile { .. }) => tally.refused += 1,
            Err(other) => panic!("mutant {i}: an error of the wrong kind: {other}"),
            Ok(_) => panic!("mutant {i}: a changed state file was accepted"),
        }
    }
    tally.report("state files");
}

fn kernel_file() -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let (b, t, h, k, v) = (1, 5, 2, 4, 3);
    let f = |n: usize, x: f32| -> Vec<u8> {
        bytemuck::cast_slice(&(0..n).map(|i| x + i as f32 * 0.01).collect::<Vec<f32>>()).to_vec()
    };
    let tensors = [
        ("q", vec![b, t, h, k], f(b * t * h * k, 0.1)),
        ("k", vec![b, t, h, k], f(b * t * h * k, 0.2)),
        ("v", vec![b, t, h, v], f(b * t * h * v, 1.0)),
        ("beta", vec![b, t, h], f(b * t * h, 0.5)),
        ("g", vec![b, t, h], f(b * t * h, -0.1)),
        ("initial_state", vec![b, h, k, v], f(b * h * k * v, 0.0)),
    ];
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| (*n, TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn safetensors_mutants_are_refused_or_describe_their_data() {
    limit_memory();
    let dir = scratch();
    let base = kernel_file();
    let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let backend = CpuBackend::new();
    let mut m = Mutator::new(0x5341_4645);
    let mut tally = Tally::default();
    for i in 0..MUTANTS {
        let bytes = m.mutate(&base, 0..header_end);
        let path = write_mutant(dir.path(), "in.safetensors", i, &bytes);
        let read = read_kernel_inputs(&path, 64, None);
        std::fs::remove_file(&path).unwrap();
        match read {
            Err(_) => tally.refused += 1,
            Ok(kin) => {
                // Accepted: the header must describe exactly the bytes that follow it,
                // and the forward must run on what it describes.
                let described = 8 + kin_header_len(&bytes) + data_bytes(&kin);
                assert_eq!(
                    described,
                    bytes.len(),
                    "mutant {i}: header and data disagree"
                );
                let inputs = kin.forward_inputs();
                let mut state = kin.state();
                let out = backend.forward(&kin.config, &inputs, &mut state);
                assert!(out.is_ok(), "mutant {i}: accepted but the forward failed");
                if bytes == base {
                    tally.unchanged += 1;
                } else {
                    tally.accepted += 1;
                }
            }
        }
    }
    tally.report("safetensors inputs");
}

fn kin_header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

fn data_bytes(kin: &ltm_engine::safetensors_io::KernelInputs) -> usize {
    let size = |d: &ltm_engine::safetensors_io::OwnedData| match d {
        ltm_engine::safetensors_io::OwnedData::F32(v) => v.len() * 4,
        ltm_engine::safetensors_io::OwnedData::F16(v) => v.len() * 2,
        ltm_engine::safetensors_io::OwnedData::BF16(v) => v.len() * 2,
    };
    let state = kin.initial_state.as_ref().map_or(0, |s| s.values().len());
    // Every accepted mutant keeps an f32 initial state: a changed dtype would change
    // its element count and be refused by the shape check.
    size(&kin.q) + size(&kin.k) + size(&kin.v) + size(&kin.beta) + size(&kin.g) + state * 4
}

/// What a prompt line must be (the test's own reading of the format): blank, or
/// `KEY = VALUE` / `KEY = 'VALUE'` with hashes of `0-9 A-Z a-z _`, at most 16 long.
fn prompt_line_ok(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return true;
    }
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(_) => return false,
    };
    let Some((key, value)) = text.split_once('=') else {
        return false;
    };
    let key = key.trim_matches([' ', '\t']);
    let mut value = value.trim_matches([' ', '\t']);
    if let Some(v) = value.strip_prefix('\'') {
        match v.strip_suffix('\'') {
            Some(v) => value = v,
            None => return false,
        }
    }
    let hash = |h: &str| {
        (1..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    line.len() <= 256 && hash(key) && hash(value)
}

#[test]
fn hashhop_mutants_are_refused_or_well_formed() {
    limit_memory();
    let dir = scratch();
    let options = GenerateOptions {
        tokens: 2_000,
        hops: 2,
        queries: 10,
        cot: false,
        seed: 11,
    };
    let g = generate(&options, dir.path()).unwrap();
    let prompt = std::fs::read(&g.prompt).unwrap();
    let targets = std::fs::read(&g.targets).unwrap();
    let good_targets = read_targets(&g.targets).unwrap();
    let mut m = Mutator::new(0x4841_5348);

    let mut tally = Tally::default();
    for i in 0..MUTANTS {
        let bytes = m.mutate(&prompt, 0..prompt.len());
        let path = dir.path().join("prompt-mutant.txt");
        let mut checker = PromptChecker::new(&path, &good_targets);
        // Fed in cuts that change with the mutant, as windows would cut it.
        let cut = 1 + m.below(bytes.len().max(1));
        let result = bytes
            .chunks(cut)
            .try_for_each(|c| checker.feed(c))
            .and_then(|_| checker.finish());
        let oracle = bytes.split(|&b| b == b'\n').all(prompt_line_ok);
        assert_eq!(result.is_ok(), oracle, "mutant {i}: {result:?}");
        if bytes == prompt {
            tally.unchanged += 1;
        } else if result.is_ok() {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.report("HashHop prompts");

    let mut tally = Tally::default();
    for i in 0..MUTANTS {
        let bytes = m.mutate(&targets, 0..targets.len());
        let path = write_mutant(dir.path(), "targets.json", i, &bytes);
        let read = read_targets(&path);
        std::fs::remove_file(&path).unwrap();
        match read {
            Err(e) => {
                assert!(e.to_string().len() < 2_000, "mutant {i}: a long message");
                tally.refused += 1;
            }
            Ok(ts) => {
                let hash = |h: &str| {
                    (1..=16).contains(&h.len())
                        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                };
                for t in &ts {
                    assert!(hash(&t.query), "mutant {i}: query {:?} accepted", t.query);
                    assert!(t.chain.iter().all(|h| hash(h)), "mutant {i}: {:?}", t.chain);
                }
                if bytes == targets {
                    tally.unchanged += 1;
                } else {
                    tally.accepted += 1;
                }
            }
        }
    }
    tally.report("HashHop targets");
}

/// Reads the whole of `path` as `format` through the stream tokenizer.
fn tokenize(path: &Path, format: Format, vocab: u64) -> ltm_engine::Result<u64> {
    let file = ContextFile::open(path, Some(format))?;
    let mut tokenizer = Tokenizer::new(&file, vocab);
    let mut out = Vec::new();
    loop {
        out.clear();
        if tokenizer.fill(&file, &mut out, 97)? == 0 {
            return Ok(tokenizer.tokens_read());
        }
    }
}

#[test]
fn context_file_mutants_are_refused_or_valid_in_every_format() {
    limit_memory();
    let dir = scratch();
    let mut text = String::new();
    for i in 0..60 {
        text.push_str(&format!("word{i} = naïve {i}, ünïcödé → {}\n", i * 7));
    }
    let mut model =
        MemoryModel::new(ModelConfig::with_state_bytes(1 << 20).unwrap(), Device::Cpu).unwrap();
    let mut m = Mutator::new(0x4354_5854);
    // Ids below 2^16 under a vocabulary of 2^16 + 1: a mutated high byte goes past it.
    let ids: Vec<u8> = (0..300u32)
        .flat_map(|i| ((i * 2_654_435_761) >> 16).to_le_bytes())
        .collect();
    let vocab = (1u64 << 16) + 1;
    for (name, format, base) in [
        ("text", Format::Text, text.as_bytes()),
        ("bytes", Format::Bytes, text.as_bytes()),
        ("u32", Format::U32, &ids[..]),
    ] {
        let mut tally = Tally::default();
        for i in 0..MUTANTS {
            let bytes = m.mutate(base, 0..base.len());
            let path = write_mutant(dir.path(), name, i, &bytes);
            let got = tokenize(&path, format, vocab);
            let oracle = !bytes.is_empty()
                && match format {
                    Format::Text => std::str::from_utf8(&bytes).is_ok(),
                    Format::Bytes => true,
                    Format::U32 => {
                        bytes.len().is_multiple_of(4)
                            && bytes
                                .chunks_exact(4)
                                .all(|c| (u32::from_le_bytes(c.try_into().unwrap()) as u64) < vocab)
                    }
                };
            assert_eq!(got.is_ok(), oracle, "{name} mutant {i}: {got:?}");
            if format == Format::Text {
                // The memory model reads the same file with the same verdict.
                let streamed =
                    stream_file(&mut model.streamer(64).unwrap(), &path, 1 << 10, |_| Ok(()));
                assert_eq!(
                    streamed.is_ok(),
                    oracle,
                    "{name} mutant {i} (memory model): {streamed:?}"
                );
            }
            std::fs::remove_file(&path).unwrap();
            if bytes == base {
                tally.unchanged += 1;
            } else if oracle {
                tally.accepted += 1;
            } else {
                tally.refused += 1;
            }
        }
        tally.report(&format!("context files ({name})"));
    }
}
