//! One sequence running through a language model: windows of tokens (prefill) or one
//! token (decode) handed to the runner of the model's device ([`super::runner`]), which
//! runs [`super::forward`] over its own operations and holds the sequence's state.

use crate::error::{Error, Result};

use super::model::LanguageModel;
use super::pick::{pick_path, PickPath};
use super::runner::Runner;
use super::sample::Sampler;
use super::state::ModelState;

pub use super::trace::{TraceHook, TraceStage};

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
    /// The sequence's state and workspace on the model's device.
    runner: Box<dyn Runner<'m> + 'm>,
    window: usize,
}

impl<'m> ModelSession<'m> {
    /// Tokens per window of a prefill: large enough for efficient matrix products,
    /// small enough that a window's activations and logits stay modest.
    pub const DEFAULT_WINDOW: usize = 512;

    pub(crate) fn new(model: &'m LanguageModel, state: ModelState) -> Result<Self> {
        state.check_matches(model)?;
        Ok(ModelSession {
            model,
            runner: model.runner(state)?,
            window: Self::DEFAULT_WINDOW,
        })
    }

    /// The model this sequence runs in.
    pub fn model(&self) -> &'m LanguageModel {
        self.model
    }

    /// Tokens fed so far.
    pub fn tokens(&self) -> u64 {
        self.runner.tokens()
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
        self.runner.set_trace(hook);
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
            let rows = self.runner.forward(window, logits, false)?;
            if logits != Logits::None {
                on_logits(rows);
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
        for window in tokens.chunks(self.window) {
            self.runner.forward_scored(window, nll)?;
        }
        Ok(())
    }

    /// Feeds one token through the recurrence (generation) and returns the logits for
    /// the next one. Agrees with [`ModelSession::feed`] within f32 rounding.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        check_token(token, self.model.config().vocab_size)?;
        self.runner.forward(&[token], Logits::Last, true)
    }

    /// The logits for the token after the last one fed; `None` before any token (and,
    /// on a device, when it failed: [`ModelSession::try_next_logits`] says why).
    pub fn next_logits(&mut self) -> Option<&[f32]> {
        self.try_next_logits().ok().flatten()
    }

    /// [`ModelSession::next_logits`], with a device's failure as an error.
    pub fn try_next_logits(&mut self) -> Result<Option<&[f32]>> {
        self.runner.next_logits()
    }

    /// A copy of the sequence's whole state (for a checkpoint); the session goes on.
    pub fn snapshot(&self) -> Result<ModelState> {
        self.runner.snapshot()
    }

    /// Ends the session and returns its state.
    pub fn into_state(self) -> Result<ModelState> {
        self.runner.into_state()
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
        pick_path(self.runner.picks(), sampler)
    }

    /// The next token after the last one fed, as `sampler` chooses it (on the device
    /// where [`ModelSession::pick_path`] says so: one id comes back, not the logits);
    /// `None` before any token.
    pub fn pick_next(&mut self, sampler: &mut Sampler) -> Result<Option<u32>> {
        if self.pick_path(sampler) != PickPath::Host {
            return self.runner.next_pick(sampler);
        }
        Ok(self.try_next_logits()?.map(|logits| sampler.pick(logits)))
    }

    /// Feeds `token` through the recurrence ([`ModelSession::step`]) and returns the
    /// next token as `sampler` chooses it ([`ModelSession::pick_next`]).
    pub fn step_pick(&mut self, token: u32, sampler: &mut Sampler) -> Result<u32> {
        if self.pick_path(sampler) != PickPath::Host {
            check_token(token, self.model.config().vocab_size)?;
            return self.runner.step_pick(token, sampler);
        }
        let logits = self.step(token)?;
        Ok(sampler.pick(logits))
    }
}

fn check_token(token: u32, vocab: usize) -> Result<()> {
    if token as usize >= vocab {
        return Err(Error::Query(format!(
            "token id {token} is outside the vocabulary of {vocab}"
        )));
    }
    Ok(())
}
