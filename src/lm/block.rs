//! One block's weights, declared once and generic over where they are held: f32 on
//! the host ([`super::weights::LayerWeights`]), the checkpoint's bytes on their way to
//! a device ([`super::matrices::LayerMatrices`]), device buffers, or the tensor names a
//! reader maps them from. A field added here is added to every one of them.

/// A Gated DeltaNet block with a SwiGLU MLP: its large matrices `M` (stacked where one
/// product computes several) and its small vectors `V`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockWeights<M, V> {
    /// The token mixer's norm `[D]`.
    pub attn_norm: V,
    /// `q; k; v; g (if gated); a; b` stacked: `[2·Dk + Dv (+ Dv) + 2·HV, D]`.
    pub in_proj: M,
    /// The short convolution's taps, `[W, 2·Dk + Dv]`, oldest tap first (stored per
    /// channel in checkpoints, transposed at load).
    pub conv: V,
    /// `-exp(A_log)` `[HV]`: the decay rate per value head.
    pub decay_rate: V,
    /// `dt_bias` `[HV]`.
    pub dt_bias: V,
    /// The memory output's per-head norm `[V]`.
    pub o_norm: V,
    /// `[D, Dv]`.
    pub o_proj: M,
    /// The channel mixer's norm `[D]`.
    pub mlp_norm: V,
    /// `gate; up` stacked: `[2·I, D]`.
    pub gate_up: M,
    /// `[D, I]`.
    pub down: M,
}

impl<M, V> BlockWeights<M, V> {
    /// The same block held another way, field by field; the first failure stops it.
    pub fn try_map<M2, V2, E>(
        &self,
        mut matrix: impl FnMut(&'static str, &M) -> Result<M2, E>,
        mut vector: impl FnMut(&'static str, &V) -> Result<V2, E>,
    ) -> Result<BlockWeights<M2, V2>, E> {
        // In the fields' declared order, the order checkpoints list them in.
        Ok(BlockWeights {
            attn_norm: vector("attn_norm", &self.attn_norm)?,
            in_proj: matrix("in_proj", &self.in_proj)?,
            conv: vector("conv", &self.conv)?,
            decay_rate: vector("decay_rate", &self.decay_rate)?,
            dt_bias: vector("dt_bias", &self.dt_bias)?,
            o_norm: vector("o_norm", &self.o_norm)?,
            o_proj: matrix("o_proj", &self.o_proj)?,
            mlp_norm: vector("mlp_norm", &self.mlp_norm)?,
            gate_up: matrix("gate_up", &self.gate_up)?,
            down: matrix("down", &self.down)?,
        })
    }

    /// The matrices, in the fields' order.
    pub fn matrices(&self) -> [&M; 4] {
        [&self.in_proj, &self.o_proj, &self.gate_up, &self.down]
    }

    /// The vectors, in the fields' order.
    pub fn vectors(&self) -> [&V; 6] {
        [
            &self.attn_norm,
            &self.conv,
            &self.decay_rate,
            &self.dt_bias,
            &self.o_norm,
            &self.mlp_norm,
        ]
    }
}

impl<T> BlockWeights<T, T> {
    /// [`BlockWeights::try_map`] with one function for matrices and vectors alike.
    pub fn try_map_all<U, E>(
        &self,
        mut f: impl FnMut(&'static str, &T) -> Result<U, E>,
    ) -> Result<BlockWeights<U, U>, E> {
        let cell = std::cell::RefCell::new(&mut f);
        self.try_map(
            |n, m| (cell.borrow_mut())(n, m),
            |n, v| (cell.borrow_mut())(n, v),
        )
    }

    /// Every field, in the declared order (the order checkpoints list them in).
    pub fn in_order(&self) -> [&T; 10] {
        [
            &self.attn_norm,
            &self.in_proj,
            &self.conv,
            &self.decay_rate,
            &self.dt_bias,
            &self.o_norm,
            &self.o_proj,
            &self.mlp_norm,
            &self.gate_up,
            &self.down,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_visits_every_field_once_in_order() {
        let names = BlockWeights {
            attn_norm: 0,
            in_proj: 1,
            conv: 2,
            decay_rate: 3,
            dt_bias: 4,
            o_norm: 5,
            o_proj: 6,
            mlp_norm: 7,
            gate_up: 8,
            down: 9,
        };
        let mut seen = Vec::new();
        let mapped = names
            .try_map::<_, _, ()>(
                |_, &m| {
                    seen.push(m);
                    Ok(m * 10)
                },
                |_, &v| Ok(v + 100),
            )
            .unwrap();
        assert_eq!(seen, [1, 6, 8, 9]);
        assert_eq!(mapped.matrices().map(|m| *m), [10, 60, 80, 90]);
        assert_eq!(mapped.vectors().map(|v| *v), [100, 102, 103, 104, 105, 107]);
        let failed = names.try_map(|_, &m| if m == 6 { Err(m) } else { Ok(m) }, |_, &v| Ok(v));
        assert_eq!(failed, Err(6));
        assert_eq!(names.in_order().map(|x| *x), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
