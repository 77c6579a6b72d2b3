//! Peak host memory of loading a model directory's weights, one way per process (the
//! kernel's high-water mark `VmHWM` is per process):
//!
//! - `cpu`: the f32 weights the CPU forward runs (`WeightFiles::load`);
//! - `device`: what a CUDA load holds on the host: the small vectors in f32
//!   (`load_vectors`) and the matrices as parts of the mapped files
//!   (`Matrices::from_files`), every byte read once as the upload reads it; no GPU is
//!   needed, the reads stand in for the copies;
//! - `device-copy`: the CUDA load before the matrices were borrowed and the host f32
//!   weights dropped: f32 weights plus one copy of the matrices in their dtype.
//!
//! ```sh
//! cargo run --release --example lm_load_memory -- DIR cpu|device|device-copy
//! ```

use std::path::Path;

use ltm_engine::lm::config::GdnConfig;
use ltm_engine::lm::matrices::Matrices;
use ltm_engine::lm::weights::WeightFiles;
use ltm_engine::{Error, Result};

/// A field of `/proc/self/status` in bytes (Linux); `None` elsewhere.
fn status_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, mode] = args.as_slice() else {
        return Err(Error::Config(
            "usage: lm_load_memory DIR cpu|device|device-copy".into(),
        ));
    };
    let dir = Path::new(dir);
    let config = GdnConfig::load(&dir.join("config.json"))?;
    let files = WeightFiles::open(dir)?;
    let mut checksum = 0u64;
    let host_bytes = match mode.as_str() {
        "cpu" => 4 * files.load(&config)?.0.len(),
        "device" => {
            let (vectors, _) = files.load_vectors(&config)?;
            let m = Matrices::from_files(&files, &config)?;
            for part in m.all().flat_map(|x| &x.parts) {
                checksum = part
                    .iter()
                    .fold(checksum, |a, &b| a.rotate_left(5) ^ b as u64);
            }
            let copies: usize = m.all().map(|x| x.owned_parts()).sum();
            println!("matrices {} bytes, {copies} converted parts", m.bytes());
            4 * vectors.len()
        }
        "device-copy" => {
            let (weights, _) = files.load(&config)?;
            let m = Matrices::from_files(&files, &config)?;
            let copy: Vec<Vec<u8>> = m.all().map(|x| x.to_bytes()).collect();
            checksum = copy.iter().map(|c| c.len() as u64).sum();
            4 * weights.len() + copy.iter().map(Vec::len).sum::<usize>()
        }
        other => {
            return Err(Error::Config(format!(
                "mode must be cpu, device or device-copy, found {other}"
            )))
        }
    };
    let mib =
        |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    println!(
        "{mode}: weights held on the host {:.1} MiB; peak RSS {}, now {} (anonymous {}, file-backed {}); checksum {checksum:x}",
        host_bytes as f64 / 1048576.0,
        mib(status_bytes("VmHWM:")),
        mib(status_bytes("VmRSS:")),
        mib(status_bytes("RssAnon:")),
        mib(status_bytes("RssFile:")),
    );
    Ok(())
}
