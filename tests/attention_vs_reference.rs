//! The attention baseline's tiled prefill and split decode against float64 causal
//! softmax attention, on fresh random inputs.

mod common;

use common::{normalised_error, rng};
use half::{bf16, f16};
use ltm_engine::backend::cpu::Isa;
use ltm_engine::baseline::reference::causal_attention;
use ltm_engine::baseline::{
    AttentionBackend, AttentionConfig, AttentionInputs, CpuAttention, KvCache,
};
use ltm_engine::Error;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// f32 inputs: well under the project's 1e-4 (measured ~1e-7 to 1e-6).
const F32_TOL: f64 = 1e-5;

struct Qkv {
    batch: usize,
    tokens: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Qkv {
    fn random(rng: &mut StdRng, config: &AttentionConfig, batch: usize, tokens: usize) -> Qkv {
        let n = batch * tokens * config.heads * config.head_dim;
        let d = Normal::new(0.0f32, 1.0).unwrap();
        let mut draw = || (0..n).map(|_| d.sample(&mut *rng)).collect::<Vec<f32>>();
        Qkv {
            batch,
            tokens,
            q: draw(),
            k: draw(),
            v: draw(),
        }
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        AttentionInputs {
            batch: self.batch,
            tokens: self.tokens,
            q: (&self.q).into(),
            k: (&self.k).into(),
            v: (&self.v).into(),
        }
    }

    /// Tokens `t0..t1` of every sequence.
    fn slice(&self, config: &AttentionConfig, t0: usize, t1: usize) -> Qkv {
        let per_token = config.heads * config.head_dim;
        let cut = |x: &[f32]| {
            (0..self.batch)
                .flat_map(|b| {
                    let row = |t: usize| (b * self.tokens + t) * per_token;
                    x[row(t0)..row(t1)].to_vec()
                })
                .collect::<Vec<f32>>()
        };
        Qkv {
            batch: self.batch,
            tokens: t1 - t0,
            q: cut(&self.q),
            k: cut(&self.k),
            v: cut(&self.v),
        }
    }
}

fn backends() -> [CpuAttention; 2] {
    [
        CpuAttention::new(),
        CpuAttention::new().with_isa(Isa::Portable),
    ]
}

/// Feeds the sequence in pieces of the given lengths (a prefill then decode steps when
/// the later pieces are 1) and returns the error of all outputs against the reference.
fn error_in_pieces(
    backend: &CpuAttention,
    config: &AttentionConfig,
    qkv: &Qkv,
    pieces: &[usize],
) -> f64 {
    assert_eq!(pieces.iter().sum::<usize>(), qkv.tokens);
    let want = causal_attention(config, &qkv.inputs()).unwrap();
    let mut cache = KvCache::new(config, qkv.batch).unwrap();
    let per_token = config.heads * config.head_dim;
    let mut got = vec![f32::NAN; want.len()];
    let mut t0 = 0;
    for &len in pieces {
        let piece = qkv.slice(config, t0, t0 + len);
        let o = backend.attend(config, &piece.inputs(), &mut cache).unwrap();
        for b in 0..qkv.batch {
            let dst = (b * qkv.tokens + t0) * per_token;
            got[dst..dst + len * per_token]
                .copy_from_slice(&o[b * len * per_token..(b + 1) * len * per_token]);
        }
        t0 += len;
        assert_eq!(cache.len(), t0);
    }
    normalised_error(&got, &want)
}

fn check(name: &str, config: &AttentionConfig, batch: usize, pieces: &[usize]) {
    let mut rng = rng(name);
    let qkv = Qkv::random(&mut rng, config, batch, pieces.iter().sum());
    for backend in backends() {
        let err = error_in_pieces(&backend, config, &qkv, pieces);
        eprintln!(
            "{name} B={batch} {config:?} pieces={pieces:?} [{}]: {err:.2e}",
            backend.name()
        );
        assert!(
            err < F32_TOL,
            "{name} [{}] B={batch} {config:?} pieces={pieces:?}: error {err:e}",
            backend.name()
        );
    }
}

#[test]
fn prefill_lengths_around_the_block_size() {
    let config = AttentionConfig::new(3, 40);
    for tokens in [1, 2, 63, 64, 65, 97, 1000] {
        check("prefill", &config, 2, &[tokens]);
    }
}

#[test]
fn head_dims_that_are_not_vector_multiples() {
    for (heads, d) in [(1, 1), (2, 17), (1, 64), (2, 100), (1, 128)] {
        check("dims", &AttentionConfig::new(heads, d), 1, &[150]);
    }
}

#[test]
fn decode_steps_after_caches_of_every_length() {
    let config = AttentionConfig::new(2, 24);
    // The last lengths span several key splits of the decode step.
    for cached in [1, 63, 64, 65, 1000, 2500] {
        check("decode", &config, 2, &[cached, 1, 1, 1]);
    }
    check("decode_from_empty", &config, 3, &[1, 1, 1]);
}

#[test]
fn prompt_in_pieces_that_cross_key_blocks() {
    let config = AttentionConfig::new(2, 32);
    check("pieces", &config, 2, &[37, 100, 1, 200, 2, 130]);
}

#[test]
fn peaked_softmax_stays_exact() {
    // Scores with a standard deviation of 8 (scale 1 instead of 1/8): the weights span
    // many orders of magnitude, and a running max that is not corrected when a later
    // block holds a larger score gives visibly wrong outputs.
    let config = AttentionConfig::new(2, 64).with_scale(1.0);
    check("peaked", &config, 1, &[300]);
    check("peaked_decode", &config, 1, &[2000, 1]);
}

#[test]
fn half_precision_inputs() {
    let config = AttentionConfig::new(2, 48);
    let mut rng = rng("half");
    let qkv = Qkv::random(&mut rng, &config, 2, 200);
    let want_f32 = causal_attention(&config, &qkv.inputs()).unwrap();
    let bf: [Vec<bf16>; 3] =
        [&qkv.q, &qkv.k, &qkv.v].map(|x| x.iter().map(|&a| bf16::from_f32(a)).collect());
    let hf: [Vec<f16>; 3] =
        [&qkv.q, &qkv.k, &qkv.v].map(|x| x.iter().map(|&a| f16::from_f32(a)).collect());
    let cases = [
        (
            "bf16",
            AttentionInputs {
                batch: 2,
                tokens: 200,
                q: (&bf[0]).into(),
                k: (&bf[1]).into(),
                v: (&bf[2]).into(),
            },
        ),
        (
            "f16",
            AttentionInputs {
                batch: 2,
                tokens: 200,
                q: (&hf[0]).into(),
                k: (&hf[1]).into(),
                v: (&hf[2]).into(),
            },
        ),
    ];
    for (name, inputs) in cases {
        let want_same = causal_attention(&config, &inputs).unwrap();
        for backend in backends() {
            let mut cache = KvCache::new(&config, 2).unwrap();
            let o = backend.attend(&config, &inputs, &mut cache).unwrap();
            let exact = normalised_error(&o, &want_same);
            let vs_f32 = normalised_error(&o, &want_f32);
            eprintln!(
                "{name} [{}]: vs same inputs {exact:.2e}, vs f32 inputs {vs_f32:.2e}",
                backend.name()
            );
            assert!(
                exact < F32_TOL,
                "{name}: {exact:e} against the reference on the same inputs"
            );
            assert!(
                vs_f32 < 1e-2,
                "{name}: {vs_f32:e} against the f32-input reference"
            );
        }
    }
}

#[test]
fn thread_counts_give_identical_results() {
    let config = AttentionConfig::new(3, 32);
    let mut rng = rng("threads");
    let qkv = Qkv::random(&mut rng, &config, 2, 1500);
    let step = qkv.slice(&config, 1499, 1500);
    let prompt = qkv.slice(&config, 0, 1499);
    let mut runs = Vec::new();
    for threads in [1, 2, 3] {
        let backend = CpuAttention::new().with_threads(threads).unwrap();
        let mut cache = KvCache::new(&config, 2).unwrap();
        let a = backend
            .attend(&config, &prompt.inputs(), &mut cache)
            .unwrap();
        let b = backend.attend(&config, &step.inputs(), &mut cache).unwrap();
        runs.push((a, b));
    }
    assert!(
        runs.iter().all(|r| r == &runs[0]),
        "results differ with the thread count"
    );
}

#[test]
fn nan_inputs_reach_the_output() {
    let config = AttentionConfig::new(1, 16);
    let mut rng = rng("nan");
    let mut qkv = Qkv::random(&mut rng, &config, 1, 100);
    qkv.v[5] = f32::NAN;
    for pieces in [&[100][..], &[99, 1]] {
        let mut cache = KvCache::new(&config, 1).unwrap();
        let mut last = Vec::new();
        let mut t0 = 0;
        for &len in pieces {
            last = CpuAttention::new()
                .attend(
                    &config,
                    &qkv.slice(&config, t0, t0 + len).inputs(),
                    &mut cache,
                )
                .unwrap();
            t0 += len;
        }
        // The NaN sits in dimension 5 of token 0's value, which the last query reads.
        assert!(
            last[last.len() - 16 + 5].is_nan(),
            "a NaN value was hidden ({pieces:?})"
        );
    }
}

#[test]
fn bad_shapes_are_errors_and_leave_the_cache_alone() {
    let config = AttentionConfig::new(2, 8);
    let mut rng = rng("errors");
    let qkv = Qkv::random(&mut rng, &config, 1, 10);
    let backend = CpuAttention::new();
    let mut cache = KvCache::new(&config, 1).unwrap();
    backend.attend(&config, &qkv.inputs(), &mut cache).unwrap();

    let short = &qkv.k[..qkv.k.len() - 1];
    let bad = AttentionInputs {
        k: short.into(),
        ..qkv.inputs()
    };
    match backend.attend(&config, &bad, &mut cache) {
        Err(Error::Shape { tensor, .. }) => assert_eq!(tensor, "k"),
        other => panic!("expected a shape error for k, got {other:?}"),
    }
    let mut wrong_batch = KvCache::new(&config, 2).unwrap();
    match backend.attend(&config, &qkv.inputs(), &mut wrong_batch) {
        Err(Error::Shape { tensor, .. }) => assert_eq!(tensor, "kv_cache"),
        other => panic!("expected a cache mismatch, got {other:?}"),
    }
    let mut out = vec![0.0; 3];
    match backend.attend_into(&config, &qkv.inputs(), &mut cache, &mut out) {
        Err(Error::Shape { tensor, .. }) => assert_eq!(tensor, "o"),
        other => panic!("expected an output-length error, got {other:?}"),
    }
    assert_eq!(cache.len(), 10, "a failed call changed the cache");

    assert!(matches!(
        KvCache::new(&AttentionConfig::new(2, 0), 1),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        cache.reserve(usize::MAX / 2),
        Err(Error::Config(_))
    ));
    assert_eq!(cache.len(), 10);
}
