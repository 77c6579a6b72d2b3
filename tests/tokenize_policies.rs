//! What a token is for each model: the three rules of `ltm_engine::tokenize` count
//! "Grüße, world\n" differently, and each model's run counts exactly the tokens its
//! rule counts, so `--max-tokens`, `--checkpoint-every`, `--resume` and tokens/s all
//! mean "tokens of this model's rule".

use std::path::{Path, PathBuf};

use ltm_engine::lm::state_file::SourcePosition;
use ltm_engine::lm::stream::{stream_text, LmStreamOptions};
use ltm_engine::lm::LanguageModel;
use ltm_engine::memory_model::{MemoryModel, ModelConfig};
use ltm_engine::model::RandomFeatureModel;
use ltm_engine::stream::{stream_context, stream_file, ContextFile, Format, Quiet, StreamOptions};
use ltm_engine::tokenize::Policy;
use ltm_engine::{CpuBackend, Device, State};

const TEXT: &str = "Grüße, world\n";

fn tiny() -> LanguageModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gdn-tiny");
    LanguageModel::load(dir, Device::Cpu).unwrap()
}

#[test]
fn the_rules_count_the_same_text_differently() {
    // The memory model's rule stores words of ASCII letters, digits and `_` only:
    // "Gr" and "e" around the four bytes of "üß", then the comma and "world" — three
    // word pieces and five counted bytes. The line break ends the line uncounted.
    assert_eq!(Policy::WordPieces.count(TEXT).unwrap(), 3 + 5);
    // The random-feature rule: "Grüße" (Unicode letters), ",", "world", "\n".
    assert_eq!(Policy::HashedWords.count(TEXT).unwrap(), 4);
    // A language model: its tokenizer's ids (with `<s>` at a sequence start).
    let model = tiny();
    let tokenizer = model.require_tokenizer().unwrap();
    let ids = tokenizer.encode(TEXT, true).unwrap();
    assert!(ids.len() > 1, "{ids:?}");
    assert_eq!(
        Policy::Model(tokenizer, true).count(TEXT).unwrap(),
        ids.len() as u64
    );
    assert_eq!(
        Policy::Model(tokenizer, false).count(TEXT).unwrap() + 1,
        ids.len() as u64,
        "<s> is added at a sequence start only"
    );
    for p in [
        Policy::WordPieces,
        Policy::HashedWords,
        Policy::Model(tokenizer, true),
    ] {
        assert!(!p.token().is_empty());
    }
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("ctx.txt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_model_streams_the_tokens_its_rule_counts() {
    let dir = tempfile::tempdir().unwrap();
    let text = TEXT.repeat(50);
    let path = write(dir.path(), &text);

    let mut memory =
        MemoryModel::new(ModelConfig::with_state_bytes(1 << 20).unwrap(), Device::Cpu).unwrap();
    let stats = stream_file(&mut memory.streamer(64).unwrap(), &path, 100, |_| Ok(())).unwrap();
    assert_eq!(stats.tokens, Policy::WordPieces.count(&text).unwrap());
    assert_eq!(memory.state().tokens_seen(), stats.tokens);

    let rf = RandomFeatureModel::new(RandomFeatureModel::default_config(), 1);
    let mut state = State::zeros(ltm_engine::model::Model::memory_config(&rf), 1);
    let mut file = ContextFile::open(&path, Some(Format::Text)).unwrap();
    let summary = stream_context(
        &mut file,
        &rf,
        &CpuBackend::new(),
        &mut state,
        &StreamOptions::default(),
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(summary.tokens, Policy::HashedWords.count(&text).unwrap());

    let model = tiny();
    let tokenizer = model.require_tokenizer().unwrap();
    let mut session = model.session().unwrap();
    let mut position = SourcePosition::default();
    let file = ContextFile::open(&path, Some(Format::Text)).unwrap();
    let options = StreamOptions {
        window_bytes: 64,
        ..StreamOptions::default()
    };
    let lm = LmStreamOptions {
        perplexity: false,
        ..LmStreamOptions::default()
    };
    let s = stream_text(
        &file,
        &mut session,
        &mut position,
        &options,
        &lm,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(
        s.tokens,
        Policy::Model(tokenizer, true).count(&text).unwrap()
    );
    assert!(s.windows > 1, "{} windows", s.windows);

    // And `--max-tokens` stops each at that many of its tokens (the memory model at the
    // end of the line where the count is reached).
    let budget = 20;
    let mut memory =
        MemoryModel::new(ModelConfig::with_state_bytes(1 << 20).unwrap(), Device::Cpu).unwrap();
    let file = ContextFile::open(&path, Some(Format::Text)).unwrap();
    let options = StreamOptions {
        max_tokens: Some(budget),
        window_bytes: 1 << 20,
        ..StreamOptions::default()
    };
    let s = ltm_engine::stream::stream(
        &file,
        &mut memory.streamer(64).unwrap(),
        &options,
        &mut Quiet,
    )
    .unwrap();
    let per_line = Policy::WordPieces.count(TEXT).unwrap();
    assert_eq!(s.tokens, budget.div_ceil(per_line) * per_line);
    let mut session = model.session().unwrap();
    let s = stream_text(
        &file,
        &mut session,
        &mut position,
        &options,
        &lm,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(s.tokens, budget);
}
