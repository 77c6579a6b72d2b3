//! One sequence through a model on the device: the operations of `lm::forward` with
//! every activation in device memory. Per window only the token ids go up (from pinned host
//! buffers, on a copy stream of their own, so the next window's ids travel while this
//! one computes) and only the logits asked for come down. The layers' memories are
//! device-resident sessions and their conv caches device buffers, for the whole stream;
//! a snapshot copies them to the host.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaStream, PinnedHostSlice};

use crate::backend::cuda::buffers::DeviceBuffer;
use crate::backend::cuda::gemm::GemmShape;
use crate::backend::cuda::session::CudaSession;
use crate::backend::cuda::{cuda_err, CudaBackend};
use crate::error::{Error, Result};
use crate::tensor::DType;

use super::super::desc::{GatedDeltaNet, Norm};
use super::super::forward::{self, Act, Matrix, NormAt, Ops, Product, Rows};
use super::super::kernels::{self as k, AddNormBufs, ConvBufs};
use super::super::model::LanguageModel;
use super::super::runner::Runner;
use super::super::sample::Sampler;
use super::super::session::Logits;
use super::super::state::{LayerState, ModelState};
use super::super::trace::{TraceHook, TraceStage};
use super::{count_download, DeviceModel, IDS_DOWNLOADED, LOGITS_DOWNLOADED};

/// Buffers of one window's activations, sized once for `rows` tokens.
struct Workspace {
    rows: usize,
    /// `[rows, D]` f32: the residual stream.
    x: DeviceBuffer,
    /// `[rows, max(D, Dv, I)]` in the model's dtype: each GEMM's input.
    h: DeviceBuffer,
    /// `[rows, in_proj_width]` f32.
    proj: DeviceBuffer,
    /// `[rows, 2·I]` f32.
    mlp: DeviceBuffer,
    /// `[logit_rows, vocab]` f32, grown when more rows of logits are asked for.
    logits: Option<DeviceBuffer>,
    /// `[rows + 1]` f64: next-token NLL of a scored window.
    nll: DeviceBuffer,
}

/// Token ids to the device: two pinned host buffers and two device buffers used in
/// turn, copied on a stream of their own. Events order the copy of window `i + 2` after
/// the embedding of window `i` read its ids; cudarc orders host writes to a pinned
/// buffer after the copy out of it.
struct IdUploads {
    copy: Arc<CudaStream>,
    pinned: [PinnedHostSlice<u8>; 2],
    device: [DeviceBuffer; 2],
    /// Recorded on the compute stream after the embedding read `device[i]`.
    consumed: [Option<CudaEvent>; 2],
    next: usize,
}

/// A sequence's state and workspace on the device.
pub(crate) struct CudaModelSession<'m> {
    model: &'m LanguageModel,
    dev: &'m DeviceModel,
    backend: &'m CudaBackend,
    memories: Vec<CudaSession<'m>>,
    conv: Vec<DeviceBuffer>,
    last_hidden: DeviceBuffer,
    has_hidden: bool,
    tokens: u64,
    ws: Option<Workspace>,
    ids: Option<IdUploads>,
    /// The logits of the last call, on the host.
    logits: Vec<f32>,
    /// One u32: the id the device sampler chose.
    picked: Option<DeviceBuffer>,
    /// Rows of the current window.
    rows: usize,
    /// Rows the last final norm ran over (the head's, and the logits').
    head_rows: usize,
    /// The id buffer holding the next window's ids, when they went up ahead of it.
    staged: Option<usize>,
}

fn elem(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
    }
}

fn bytes(parts: &[usize]) -> Result<usize> {
    parts
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::TooLarge {
            what: "a window's activations on the device".into(),
            bytes: None,
            problem: format!("{parts:?} overflows"),
        })
}

