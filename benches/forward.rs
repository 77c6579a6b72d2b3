//! CPU forward throughput of the memory at the shapes of issue #2.
//! `cargo bench --bench forward`; tokens/s is criterion's "thrpt" (elements = tokens).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ltm_engine::{Backend, CpuBackend, ForwardInputs, MemoryConfig, State};

/// Deterministic inputs with the statistics of Gated DeltaNet's (unit-norm keys and
/// queries, β around 0.5, small log-decays); throughput does not depend on the values.
fn inputs(config: &MemoryConfig, tokens: usize) -> [Vec<f32>; 5] {
    let mut x = 0x9E37_79B9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as f32 / u32::MAX as f32 - 0.5
    };
    let rows = tokens * config.heads;
    let kd = config.key_dim;
    let mut unit = |dim: usize| {
        let mut v: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
        for r in v.chunks_exact_mut(dim) {
            let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
            r.iter_mut().for_each(|a| *a /= n);
        }
        v
    };
    let q = unit(kd);
    let k = unit(kd);
    let v = unit(config.value_dim);
    let beta = vec![0.5; rows];
    let g = vec![-0.02; rows];
    [q, k, v, beta, g]
}

fn forward(c: &mut Criterion) {
    let tokens = 65_536;
    let mut group = c.benchmark_group("cpu_forward_f32");
    group.sample_size(10);
    group.throughput(Throughput::Elements(tokens as u64));
    let backend = CpuBackend::new();
    for (heads, dim) in [(4, 64), (16, 128)] {
        let config = MemoryConfig::new(heads, dim, dim);
        let [q, k, v, beta, g] = inputs(&config, tokens);
        let fi = ForwardInputs {
            batch: 1,
            tokens,
            q: (&q).into(),
            k: (&k).into(),
            v: (&v).into(),
            beta: (&beta).into(),
            g: (&g).into(),
        };
        let mut out = vec![0.0; fi.output_len(&config)];
        let id = BenchmarkId::new(format!("H{heads}_K{dim}_V{dim}"), tokens);
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut state = State::zeros(&config, 1);
                backend
                    .forward_into(&config, &fi, &mut state, &mut out)
                    .unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
