//! A sequence on the CPU: the layers' memories as backend sessions with their conv
//! caches beside them, the weights in f32 on the host, and a workspace of one window's
//! activations. The forward is [`super::forward`]'s; the operations are in [`ops`].

mod ops;

use crate::backend::MemorySession;
use crate::error::{Error, Result};

use super::desc::ModelDesc;
use super::forward::{self, Rows};
use super::model::LanguageModel;
use super::ops::{log_sum_exp, next_token_nll};
use super::runner::Runner;
use super::session::Logits;
use super::state::{LayerState, ModelState};
use super::trace::TraceHook;
use super::weights::Weights;

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
    /// Rows of the current window.
    rows: usize,
    /// Rows the last norm ran over (the head's).
    head_rows: usize,
    /// Values of the last head's logits in `logits`.
    logits_len: usize,
    /// Per [`super::forward::Act`], the values its last writer left (what a trace
    /// shows: the window's rows, or the one row of a last-row head).
    lens: [usize; 6],
}

fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// A sequence's state and workspace on the host.
pub(crate) struct CpuRunner<'m> {
    model: &'m LanguageModel,
    desc: &'m ModelDesc,
    weights: &'m Weights,
    memories: Vec<Box<dyn MemorySession + 'm>>,
    conv: Vec<Vec<f32>>,
    last_hidden: Option<Vec<f32>>,
    tokens: u64,
    ws: Workspace,
    trace: Option<TraceHook<'m>>,
}

impl<'m> CpuRunner<'m> {
    /// Opens every layer's memory on the model's backend (`state` checked by the
    /// caller).
    pub fn new(model: &'m LanguageModel, state: ModelState) -> Result<Self> {
        let weights = model.weights().ok_or_else(|| {
            Error::Device(
                "the model's weights are on the device only: its sequences run there, not on the host"
                    .into(),
            )
        })?;
        let mut memories = Vec::with_capacity(state.layers.len());
        let mut conv = Vec::with_capacity(state.layers.len());
        for layer in state.layers {
            memories.push(model.backend().open(model.memory_config(), layer.memory)?);
            conv.push(layer.conv);
        }
        Ok(CpuRunner {
            model,
            desc: model.desc(),
            weights,
            memories,
            conv,
            last_hidden: state.last_hidden,
            tokens: state.tokens,
            ws: Workspace::default(),
            trace: None,
        })
    }

    /// The window through the forward; the logits asked for stay in `ws.logits`.
    fn run(&mut self, ids: &[u32], want: Logits, decode: bool) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let rows = match want {
            Logits::None => None,
            Logits::Last => Some(Rows::Last),
            Logits::All => Some(Rows::All),
        };
        let desc = self.desc;
        forward::window(self, desc, ids, rows, decode)?;
        Ok(if rows.is_some() {
            self.ws.logits_len
        } else {
            0
        })
    }

    /// The head over the last hidden vector (the state's, not a window's).
    fn host_next_logits(&mut self) -> Option<&[f32]> {
        self.last_hidden.as_ref()?;
        let desc = self.desc;
        // Not a window of the forward: the hook sees windows only.
        let hook = self.trace.take();
        // Norm and product of one row: no error is possible on the host.
        let done = forward::head(self, desc, Rows::LastHidden);
        self.trace = hook;
        done.ok()?;
        Some(&self.ws.logits[..self.ws.logits_len])
    }
}

impl<'m> Runner<'m> for CpuRunner<'m> {
    fn tokens(&self) -> u64 {
        self.tokens
    }

    fn forward(&mut self, ids: &[u32], want: Logits, decode: bool) -> Result<&[f32]> {
        let n = self.run(ids, want, decode)?;
        Ok(&self.ws.logits[..n])
    }

    fn forward_scored(&mut self, ids: &[u32], nll: &mut Vec<f64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let vocab = self.desc.vocab_size;
        // The first token's score comes from the state alone (the last hidden vector),
        // so a resumed run computes it exactly as an uninterrupted one.
        if let Some(last) = self.host_next_logits() {
            nll.push(log_sum_exp(last) - last[ids[0] as usize] as f64);
        }
        let n = self.run(ids, Logits::All, false)?;
        let logits = &self.ws.logits[..n];
        let mut rows = Vec::new();
        next_token_nll(
            &logits[..(ids.len() - 1) * vocab],
            vocab,
            &ids[1..],
            &mut rows,
        );
        nll.extend_from_slice(&rows);
        Ok(())
    }

    fn next_logits(&mut self) -> Result<Option<&[f32]>> {
        Ok(self.host_next_logits())
    }

    fn snapshot(&self) -> Result<ModelState> {
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

    fn into_state(self: Box<Self>) -> Result<ModelState> {
        let this = *self;
        let layers = this
            .memories
            .into_iter()
            .zip(this.conv)
            .map(|(m, conv)| {
                Ok(LayerState {
                    memory: m.into_state()?,
                    conv,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelState {
            model: this.model.fingerprint(),
            layers,
            last_hidden: this.last_hidden,
            tokens: this.tokens,
        })
    }

    fn set_trace(&mut self, hook: Option<TraceHook<'m>>) {
        self.trace = hook;
    }
}