impl<'m> CudaModelSession<'m> {
    /// Uploads `state` (checked against the model by the caller).
    pub fn new(
        model: &'m LanguageModel,
        dev: &'m DeviceModel,
        backend: &'m CudaBackend,
        state: ModelState,
    ) -> Result<Self> {
        let mut memories = Vec::with_capacity(state.layers.len());
        let mut conv = Vec::with_capacity(state.layers.len());
        for layer in state.layers {
            memories.push(CudaSession::open(
                backend,
                model.memory_config(),
                layer.memory,
            )?);
            let mut c = DeviceBuffer::new(backend.stream(), "conv cache", 4 * layer.conv.len())?;
            c.upload(backend.stream(), 0, bytemuck::cast_slice(&layer.conv))?;
            conv.push(c);
        }
        let d = model.config().hidden_size;
        let mut last_hidden = DeviceBuffer::new(backend.stream(), "last hidden", 4 * d)?;
        if let Some(h) = &state.last_hidden {
            last_hidden.upload(backend.stream(), 0, bytemuck::cast_slice(h))?;
        }
        Ok(CudaModelSession {
            model,
            dev,
            backend,
            memories,
            conv,
            last_hidden,
            has_hidden: state.last_hidden.is_some(),
            tokens: state.tokens,
            ws: None,
            ids: None,
            logits: Vec::new(),
            picked: None,
            rows: 0,
            head_rows: 0,
            staged: None,
        })
    }

    /// The workspace for windows of up to `rows` tokens (allocated once per size).
    fn workspace(&mut self, rows: usize) -> Result<()> {
        if self.ws.as_ref().is_some_and(|w| w.rows >= rows) {
            return Ok(());
        }
        self.ws = None;
        self.ids = None;
        let c = self.model.config();
        let dims = &self.dev.dims;
        let s = self.backend.stream();
        let widest = c
            .hidden_size
            .max(dims.value_width())
            .max(c.intermediate_size);
        let ws = Workspace {
            rows,
            x: DeviceBuffer::new(s, "residual", bytes(&[rows, c.hidden_size, 4])?)?,
            h: DeviceBuffer::new(
                s,
                "gemm input",
                bytes(&[rows, widest, elem(self.dev.dtype)])?,
            )?,
            proj: DeviceBuffer::new(s, "in_proj out", bytes(&[rows, dims.in_proj_width(), 4])?)?,
            mlp: DeviceBuffer::new(s, "mlp", bytes(&[rows, 2 * c.intermediate_size, 4])?)?,
            logits: None,
            nll: DeviceBuffer::new(s, "nll", bytes(&[rows + 1, 8])?)?,
        };
        let ctx = self.backend.context();
        let pinned = |_| -> Result<PinnedHostSlice<u8>> {
            // SAFETY: a fresh allocation of plain bytes; every byte is written before a
            // copy reads it (only the window's ids are copied, see `upload_ids`).
            unsafe { ctx.alloc_pinned::<u8>(4 * rows) }
                .map_err(cuda_err("allocating pinned memory"))
        };
        let copy = ctx
            .new_stream()
            .map_err(cuda_err("creating the copy stream"))?;
        self.ids = Some(IdUploads {
            copy,
            pinned: [pinned(0)?, pinned(1)?],
            device: [
                DeviceBuffer::new(s, "ids", 4 * rows)?,
                DeviceBuffer::new(s, "ids", 4 * rows)?,
            ],
            consumed: [None, None],
            next: 0,
        });
        self.ws = Some(ws);
        Ok(())
    }

    /// Puts `ids` on their way to the device; returns the slot whose device buffer
    /// holds them once the compute stream has waited for the copy (done here).
    fn upload_ids(&mut self, ids: &[u32]) -> Result<usize> {
        let compute = self.backend.stream().clone();
        let up = self.ids.as_mut().expect("workspace first");
        let slot = up.next;
        up.next ^= 1;
        // The host write waits (inside cudarc) for the last copy out of this buffer.
        let host = up.pinned[slot]
            .as_mut_slice()
            .map_err(cuda_err("writing pinned memory"))?;
        let n = 4 * ids.len();
        host[..n].copy_from_slice(bytemuck::cast_slice(ids));
        // Ids past this window's stay from an earlier one: the kernels read `rows` only.
        if let Some(e) = &up.consumed[slot] {
            up.copy.wait(e).map_err(cuda_err("ordering the id copy"))?;
        }
        up.device[slot].upload_pinned(&up.copy, &up.pinned[slot])?;
        let copied = up
            .copy
            .record_event(None)
            .map_err(cuda_err("recording the id copy"))?;
        compute
            .wait(&copied)
            .map_err(cuda_err("waiting for the id copy"))?;
        Ok(slot)
    }

