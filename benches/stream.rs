//! End-to-end `run` throughput next to the compute alone, on the same text, for both
//! models: what the scheduler, reading the file and (for the random-feature model)
//! tokenizing cost on top. `cargo bench --bench stream`; compare the medians
//! (tokens/s = "thrpt").
//!
//! - random features: the dense forward over features computed beforehand and read
//!   from memory, against `run` making them on the fly from the file;
//! - memory model: the model fed the text from memory (tokenizing, encoding and the
//!   sparse writes: its compute), against `run` streaming it from the file.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ltm_engine::model::{materialize, Model, RandomFeatureModel};
use ltm_engine::stream::{stream_context, ContextFile, Quiet, StreamOptions, Tokenizer};
use ltm_engine::{Backend, CpuBackend, State};

const TOKENS: u64 = 1 << 20;
const WINDOW: usize = StreamOptions::DEFAULT_WINDOW;

fn stream(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    ltm_engine::synthetic::write_text_context(&path, TOKENS, 1).unwrap();
    let model = RandomFeatureModel::new(RandomFeatureModel::default_config(), 0);
    let config = model.memory_config().clone();
    let backend = CpuBackend::new();

    // The file's first window, featurized once, for the kernel-only side.
    let mut file = ContextFile::open(&path, None).unwrap();
    let mut tokens = Vec::new();
    Tokenizer::new(&file, model.vocab_size())
        .fill(&file, &mut tokens, WINDOW)
        .unwrap();
    let features = materialize(&model, &[], &tokens);
    let windows = TOKENS as usize / WINDOW;

    let mut group = c.benchmark_group("stream_1M_tokens");
    group.sample_size(10);
    group.throughput(Throughput::Elements((windows * WINDOW) as u64));
    group.bench_function("kernel_only", |b| {
        let mut out = vec![0.0; WINDOW * config.heads * config.value_dim];
        b.iter(|| {
            let mut state = State::zeros(&config, 1);
            for _ in 0..windows {
                backend
                    .forward_into(&config, &features.inputs(), &mut state, &mut out)
                    .unwrap();
            }
        })
    });
    group.bench_function("end_to_end", |b| {
        let options = StreamOptions {
            max_tokens: Some((windows * WINDOW) as u64),
            ..Default::default()
        };
        b.iter(|| {
            let mut state = State::zeros(&config, 1);
            file = ContextFile::open(&path, None).unwrap();
            stream_context(
                &mut file, &model, &backend, &mut state, &options, &mut Quiet,
            )
            .unwrap()
        })
    });
    group.finish();
}

fn stream_memory_model(c: &mut Criterion) {
    use ltm_engine::memory_model::{MemoryModel, ModelConfig};
    use ltm_engine::stream::stream_file;
    use ltm_engine::Device;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    ltm_engine::synthetic::write_text_context(&path, TOKENS, 1).unwrap();
    let text = std::fs::read(&path).unwrap();
    let config = ModelConfig::with_state_bytes(ModelConfig::DEFAULT_STATE_BYTES).unwrap();
    let mut group = c.benchmark_group("memory_model_1M_tokens");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TOKENS));
    let mut model = MemoryModel::new(config, Device::Cpu).unwrap();
    group.bench_function("compute_only", |b| {
        b.iter(|| {
            let mut writer = model.writer(WINDOW);
            writer.feed(&mut model, &text).unwrap();
            writer.finish(&mut model).unwrap();
        })
    });
    group.bench_function("end_to_end", |b| {
        b.iter(|| {
            stream_file(&mut model.streamer(WINDOW).unwrap(), &path, 4 << 20, |_| {
                Ok(())
            })
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, stream, stream_memory_model);
criterion_main!(benches);
