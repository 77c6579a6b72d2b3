//! Scratch matrices of one (sequence, head, value slice) task, padded to the vector
//! width and reused for every chunk.

use super::gemm::LANES;

pub(crate) fn round_up(x: usize) -> usize {
    x.div_ceil(LANES) * LANES
}

/// Padded dimensions: `cp` chunk rows, `kp` key columns, `vs` value columns.
/// Padding rows and columns hold zeros, which the algorithm treats as tokens with
/// `β = 0`, `g = 0` and zero keys: they neither read nor write the state.
pub(crate) struct Workspace {
    pub cp: usize,
    pub kp: usize,
    pub vs: usize,
    /// `[2cp × kp]`: scaled queries in rows `0..cp`, keys in rows `cp..2cp`.
    pub qk: Vec<f32>,
    /// `[kp × cp]`: keys transposed; after the solve, decayed to the chunk's end.
    pub kt: Vec<f32>,
    /// `[2cp × cp]`: `Q Kᵀ` masked into `P`, then `K Kᵀ` masked into `−A`.
    pub gram: Vec<f32>,
    /// `[2cp × vs]`: `Q S₀` then `K S₀`.
    pub qks: Vec<f32>,
    /// `[cp × vs]`: values, then the right-hand side `R`, then the corrected values `V'`.
    pub x: Vec<f32>,
    /// `[cp × vs]`: outputs of the chunk.
    pub o: Vec<f32>,
    /// `[kp × vs]`: the state slice this task owns.
    pub s: Vec<f32>,
    pub beta: Vec<f32>,
    /// Cumulative log-decay `γ` inside the chunk.
    pub gamma: Vec<f32>,
    /// `exp(γ_i)`.
    pub decay_in: Vec<f32>,
    /// `exp(γ_last − γ_i)`.
    pub decay_out: Vec<f32>,
    /// One row of `exp(γ_i − γ_j)`.
    pub pair_decay: Vec<f32>,
}

impl Workspace {
    pub fn new(chunk: usize, key_dim: usize, value_cols: usize) -> Self {
        let (cp, kp, vs) = (round_up(chunk), round_up(key_dim), round_up(value_cols));
        Workspace {
            cp,
            kp,
            vs,
            qk: vec![0.0; 2 * cp * kp],
            kt: vec![0.0; kp * cp],
            gram: vec![0.0; 2 * cp * cp],
            qks: vec![0.0; 2 * cp * vs],
            x: vec![0.0; cp * vs],
            o: vec![0.0; cp * vs],
            s: vec![0.0; kp * vs],
            beta: vec![0.0; cp],
            gamma: vec![0.0; cp],
            decay_in: vec![0.0; cp],
            decay_out: vec![0.0; cp],
            pair_decay: vec![0.0; cp],
        }
    }
}