    /// Every layer over `ids`; leaves the logits asked for in `self.logits`.
    pub fn forward(&mut self, ids: &[u32], want: Logits) -> Result<&[f32]> {
        let t = ids.len();
        self.logits.clear();
        // Ids staged by a scored call that failed before its embedding are not these.
        self.staged = None;
        if t == 0 {
            return Ok(&self.logits);
        }
        self.backend.bind()?;
        let rows = match want {
            Logits::None => None,
            Logits::Last => Some(Rows::Last),
            Logits::All => Some(Rows::All),
        };
        let desc = self.model.desc();
        forward::window(self, desc, ids, rows, false)?;
        if rows.is_some() {
            self.download_logits()?;
        }
        Ok(&self.logits)
    }

    /// Feeds `ids` and appends the negative log-likelihood (nats) of each of them that
    /// has a prediction: `ids[0]` from the state before the window (when a token came
    /// before), then `ids[i]` from the window's row `i − 1`. Computed on the device; only
    /// the scores come back.
    pub fn forward_scored(&mut self, ids: &[u32], out: &mut Vec<f64>) -> Result<()> {
        let t = ids.len();
        if t == 0 {
            return Ok(());
        }
        self.backend.bind()?;
        // The ids go up first: the first score reads its target from them.
        let slot = self.stage_ids(ids)?;
        let (dev, backend) = (self.dev, self.backend);
        let desc = self.model.desc();
        let s = backend.stream();
        let targets = self.ids.as_ref().expect("sized").device[slot].ptr(s);
        let nll = self.ws.as_ref().expect("sized").nll.ptr(s);
        let mut rows = 0usize;
        if self.has_hidden {
            forward::head(self, desc, Rows::LastHidden)?;
            let logits = self.logits_ptr();
            dev.launch(backend, &k::nll(&dev.dims, 1, logits, targets, nll)?)?;
            rows = 1;
        }
        forward::window(self, desc, ids, None, false)?;
        if t > 1 {
            forward::head(self, desc, Rows::Leading(t - 1))?;
            let logits = self.logits_ptr();
            let l = k::nll(&dev.dims, t - 1, logits, targets + 4, nll + 8 * rows as u64)?;
            dev.launch(backend, &l)?;
            rows += t - 1;
        }
        // Straight into the caller's vector: no buffer of this call's own.
        let start = out.len();
        out.resize(start + rows, 0.0);
        let got = self.ws.as_ref().expect("sized").nll.download(
            s,
            0,
            bytemuck::cast_slice_mut(&mut out[start..]),
        );
        if got.is_err() {
            out.truncate(start);
        }
        got
    }

    /// Sizes the workspace for `ids` and puts them on their way to the device (the
    /// next embedding reads them); returns their id buffer.
    fn stage_ids(&mut self, ids: &[u32]) -> Result<usize> {
        self.workspace(ids.len())?;
        let slot = self.upload_ids(ids)?;
        self.staged = Some(slot);
        Ok(slot)
    }

    /// The address of the logits the last head wrote.
    fn logits_ptr(&self) -> u64 {
        let ws = self.ws.as_ref().expect("sized by the final norm");
        let logits = ws.logits.as_ref().expect("sized by the final norm");
        logits.ptr(self.backend.stream())
    }

    /// The last head's logits, downloaded into `self.logits`.
    fn download_logits(&mut self) -> Result<()> {
        let n = self.head_rows * self.model.config().vocab_size;
        self.logits.resize(n, 0.0);
        let ws = self.ws.as_ref().expect("sized");
        ws.logits
            .as_ref()
            .expect("sized by the final norm")
            .download(
                self.backend.stream(),
                0,
                bytemuck::cast_slice_mut(&mut self.logits),
            )?;
        count_download(&LOGITS_DOWNLOADED, n);
        Ok(())
    }

