//! The device memory of a forward: one window of inputs, stage-1 outputs and outputs,
//! the state, and the segment scan's maps. Sized once from the shape and reused for
//! every window, so device memory never grows with the length of the context.

use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::buffers::DeviceBuffer;
use super::plan::Buf;
use crate::error::Result;
use crate::tensor::{DType, Data};

/// What a window's buffers are sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    /// `key_dim` rounded up to 16 (the MMA depth).
    pub kp: usize,
    /// Element type of q, k, v on the device.
    pub dtype: DType,
    /// Tokens per sequence the window holds (a multiple of the chunk).
    pub t_cap: usize,
    /// Segments the scan may be cut into.
    pub g_cap: usize,
}

pub(crate) const CHUNK: usize = 64;

pub(crate) fn elem_bytes(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
    }
}

impl Shape {
    /// Whether a window sized for `self` can run `other`: the same sequences, heads,
    /// dims and input type, and at least its tokens and segments (the kernels take the
    /// token stride from the window, so a longer window serves shorter calls).
    pub fn holds(&self, other: &Shape) -> bool {
        (
            self.batch,
            self.heads,
            self.key_dim,
            self.value_dim,
            self.kp,
            self.dtype,
        ) == (
            other.batch,
            other.heads,
            other.key_dim,
            other.value_dim,
            other.kp,
            other.dtype,
        ) && self.t_cap >= other.t_cap
            && self.g_cap >= other.g_cap
    }

    /// Device bytes per token of every sequence (all window buffers but the state/maps).
    pub fn bytes_per_token(&self) -> usize {
        let rows = self.batch * self.heads;
        let inputs = (2 * self.key_dim + self.value_dim) * elem_bytes(self.dtype) + 8;
        let stage1 = 4 * (self.kp + self.value_dim + CHUNK + 1);
        rows * (inputs + stage1 + 4 * self.value_dim)
    }
    pub fn chunks(&self) -> usize {
        self.t_cap / CHUNK
    }
}

pub(crate) struct Window {
    pub shape: Shape,
    pub q: DeviceBuffer,
    pub k: DeviceBuffer,
    pub v: DeviceBuffer,
    pub beta: DeviceBuffer,
    pub g: DeviceBuffer,
    pub w: DeviceBuffer,
    pub u: DeviceBuffer,
    pub p: DeviceBuffer,
    pub gamma: DeviceBuffer,
    pub o: DeviceBuffer,
    pub state: DeviceBuffer,
    pub starts: DeviceBuffer,
    pub maps: DeviceBuffer,
}

impl Window {
    pub fn new(stream: &Arc<CudaStream>, shape: Shape) -> Result<Self> {
        let new = |b: Buf, name| DeviceBuffer::new(stream, name, b.bytes(&shape));
        Ok(Window {
            shape,
            q: new(Buf::Q, "q")?,
            k: new(Buf::K, "k")?,
            v: new(Buf::V, "v")?,
            beta: new(Buf::Beta, "beta")?,
            g: new(Buf::G, "g")?,
            w: new(Buf::W, "W")?,
            u: new(Buf::U, "U")?,
            p: new(Buf::P, "P")?,
            gamma: new(Buf::Gamma, "gamma")?,
            o: new(Buf::O, "o")?,
            state: new(Buf::State, "state")?,
            starts: new(Buf::Starts, "segment starts")?,
            maps: new(Buf::Maps, "segment maps")?,
        })
    }

    /// The buffer a launch plan names.
    pub fn buffer(&self, b: Buf) -> &DeviceBuffer {
        match b {
            Buf::Q => &self.q,
            Buf::K => &self.k,
            Buf::V => &self.v,
            Buf::Beta => &self.beta,
            Buf::G => &self.g,
            Buf::W => &self.w,
            Buf::U => &self.u,
            Buf::P => &self.p,
            Buf::Gamma => &self.gamma,
            Buf::O => &self.o,
            Buf::State => &self.state,
            Buf::Starts => &self.starts,
            Buf::Maps => &self.maps,
        }
    }

