//! One sequence running through a language model: the forward of every layer over a
//! window of tokens (prefill) or one token (decode), with the layers' memories held as
//! backend sessions and their conv caches beside them.

use rayon::prelude::*;

use crate::backend::MemorySession;
use crate::error::{Error, Result};
use crate::inputs::ForwardInputs;

use super::config::GateActivation;
use super::linear::matmul_t;
use super::model::LanguageModel;
use super::ops::{
    l2_normalize, log_sum_exp, next_token_nll, rms_norm, rms_norm_rows, short_conv, sigmoid, silu,
    softplus,
};
use super::pick::{pick_path, PickPath};
use super::sample::Sampler;
use super::state::{LayerState, ModelState};

/// A point in the forward where a trace hook ([`ModelSession::set_trace`]) sees the
/// values; each is `[rows, width]` row-major for the window's rows unless it says so.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceStage {
    /// The residual stream entering a layer (after the embedding for layer 0).
    Residual,
    /// `attn_norm` output (in_proj's input).
    AttnNorm,
    /// in_proj output `[rows, in_proj_width]`.
    Proj,
    /// The layer's conv cache before the window, `[channels, W]`.
    ConvCacheBefore,
    /// The conv cache after the window.
    ConvCacheAfter,
    /// The memory's q input `[rows, HV·K]` (l2-normalised, repeated per value head).
    MemQ,
    /// The memory's k input.
    MemK,
    /// The memory's v input `[rows, HV·V]`.
    MemV,
    /// β `[rows, HV]`.
    Beta,
    /// g `[rows, HV]`.
    Gate,
    /// The memory's output `[rows, HV·V]`.
    MemOut,
    /// The gated RMSNorm's output (o_proj's input).
    GatedNorm,
    /// The residual stream after o_proj's add.
    ResidualMid,
    /// `mlp_norm` output.
    MlpNorm,
    /// gate_up output `[rows, 2·I]`.
    Mlp,
    /// SwiGLU output `[rows, I]`.
    Act,
    /// The residual stream after the last layer (layer index = number of layers).
    ResidualOut,
    /// The final norm's output (rows of the logits asked for; layer = layers).
    FinalNorm,
}

/// A hook that sees each traced stage: (stage, layer, values).
#[doc(hidden)]
pub type TraceHook<'m> = Box<dyn FnMut(TraceStage, usize, &[f32]) + 'm>;

/// Which logits a call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (the fastest prefill: no output head).
    None,
    /// The last token's only: `[vocab]`.
    Last,
    /// Every token's: `[T, vocab]`.
    All,
}

/// A sequence's state inside a running model. Feeding tokens in any split (one call,
/// windows, token by token) gives the same results within f32 rounding.
pub struct ModelSession<'m> {
    model: &'m LanguageModel,
    memories: Vec<Box<dyn MemorySession + 'm>>,
    conv: Vec<Vec<f32>>,
    last_hidden: Option<Vec<f32>>,
    tokens: u64,
    window: usize,
    ws: Workspace,
    trace: Option<TraceHook<'m>>,
    /// The whole forward on a CUDA device (the model's weights there): every call goes
    /// to it, and the host fields above stay empty (the trace hook sees nothing there).
    device: Option<super::cuda::session::CudaModelSession<'m>>,
}

/// Buffers of one window, allocated for the largest window seen and then reused.
#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    h: Vec<f32>,
    proj: Vec<f32>,
    conv_out: Vec<f32>,
    conv_ext: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    beta: Vec<f32>,
    g: Vec<f32>,
    o: Vec<f32>,
    mlp: Vec<f32>,
    act: Vec<f32>,
    logits: Vec<f32>,
}

fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

impl<'m> ModelSession<'m> {
    /// Tokens per window of a prefill: large enough for efficient matrix products,
    /// small enough that a window's activations and logits stay modest.
    pub const DEFAULT_WINDOW: usize = 512;