    /// The final norm, the output head and the device sampler over the last hidden
    /// vector: only the chosen id comes back. The sampler's settings must be ones the
    /// device takes ([`crate::lm::pick::pick_path`]); its draw counter moves as
    /// [`Sampler::pick`]'s would.
    fn pick_last(&mut self, sampler: &mut Sampler) -> Result<u32> {
        let desc = self.model.desc();
        forward::head(self, desc, Rows::LastHidden)?;
        let logits = self.logits_ptr();
        let (dev, backend) = (self.dev, self.backend);
        let s = backend.stream();
        if self.picked.is_none() {
            self.picked = Some(DeviceBuffer::new(s, "picked id", 4)?);
        }
        let out = self.picked.as_ref().expect("just allocated");
        let l = k::sample(
            &dev.dims,
            sampler.config(),
            sampler.draws(),
            1,
            logits,
            out.ptr(s),
        )?;
        dev.launch(backend, &l)?;
        let mut id = [0u8; 4];
        out.download(s, 0, &mut id)?;
        count_download(&IDS_DOWNLOADED, 1);
        sampler.skip_draw();
        Ok(u32::from_le_bytes(id))
    }

    /// The next token after the last one fed, chosen on the device; `None` before any
    /// token.
    pub fn next_pick(&mut self, sampler: &mut Sampler) -> Result<Option<u32>> {
        if !self.has_hidden {
            return Ok(None);
        }
        self.backend.bind()?;
        self.pick_last(sampler).map(Some)
    }

    /// Feeds `token` and chooses the next one on the device.
    pub fn step_pick(&mut self, token: u32, sampler: &mut Sampler) -> Result<u32> {
        self.forward(&[token], Logits::None)?;
        self.pick_last(sampler)
    }

    /// The logits for the token after the last one fed; `None` before any token.
    pub fn next_logits(&mut self) -> Result<Option<&[f32]>> {
        if !self.has_hidden {
            return Ok(None);
        }
        self.backend.bind()?;
        let desc = self.model.desc();
        forward::head(self, desc, Rows::LastHidden)?;
        self.download_logits()?;
        Ok(Some(&self.logits))
    }