    fn all(&self) -> [&DeviceBuffer; 13] {
        [
            &self.q,
            &self.k,
            &self.v,
            &self.beta,
            &self.g,
            &self.w,
            &self.u,
            &self.p,
            &self.gamma,
            &self.o,
            &self.state,
            &self.starts,
            &self.maps,
        ]
    }

    /// NaN in every buffer a kernel writes, so an element it fails to write shows.
    pub fn poison_outputs(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        for b in [
            &mut self.w,
            &mut self.u,
            &mut self.p,
            &mut self.gamma,
            &mut self.o,
            &mut self.starts,
            &mut self.maps,
        ] {
            b.fill(stream, 0xFF)?;
        }
        Ok(())
    }

    pub fn check_guards(&self, stream: &Arc<CudaStream>) -> Result<()> {
        self.all().iter().try_for_each(|b| b.check_guards(stream))
    }

    /// Copies tokens `t0..t0 + len` of every sequence of the host inputs into the window
    /// (q, k, v in the window's type; β and g as f32).
    pub fn upload_inputs(
        &mut self,
        stream: &Arc<CudaStream>,
        inputs: &crate::inputs::ForwardInputs<'_>,
        t0: usize,
        len: usize,
    ) -> Result<()> {
        let s = self.shape;
        let (t_all, h) = (inputs.tokens, s.heads);
        for b in 0..s.batch {
            let src_row = (b * t_all + t0) * h;
            let dst_row = b * s.t_cap * h;
            let n = len * h;
            upload(
                &mut self.q,
                stream,
                inputs.q,
                s.dtype,
                src_row * s.key_dim,
                n * s.key_dim,
                dst_row * s.key_dim,
            )?;
            upload(
                &mut self.k,
                stream,
                inputs.k,
                s.dtype,
                src_row * s.key_dim,
                n * s.key_dim,
                dst_row * s.key_dim,
            )?;
            upload(
                &mut self.v,
                stream,
                inputs.v,
                s.dtype,
                src_row * s.value_dim,
                n * s.value_dim,
                dst_row * s.value_dim,
            )?;
            upload(
                &mut self.beta,
                stream,
                inputs.beta,
                DType::F32,
                src_row,
                n,
                dst_row,
            )?;
            upload(
                &mut self.g,
                stream,
                inputs.g,
                DType::F32,
                src_row,
                n,
                dst_row,
            )?;
        }
        Ok(())
    }

    /// Copies the outputs of tokens `t0..t0 + len` into `out` (`[B, T, H, V]` of
    /// `tokens` tokens per sequence).
    pub fn download_outputs(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut [f32],
        tokens: usize,
        t0: usize,
        len: usize,
    ) -> Result<()> {
        let s = self.shape;
        let row = s.heads * s.value_dim;
        for b in 0..s.batch {
            let dst = &mut out[(b * tokens + t0) * row..(b * tokens + t0 + len) * row];
            self.o
                .download(stream, b * s.t_cap * row * 4, bytemuck::cast_slice_mut(dst))?;
        }
        Ok(())
    }
}

/// Copies `count` elements of `src` from `start` to element `dst_elem` of `buf`, whose
/// element type is `dtype`: as they are when the types agree, else converted to f32.
fn upload(
    buf: &mut DeviceBuffer,
    stream: &Arc<CudaStream>,
    src: Data<'_>,
    dtype: DType,
    start: usize,
    count: usize,
    dst_elem: usize,
) -> Result<()> {
    let offset = dst_elem * elem_bytes(dtype);
    let range = start..start + count;
    match (src, dtype) {
        (Data::F32(x), DType::F32) => buf.upload(stream, offset, bytemuck::cast_slice(&x[range])),
        (Data::F16(x), DType::F16) => buf.upload(stream, offset, bytemuck::cast_slice(&x[range])),
        (Data::BF16(x), DType::BF16) => buf.upload(stream, offset, bytemuck::cast_slice(&x[range])),
        _ => {
            debug_assert_eq!(dtype, DType::F32, "mixed inputs are converted to f32");
            let mut tmp = vec![0.0f32; count];
            src.read_scaled(start, &mut tmp, 1.0);
            buf.upload(stream, offset, bytemuck::cast_slice(&tmp))
        }
    }
}
