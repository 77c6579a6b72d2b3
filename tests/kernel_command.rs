//! `ltm-engine kernel`: safetensors in, safetensors out, clear errors for bad files.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ltm_engine::reference::recurrent_forward;
use ltm_engine::{MemoryConfig, State};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

struct T {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_tensor(name: &'static str, shape: &[usize], values: &[f32]) -> T {
    T {
        name,
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: bytemuck::cast_slice(values).to_vec(),
    }
}

fn write(path: &Path, tensors: &[T]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name,
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn kernel(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(["kernel", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}

fn tensors(config: &MemoryConfig, x: &Owned, state: Option<&State>) -> Vec<T> {
    let (b, t, h, k, v) = (
        x.batch,
        x.tokens,
        config.heads,
        config.key_dim,
        config.value_dim,
    );
    let mut out = vec![
        f32_tensor("q", &[b, t, h, k], &x.q),
        f32_tensor("k", &[b, t, h, k], &x.k),
        f32_tensor("v", &[b, t, h, v], &x.v),
        f32_tensor("beta", &[b, t, h], &x.beta),
        f32_tensor("g", &[b, t, h], &x.g),
    ];
    if let Some(s) = state {
        out.push(f32_tensor("initial_state", &[b, h, k, v], s.values()));
    }
    out
}

#[test]
fn forward_through_files_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let config = MemoryConfig::new(2, 24, 40);
    let mut rng = rng("kernel-files");
    let x = random_inputs(&mut rng, &config, 2, 150, Gates::Typical);
    let s0 = random_state(&mut rng, &config, 2);
    let (inp, outp) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write(&inp, &tensors(&config, &x, Some(&s0)));
    let run = kernel(&inp, &outp, &["--json", "--device", "cpu", "--chunk", "32"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["tokens"], 150);
    assert!(report["tokens_per_second"].as_f64().unwrap() > 0.0);

    let bytes = std::fs::read(&outp).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let o = st.tensor("o").unwrap();
    let fs = st.tensor("final_state").unwrap();
    assert_eq!(o.shape(), &[2, 150, 2, 40]);
    assert_eq!(fs.shape(), &[2, 2, 24, 40]);
    assert_eq!((o.dtype(), fs.dtype()), (Dtype::F32, Dtype::F32));
    let o: Vec<f32> = bytemuck::pod_collect_to_vec(o.data());
    let fs: Vec<f32> = bytemuck::pod_collect_to_vec(fs.data());
    let mut ref_s: Vec<f64> = s0.values().iter().map(|&v| v as f64).collect();
    let ref_o = recurrent_forward(&config, &x.inputs(), &mut ref_s).unwrap();
    assert!(normalised_error(&o, &ref_o) < 1e-5);
    assert!(normalised_error(&fs, &ref_s) < 1e-5);
}

#[test]
fn bf16_file_inputs_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = MemoryConfig::new(1, 16, 16);
    let mut rng = rng("kernel-bf16");
    let x = random_inputs(&mut rng, &config, 1, 70, Gates::Typical);
    let mut ts = tensors(&config, &x, None);
    for t in ts.iter_mut().filter(|t| t.name != "g") {
        let vals: Vec<f32> = bytemuck::pod_collect_to_vec(&t.bytes);
        t.bytes = bytemuck::cast_slice(&to_bf16(&vals)).to_vec();
        t.dtype = Dtype::BF16;
    }
    let (inp, outp) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write(&inp, &ts);
    let run = kernel(&inp, &outp, &["--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["input_dtypes"][0], "bf16");
    assert_eq!(report["input_dtypes"][4], "f32");
}

fn expect_error(tensors: &[T], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write(&inp, tensors);
    let run = kernel(&inp, &outp, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "should fail");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error `{err}` should mention `{n}`");
    }
    assert!(!outp.exists(), "no output on failure");
}

#[test]
fn bad_inputs_name_the_tensor_and_shapes() {
    let config = MemoryConfig::new(2, 8, 4);
    let mut rng = rng("kernel-bad");
    let x = random_inputs(&mut rng, &config, 1, 10, Gates::Typical);
    let good = || tensors(&config, &x, None);

    let mut missing = good();
    missing.retain(|t| t.name != "beta");
    expect_error(&missing, &["beta", "missing"]);

    let mut rank = good();
    rank[0].shape = vec![10, 2, 8];
    expect_error(&rank, &["`q`", "rank 4", "[10, 2, 8]"]);

    let mut k_shape = good();
    k_shape[1].shape = vec![1, 10, 2, 4];
    k_shape[1].bytes.truncate(80 * 4);
    expect_error(&k_shape, &["`k`", "[1, 10, 2, 8]", "[1, 10, 2, 4]"]);

    let mut g_shape = good();
    g_shape[4].shape = vec![1, 10];
    g_shape[4].bytes.truncate(40);
    expect_error(&g_shape, &["`g`", "[1, 10, 2]", "[1, 10]"]);

    let mut v_shape = good();
    v_shape[2].shape = vec![1, 5, 2, 8];
    expect_error(&v_shape, &["`v`", "[1, 10, 2, V]", "[1, 5, 2, 8]"]);

    let mut dtype = good();
    dtype[2].dtype = Dtype::I32;
    expect_error(&dtype, &["`v`", "I32"]);

    let mut state = good();
    state.push(f32_tensor("initial_state", &[1, 2, 8, 5], &[0.0; 80]));
    expect_error(&state, &["initial_state", "[1, 2, 8, 4]", "[1, 2, 8, 5]"]);
}

#[test]
fn files_that_are_not_safetensors_get_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("junk.safetensors");
    std::fs::write(&inp, b"definitely not safetensors").unwrap();
    let run = kernel(&inp, &dir.path().join("o"), &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success()
            && err.contains("junk.safetensors")
            && err.contains("not a valid safetensors"),
        "{err}"
    );
    let run = kernel(&dir.path().join("absent"), &dir.path().join("o"), &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("absent"), "{err}");
}

/// Where CUDA cannot run (no kernels in this build, no driver, no device) `--device
/// cuda` fails naming what is missing; where it can, it runs.
#[test]
fn cuda_device_fails_clearly_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = MemoryConfig::new(1, 8, 8);
    let mut rng = rng("kernel-cuda");
    let x = random_inputs(&mut rng, &config, 1, 5, Gates::Typical);
    let inp = dir.path().join("in.safetensors");
    write(&inp, &tensors(&config, &x, None));
    let run = kernel(&inp, &dir.path().join("o"), &["--device", "cuda"]);
    let err = String::from_utf8_lossy(&run.stderr);
    use ltm_engine::backend::device::{cuda_missing, CudaMissing};
    let Some(missing) = cuda_missing(0) else {
        assert!(
            run.status.success(),
            "a usable GPU, yet --device cuda failed: {err}"
        );
        return;
    };
    assert!(
        !run.status.success() && err.contains("cuda:0") && err.contains("--device cpu"),
        "{err}"
    );
    let names_it = match missing {
        CudaMissing::Kernels => err.contains("no CUDA kernels") && err.contains("install-nvcc.sh"),
        CudaMissing::Driver => err.contains("no CUDA driver"),
        CudaMissing::DriverFailed(_) => err.contains("driver failed"),
        CudaMissing::Device { .. } => err.contains("does not exist"),
    };
    assert!(names_it, "{missing:?} not named in: {err}");
}