    /// The whole state on the host (each layer's memory and conv cache, the last
    /// hidden vector); the session goes on.
    pub fn snapshot(&self) -> Result<ModelState> {
        self.backend.bind()?;
        let s = self.backend.stream();
        let layers = self
            .memories
            .iter()
            .zip(&self.conv)
            .map(|(m, conv)| {
                let mut values = vec![0.0f32; conv.len() / 4];
                conv.download(s, 0, bytemuck::cast_slice_mut(&mut values))?;
                Ok(LayerState {
                    memory: m.snapshot_state()?,
                    conv: values,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let last_hidden = if self.has_hidden {
            let mut h = vec![0.0f32; self.last_hidden.len() / 4];
            self.last_hidden
                .download(s, 0, bytemuck::cast_slice_mut(&mut h))?;
            Some(h)
        } else {
            None
        };
        Ok(ModelState {
            model: self.model.fingerprint(),
            layers,
            last_hidden,
            tokens: self.tokens,
        })
    }
}

impl<'m> Runner<'m> for CudaModelSession<'m> {
    fn tokens(&self) -> u64 {
        self.tokens
    }

    // The device has no separate decode path: one token is a window of one row.
    fn forward(&mut self, ids: &[u32], want: Logits, _decode: bool) -> Result<&[f32]> {
        CudaModelSession::forward(self, ids, want)
    }

    fn forward_scored(&mut self, ids: &[u32], nll: &mut Vec<f64>) -> Result<()> {
        CudaModelSession::forward_scored(self, ids, nll)
    }

    fn next_logits(&mut self) -> Result<Option<&[f32]>> {
        CudaModelSession::next_logits(self)
    }

    fn snapshot(&self) -> Result<ModelState> {
        CudaModelSession::snapshot(self)
    }

    fn into_state(self: Box<Self>) -> Result<ModelState> {
        CudaModelSession::snapshot(&self)
    }

    /// The device's activations stay there: the hook sees nothing.
    fn set_trace(&mut self, _hook: Option<TraceHook<'m>>) {}

    fn picks(&self) -> bool {
        true
    }

    fn next_pick(&mut self, sampler: &mut Sampler) -> Result<Option<u32>> {
        CudaModelSession::next_pick(self, sampler)
    }

    fn step_pick(&mut self, token: u32, sampler: &mut Sampler) -> Result<u32> {
        CudaModelSession::step_pick(self, token, sampler)
    }
}

/// The forward's operations on the device: each a kernel launch or a cuBLAS product
/// on the compute stream, in the order [`forward`] gives; nothing waits for the host.
impl Ops for CudaModelSession<'_> {
    fn embed(&mut self, ids: &[u32]) -> Result<()> {
        let t = ids.len();
        let slot = match self.staged.take() {
            Some(slot) => slot,
            None => {
                self.workspace(t)?;
                self.upload_ids(ids)?
            }
        };
        self.rows = t;
        let (dev, backend) = (self.dev, self.backend);
        let s = backend.stream();
        let x = self.ws.as_ref().expect("just sized").x.ptr(s);
        let up = self.ids.as_mut().expect("just sized");
        dev.launch(
            backend,
            &k::embed(
                &dev.dims,
                dev.dtype,
                t,
                up.device[slot].ptr(s),
                dev.embeddings.ptr(s),
                x,
            )?,
        )?;
        up.consumed[slot] = Some(
            s.record_event(None)
                .map_err(cuda_err("recording the embedding"))?,
        );
        Ok(())
    }

    // The kernel takes its epsilon from the model's dims, made from the same config.
    fn norm(&mut self, at: NormAt, _norm: &Norm, rows: Rows) -> Result<()> {
        let (dev, backend) = (self.dev, self.backend);
        let s = backend.stream();
        let d = self.model.config().hidden_size;
        let n = match rows {
            Rows::All => self.rows,
            Rows::Leading(n) => n,
            Rows::Last | Rows::LastHidden => 1,
        };
        if at == NormAt::Final {
            self.head_rows = n;
            self.logits_for(n)?;
        }
        let ws = self.ws.as_ref().expect("sized");
        let x = match rows {
            Rows::All | Rows::Leading(_) => ws.x.ptr(s),
            Rows::Last => ws.x.ptr(s) + ((self.rows - 1) * d * 4) as u64,
            Rows::LastHidden => self.last_hidden.ptr(s),
        };
        let weight = match at {
            NormAt::Mixer(l) => &dev.layers[l].attn_norm,
            NormAt::Channel(l) => &dev.layers[l].mlp_norm,
            NormAt::Final => &dev.norm,
        };
        let b = AddNormBufs {
            x,
            delta: 0,
            weight: weight.ptr(s),
            out: ws.h.ptr(s),
        };
        dev.launch(backend, &k::add_rms_norm(&dev.dims, dev.dtype, n, b)?)
    }

    fn linear(&mut self, p: Product) -> Result<()> {
        let (dev, backend) = (self.dev, self.backend);
        let lw = &dev.layers[p.layer];
        let w = match p.matrix {
            Matrix::InProj => &lw.in_proj,
            Matrix::OProj => &lw.o_proj,
            Matrix::GateUp => &lw.gate_up,
            Matrix::Down => &lw.down,
        };
        let ptr = self.act(p.from);
        let out = self.act(p.to);
        dev.linear(
            backend,
            ptr,
            w,
            out,
            GemmShape {
                tokens: self.rows,
                in_dim: p.in_dim,
                out_dim: p.out_dim,
            },
            p.accumulate,
        )
    }

    fn gated_delta_rule(&mut self, l: usize, _mixer: &GatedDeltaNet, _decode: bool) -> Result<()> {
        let (dev, backend) = (self.dev, self.backend);
        let s = backend.stream();
        let (dims, dt, t) = (dev.dims, dev.dtype, self.rows);
        let (proj, h) = (self.act(Act::Proj), self.act(Act::Mixed));
        let lw = &dev.layers[l];
        let cache = self.conv[l].ptr(s);
        let mut fill = |io: &crate::backend::cuda::WindowIo| {
            if io.t_cap < t {
                return Err(Error::Device(format!(
                    "the memory window holds {} tokens, the model's window {t}",
                    io.t_cap
                )));
            }
            let b = ConvBufs {
                proj,
                taps: lw.conv.ptr(s),
                cache,
                decay_rate: lw.decay_rate.ptr(s),
                dt_bias: lw.dt_bias.ptr(s),
                q: io.q,
                k: io.k,
                v: io.v,
                beta: io.beta,
                g: io.g,
            };
            dev.launch(backend, &k::conv(&dims, dt, t, b)?)?;
            // After the conv, which read the cache as it was before the window.
            dev.launch(backend, &k::conv_cache(&dims, t, proj, cache)?)
        };
        let mut read = |io: &crate::backend::cuda::WindowIo| {
            let l = k::gated_norm(&dims, dt, t, io.o, proj, lw.o_norm.ptr(s), h)?;
            dev.launch(backend, &l)
        };
        self.memories[l].feed_device(dt, t, &mut fill, &mut read)
    }

    fn swiglu(&mut self, _intermediate: usize) -> Result<()> {
        let (dev, backend) = (self.dev, self.backend);
        let (mlp, out) = (self.act(Act::Mlp), self.act(Act::Act));
        dev.launch(
            backend,
            &k::swiglu(&dev.dims, dev.dtype, self.rows, mlp, out)?,
        )
    }

    fn end_window(&mut self) -> Result<()> {
        let s = self.backend.stream();
        let (t, d) = (self.rows, self.model.config().hidden_size);
        let ws_x = &self.ws.as_ref().expect("sized").x;
        self.last_hidden
            .copy_from(s, 0, ws_x, (t - 1) * d * 4, d * 4)?;
        self.has_hidden = true;
        self.tokens += t as u64;
        Ok(())
    }

    fn head(&mut self, _rows: Rows) -> Result<()> {
        let (dev, backend) = (self.dev, self.backend);
        let s = backend.stream();
        let c = self.model.config();
        let ws = self.ws.as_ref().expect("sized by the final norm");
        let logits = ws.logits.as_ref().expect("sized by the final norm");
        dev.linear(
            backend,
            ws.h.ptr(s),
            dev.head(),
            logits.ptr(s),
            GemmShape {
                tokens: self.head_rows,
                in_dim: c.hidden_size,
                out_dim: c.vocab_size,
            },
            false,
        )
    }

    /// The activations stay on the device: the hook sees nothing here.
    fn trace(&mut self, _stage: TraceStage, _layer: usize, _act: Act) {}
}

impl CudaModelSession<'_> {
    /// The device address of `act`: the residual stream, the in_proj and MLP outputs
    /// have buffers of their own; every product's input (a norm's output, the mixer's,
    /// the MLP's activation) shares `h`, in the model's dtype.
    fn act(&self, act: Act) -> u64 {
        let s = self.backend.stream();
        let ws = self.ws.as_ref().expect("sized");
        match act {
            Act::Residual => ws.x.ptr(s),
            Act::Normed | Act::Mixed | Act::Act => ws.h.ptr(s),
            Act::Proj => ws.proj.ptr(s),
            Act::Mlp => ws.mlp.ptr(s),
        }
    }

    /// The workspace and a logits buffer for `rows` rows of the head.
    fn logits_for(&mut self, rows: usize) -> Result<()> {
        let s = self.backend.stream();
        let vocab = self.model.config().vocab_size;
        self.workspace(rows)?;
        let ws = self.ws.as_mut().expect("sized");
        if ws
            .logits
            .as_ref()
            .is_none_or(|b| b.len() < rows * vocab * 4)
        {
            ws.logits = None;
            ws.logits = Some(DeviceBuffer::new(s, "logits", bytes(&[rows, vocab, 4])?)?);
        }
        Ok(())
    }
}