    pub(crate) fn new(model: &'m LanguageModel, state: ModelState) -> Result<Self> {
        state.check_matches(model)?;
        if let (Some(dev), Some(cuda)) = (model.device_model(), model.backend().as_cuda()) {
            let tokens = state.tokens;
            return Ok(ModelSession {
                model,
                memories: Vec::new(),
                conv: Vec::new(),
                last_hidden: None,
                tokens,
                window: Self::DEFAULT_WINDOW,
                ws: Workspace::default(),
                trace: None,
                device: Some(super::cuda::session::CudaModelSession::new(
                    model, dev, cuda, state,
                )?),
            });
        }
        if model.weights().is_none() {
            return Err(no_host_weights());
        }
        let mut memories = Vec::with_capacity(state.layers.len());
        let mut conv = Vec::with_capacity(state.layers.len());
        for layer in state.layers {
            memories.push(model.backend().open(model.memory_config(), layer.memory)?);
            conv.push(layer.conv);
        }
        Ok(ModelSession {
            model,
            memories,
            conv,
            last_hidden: state.last_hidden,
            tokens: state.tokens,
            window: Self::DEFAULT_WINDOW,
            ws: Workspace::default(),
            trace: None,
            device: None,
        })
    }

    /// The model this sequence runs in.
    pub fn model(&self) -> &'m LanguageModel {
        self.model
    }

    /// Tokens fed so far.
    pub fn tokens(&self) -> u64 {
        match &self.device {
            Some(d) => d.tokens(),
            None => self.tokens,
        }
    }

    /// Sets the tokens per prefill window (at least 1), once the memory a window of
    /// that size needs ([`LanguageModel::window_bytes`]) is known to be available: the
    /// buffers grow on first use, where a failed allocation could only abort.
    pub fn set_window(&mut self, tokens: usize) -> Result<()> {
        let tokens = tokens.max(1);
        crate::limits::check_alloc("--window-tokens", self.model.window_bytes(tokens))?;
        self.window = tokens;
        Ok(())
    }

    /// Sets (or clears) a hook that sees every stage's values of the forwards that
    /// follow (for checking other implementations of the forward, such as the CUDA
    /// kernels in the emulator, stage by stage). Unset, the forward only tests an
    /// `Option` per stage.
    #[doc(hidden)]
    pub fn set_trace(&mut self, hook: Option<TraceHook<'m>>) {
        self.trace = hook;
    }

    /// Tokens per prefill window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Feeds `tokens` (any number; computed in windows) and returns the logits asked
    /// for: none, the last token's `[vocab]`, or every token's `[T, vocab]`.
    pub fn feed(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        let vocab = self.model.config().vocab_size;
        let mut out = Vec::new();
        if logits == Logits::All {
            out.try_reserve_exact(tokens.len().saturating_mul(vocab))
                .map_err(|_| {
                    Error::Config(format!(
                        "logits of {} tokens do not fit in memory: feed fewer at a time",
                        tokens.len()
                    ))
                })?;
        }
        let windows = tokens.len().div_ceil(self.window);
        let mut index = 0;
        self.feed_with(tokens, logits, &mut |rows| {
            index += 1;
            if logits == Logits::All || index == windows {
                if logits == Logits::Last {
                    out.clear();
                }
                out.extend_from_slice(rows);
            }
        })?;
        Ok(out)
    }

    /// Feeds `tokens` window by window, handing each window's logits to `on_logits`
    /// (`[T_window, vocab]` for [`Logits::All`], the window's last row for
    /// [`Logits::Last`], nothing for [`Logits::None`]). Memory stays that of one window.
    pub fn feed_with(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        on_logits: &mut dyn FnMut(&[f32]),
    ) -> Result<()> {
        let vocab = self.model.config().vocab_size;
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab)
        {
            return Err(Error::Query(format!(
                "token {i} of the input is id {id}, outside the vocabulary of {vocab}"
            )));
        }
        for window in tokens.chunks(self.window) {
            if let Some(d) = &mut self.device {
                let rows = d.forward(window, logits)?;
                if logits != Logits::None {
                    on_logits(rows);
                }
                continue;
            }
            let n = self.forward(window, logits, false)?;
            if logits != Logits::None {
                on_logits(&self.ws.logits[..n]);
            }
        }
        Ok(())
    }

    /// Feeds `tokens` (in windows) and appends to `nll` the negative log-likelihood
    /// (nats) of each token that has a prediction: the first from the state before the
    /// call (when a token came before), every other from the row before it. On a device
    /// the scores are computed there and only they come back (not `[T, vocab]` logits).
    pub fn feed_scored(&mut self, tokens: &[u32], nll: &mut Vec<f64>) -> Result<()> {
        let vocab = self.model.config().vocab_size;
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab)
        {
            return Err(Error::Query(format!(
                "token {i} of the input is id {id}, outside the vocabulary of {vocab}"
            )));
        }
        let mut rows = Vec::new();
        for window in tokens.chunks(self.window) {
            if let Some(d) = &mut self.device {
                d.forward_scored(window, nll)?;
                continue;
            }
            // The first token's score comes from the state alone (the last hidden
            // vector), so a resumed run computes it exactly as an uninterrupted one.
            if let Some(last) = self.host_next_logits() {
                nll.push(log_sum_exp(last) - last[window[0] as usize] as f64);
            }
            let n = self.forward(window, Logits::All, false)?;
            let logits = &self.ws.logits[..n];
            next_token_nll(
                &logits[..(window.len() - 1) * vocab],
                vocab,
                &window[1..],
                &mut rows,
            );
            nll.extend_from_slice(&rows);
        }
        Ok(())
    }

    /// Feeds one token through the recurrence (generation) and returns the logits for
    /// the next one. Agrees with [`ModelSession::feed`] within f32 rounding.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        check_token(token, self.model.config().vocab_size)?;
        // Tested, then borrowed: a borrow taken by `if let` and returned would be held
        // over the host path below too (the borrow checker's conditional-return case).
        #[allow(clippy::unnecessary_unwrap)]
        if self.device.is_some() {
            let d = self.device.as_mut().expect("tested just above");
            return d.forward(&[token], Logits::Last);
        }
        let n = self.forward(&[token], Logits::Last, true)?;
        Ok(&self.ws.logits[..n])
    }

    /// The logits for the token after the last one fed; `None` before any token (and,
    /// on a device, when it failed: [`ModelSession::try_next_logits`] says why).
    pub fn next_logits(&mut self) -> Option<&[f32]> {
        self.try_next_logits().ok().flatten()
    }

    /// [`ModelSession::next_logits`], with a device's failure as an error.
    pub fn try_next_logits(&mut self) -> Result<Option<&[f32]>> {
        #[allow(clippy::unnecessary_unwrap)] // as in `step`
        if self.device.is_some() {
            let d = self.device.as_mut().expect("tested just above");
            return d.next_logits();
        }
        Ok(self.host_next_logits())
    }

    fn host_next_logits(&mut self) -> Option<&[f32]> {
        let c = self.model.config();
        let hidden = self.last_hidden.as_ref()?;
        // A host session exists only for a model with host weights (`new`).
        let w = self.model.weights()?;
        let d = c.hidden_size;
        let h = sized(&mut self.ws.h, d);
        rms_norm(hidden, &w.norm, c.norm_eps, h);
        let logits = sized(&mut self.ws.logits, c.vocab_size);
        matmul_t(h, 1, d, w.head(), c.vocab_size, logits, false);
        Some(&self.ws.logits[..c.vocab_size])
    }

    /// A copy of the sequence's whole state (for a checkpoint); the session goes on.
    pub fn snapshot(&self) -> Result<ModelState> {
        if let Some(d) = &self.device {
            return d.snapshot();
        }
        let layers = self
            .memories
            .iter()
            .zip(&self.conv)
            .map(|(m, conv)| {
                Ok(LayerState {
                    memory: m.snapshot()?,
                    conv: conv.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelState {
            model: self.model.fingerprint(),
            layers,
            last_hidden: self.last_hidden.clone(),
            tokens: self.tokens,
        })
    }

    /// Ends the session and returns its state.
    pub fn into_state(self) -> Result<ModelState> {
        if let Some(d) = &self.device {
            return d.snapshot();
        }
        let model = self.model.fingerprint();
        let layers = self
            .memories
            .into_iter()
            .zip(self.conv)
            .map(|(m, conv)| {
                Ok(LayerState {
                    memory: m.into_state()?,
                    conv,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelState {
            model,
            layers,
            last_hidden: self.last_hidden,
            tokens: self.tokens,
        })
    }

    /// Every layer over `ids`; returns how many logits values it left in
    /// `ws.logits`. `decode` runs the memories token by token instead of chunked.
    fn forward(&mut self, ids: &[u32], want: Logits, decode: bool) -> Result<usize> {
        let model = self.model;
        let c = model.config();
        let w = model.weights().ok_or_else(no_host_weights)?;
        let t = ids.len();
        if t == 0 {
            return Ok(0);
        }
        let (d, dk, dv, hv, kd, vd) = (
            c.hidden_size,
            c.key_width(),
            c.value_width(),
            c.value_heads,
            c.head_dim,
            c.value_dim,
        );
        let channels = 2 * dk + dv;
        let gate_cols = if c.use_gate { dv } else { 0 };
        let n_in = channels + gate_cols + 2 * hv;
        let (off_g, off_a, off_b) = (channels, channels + gate_cols, channels + gate_cols + hv);
        let group = c.group();
        let eps = c.norm_eps;
        let ws = &mut self.ws;
        let mut trace = |stage: TraceStage, layer: usize, values: &[f32]| {
            if let Some(hook) = self.trace.as_mut() {
                hook(stage, layer, values);
            }
        };

        let x = sized(&mut ws.x, t * d);
        for (row, &id) in x.chunks_mut(d).zip(ids) {
            row.copy_from_slice(&w.embeddings[id as usize * d..][..d]);
        }
        for (l, lw) in w.layers.iter().enumerate() {
            trace(TraceStage::Residual, l, &ws.x[..t * d]);
            let h = sized(&mut ws.h, t * d);
            rms_norm_rows(&ws.x[..t * d], &lw.attn_norm, eps, h);
            trace(TraceStage::AttnNorm, l, h);
            let proj = sized(&mut ws.proj, t * n_in);
            matmul_t(h, t, d, &lw.in_proj, n_in, proj, false);
            trace(TraceStage::Proj, l, proj);
            trace(TraceStage::ConvCacheBefore, l, &self.conv[l]);
            let conv_out = sized(&mut ws.conv_out, t * channels);
            short_conv(
                proj,
                n_in,
                t,
                &lw.conv,
                &mut self.conv[l],
                c.conv_size,
                &mut ws.conv_ext,
                conv_out,
            );
            trace(TraceStage::ConvCacheAfter, l, &self.conv[l]);

            // Heads for the memory: q, k l2-normalised per query/key head and repeated
            // for each value head that reads them; β and g from their projections.
            let q = sized(&mut ws.q, t * hv * kd);
            let k = sized(&mut ws.k, t * hv * kd);
            let v = sized(&mut ws.v, t * dv);
            let beta = sized(&mut ws.beta, t * hv);
            let g = sized(&mut ws.g, t * hv);
            let conv_ro: &[f32] = conv_out;
            let proj_ro: &[f32] = proj;
            q.par_chunks_mut(hv * kd)
                .zip(k.par_chunks_mut(hv * kd))
                .zip(v.par_chunks_mut(dv))
                .zip(beta.par_chunks_mut(hv).zip(g.par_chunks_mut(hv)))
                .enumerate()
                .with_min_len(8)
                .for_each(|(ti, (((q, k), v), (beta, g)))| {
                    let row = &conv_ro[ti * channels..(ti + 1) * channels];
                    for head in 0..c.heads {
                        let first = head * group;
                        let (qs, ks) = (first * kd, first * kd);
                        q[qs..qs + kd].copy_from_slice(&row[head * kd..(head + 1) * kd]);
                        l2_normalize(&mut q[qs..qs + kd]);
                        k[ks..ks + kd].copy_from_slice(&row[dk + head * kd..dk + (head + 1) * kd]);
                        l2_normalize(&mut k[ks..ks + kd]);
                        for j in 1..group {
                            let to = (first + j) * kd;
                            q.copy_within(qs..qs + kd, to);
                            k.copy_within(ks..ks + kd, to);
                        }
                    }
                    v.copy_from_slice(&row[2 * dk..]);
                    let prow = &proj_ro[ti * n_in..(ti + 1) * n_in];
                    for i in 0..hv {
                        let b = sigmoid(prow[off_b + i]);
                        beta[i] = if c.allow_neg_eigval { 2.0 * b } else { b };
                        g[i] = lw.decay_rate[i] * softplus(prow[off_a + i] + lw.dt_bias[i]);
                    }
                });
            trace(TraceStage::MemQ, l, q);
            trace(TraceStage::MemK, l, k);
            trace(TraceStage::MemV, l, v);
            trace(TraceStage::Beta, l, beta);
            trace(TraceStage::Gate, l, g);
            let inputs = ForwardInputs {
                batch: 1,
                tokens: t,
                q: (&*q).into(),
                k: (&*k).into(),
                v: (&*v).into(),
                beta: (&*beta).into(),
                g: (&*g).into(),
            };
            let o = sized(&mut ws.o, t * dv);
            if decode {
                self.memories[l].decode(&inputs, o)?;
            } else {
                self.memories[l].feed(&inputs, o)?;
            }
            trace(TraceStage::MemOut, l, o);

            // Gated RMSNorm per value head, then the output projection into the residual.
            let gate_kind = c.gate_activation;
            o.par_chunks_mut(dv)
                .enumerate()
                .with_min_len(8)
                .for_each(|(ti, row)| {
                    let prow = &proj_ro[ti * n_in..(ti + 1) * n_in];
                    for i in 0..hv {
                        let head = &mut row[i * vd..(i + 1) * vd];
                        let mean = head.iter().map(|x| x * x).sum::<f32>() / vd as f32;
                        let r = 1.0 / (mean + eps).sqrt();
                        for (j, x) in head.iter_mut().enumerate() {
                            *x = *x * r * lw.o_norm[j];
                            if c.use_gate {
                                let gv = prow[off_g + i * vd + j];
                                *x *= match gate_kind {
                                    GateActivation::Swish => silu(gv),
                                    GateActivation::Sigmoid => sigmoid(gv),
                                };
                            }
                        }
                    }
                });
            trace(TraceStage::GatedNorm, l, o);
            matmul_t(o, t, dv, &lw.o_proj, d, &mut ws.x[..t * d], true);
            trace(TraceStage::ResidualMid, l, &ws.x[..t * d]);

            // SwiGLU MLP.
            let h = sized(&mut ws.h, t * d);
            rms_norm_rows(&ws.x[..t * d], &lw.mlp_norm, eps, h);
            trace(TraceStage::MlpNorm, l, h);
            let inter = c.intermediate_size;
            let mlp = sized(&mut ws.mlp, t * 2 * inter);
            matmul_t(h, t, d, &lw.gate_up, 2 * inter, mlp, false);
            trace(TraceStage::Mlp, l, mlp);
            let act = sized(&mut ws.act, t * inter);
            let mlp_ro: &[f32] = mlp;
            act.par_chunks_mut(inter)
                .zip(mlp_ro.par_chunks(2 * inter))
                .with_min_len(8)
                .for_each(|(a, m)| {
                    let (gate, up) = m.split_at(inter);
                    for ((a, g), u) in a.iter_mut().zip(gate).zip(up) {
                        *a = silu(*g) * u;
                    }
                });
            trace(TraceStage::Act, l, act);
            matmul_t(act, t, inter, &lw.down, d, &mut ws.x[..t * d], true);
        }
        let layers = w.layers.len();
        trace(TraceStage::ResidualOut, layers, &ws.x[..t * d]);

        let last = ws.x[(t - 1) * d..t * d].to_vec();
        self.last_hidden = Some(last);
        self.tokens += t as u64;
        let vocab = c.vocab_size;
        match want {
            Logits::None => Ok(0),
            Logits::Last => {
                let h = sized(&mut ws.h, d);
                rms_norm(&ws.x[(t - 1) * d..t * d], &w.norm, eps, h);
                trace(TraceStage::FinalNorm, layers, h);
                let logits = sized(&mut ws.logits, vocab);
                matmul_t(h, 1, d, w.head(), vocab, logits, false);
                Ok(vocab)
            }
            Logits::All => {
                let h = sized(&mut ws.h, t * d);
                rms_norm_rows(&ws.x[..t * d], &w.norm, eps, h);
                trace(TraceStage::FinalNorm, layers, h);
                let logits = sized(&mut ws.logits, t * vocab);
                matmul_t(h, t, d, w.head(), vocab, logits, false);
                Ok(t * vocab)
            }
        }
    }
}

impl ModelSession<'_> {
    /// Feeds `prompt`, then generates `n` tokens, each fed back as it is chosen
    /// (token by token through the recurrence). With an empty prompt, continues from
    /// the last token fed. Returns the generated ids.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        n: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<u32>> {
        self.generate_with(prompt, n, sampler, &mut |_| true)
    }

    /// [`ModelSession::generate`], calling `on_token` with each id as it is chosen;
    /// generation stops early when it returns false.
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        n: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        if !prompt.is_empty() {
            self.feed_with(prompt, Logits::None, &mut |_| {})?;
        }
        let Some(mut next) = self.pick_next(sampler)? else {
            return Err(Error::Query(
                "nothing to continue: feed at least one token before generating".into(),
            ));
        };
        // The ids come back as one vector: its size is known before the first step.
        crate::limits::check_alloc("--generate", (n as u64).checked_mul(4))?;
        let mut out = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            out.push(next);
            if !on_token(next) {
                break;
            }
            next = self.step_pick(next, sampler)?;
        }
        Ok(out)
    }

    /// The path [`ModelSession::pick_next`] and [`ModelSession::step_pick`] take for
    /// `sampler`: on the device when the model is on one and its sampler takes the
    /// settings, else on the host from the copied logits row.
    pub fn pick_path(&self, sampler: &Sampler) -> PickPath {
        pick_path(self.device.is_some(), sampler)
    }

    /// The next token after the last one fed, as `sampler` chooses it (on the device
    /// where [`ModelSession::pick_path`] says so: one id comes back, not the logits);
    /// `None` before any token.
    pub fn pick_next(&mut self, sampler: &mut Sampler) -> Result<Option<u32>> {
        if self.pick_path(sampler) != PickPath::Host {
            if let Some(d) = &mut self.device {
                return d.next_pick(sampler);
            }
        }
        Ok(self.try_next_logits()?.map(|logits| sampler.pick(logits)))
    }

    /// Feeds `token` through the recurrence ([`ModelSession::step`]) and returns the
    /// next token as `sampler` chooses it ([`ModelSession::pick_next`]).
    pub fn step_pick(&mut self, token: u32, sampler: &mut Sampler) -> Result<u32> {
        if self.pick_path(sampler) != PickPath::Host {
            if let Some(d) = &mut self.device {
                check_token(token, self.model.config().vocab_size)?;
                return d.step_pick(token, sampler);
            }
        }
        let logits = self.step(token)?;
        Ok(sampler.pick(logits))
    }
}

fn no_host_weights() -> Error {
    Error::Device(
        "the model's weights are on the device only: its sequences run there, not on the host"
            .into(),
    )
}

fn check_token(token: u32, vocab: usize) -> Result<()> {
    if token as usize >= vocab {
        return Err(Error::Query(format!(
            "token id {token} is outside the vocabulary of {vocab}"
        )));
    }
    Ok(())
}
