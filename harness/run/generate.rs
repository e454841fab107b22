//! Greedy generation of exactly N new tokens, with a hook on every step.

use anyhow::Result;
use serde::Serialize;

use crate::engine::Loaded;
use crate::error::InputError;
use crate::run::clock;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Exactly this many new tokens are produced, unless `stop_at_end_of_text` is set
    /// and the model emits `<|endoftext|>` first.
    pub new_tokens: usize,
    pub stop_at_end_of_text: bool,
}

impl GenerateOptions {
    pub fn exactly(new_tokens: usize) -> Self {
        GenerateOptions {
            new_tokens,
            stop_at_end_of_text: false,
        }
    }
}

/// Which kind of forward pass a step was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// The whole prompt in one pass, ending with the first new token.
    Prefill,
    /// One new token from the KV cache.
    Decode,
}

/// One finished step, reported to the observer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    pub kind: StepKind,
    /// 0 for the prefill, then 1, 2, ... for each decode step.
    pub index: usize,
    /// The token the step produced.
    pub token: u32,
    /// Wall time of the step, the device synchronised at both ends.
    pub seconds: f64,
}

/// Hooks into generation; the default does nothing.
pub trait StepObserver {
    fn on_step(&mut self, _step: &Step) {}
}

/// An observer that ignores every step.
pub struct NoObserver;
impl StepObserver for NoObserver {}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub new_ids: Vec<u32>,
    pub text: String,
    /// Per step, prefill first.
    pub step_seconds: Vec<f64>,
}

impl Generation {
    pub fn total_seconds(&self) -> f64 {
        self.step_seconds.iter().sum()
    }

    /// Time to first token: the prefill step.
    pub fn prefill_seconds(&self) -> f64 {
        self.step_seconds.first().copied().unwrap_or(0.0)
    }

    /// Decode tokens per second (the steps after the prefill), as
    /// [`crate::analysis::stats::decode_tokens_per_second`] defines it.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        crate::analysis::stats::decode_tokens_per_second(self.step_seconds.get(1..).unwrap_or(&[]))
    }
}

/// Checks that a prompt of `prompt_len` tokens plus `new_tokens` fits the context.
pub fn check_fits(
    prompt_len: usize,
    new_tokens: usize,
    n_positions: usize,
) -> Result<(), InputError> {
    if prompt_len == 0 {
        return Err(InputError::new(
            "the prompt is empty: GPT-2 needs at least one token to start from",
        ));
    }
    if prompt_len > n_positions {
        return Err(InputError::new(format!(
            "the prompt is {prompt_len} tokens, longer than the model's context of {n_positions} (its context length); shorten the prompt to at most {n_positions} tokens"
        )));
    }
    // The last new token is produced, never fed back: it needs no position of its own.
    // Checked: a new-token count near the integer limit must not wrap around the check.
    let fits = prompt_len
        .checked_add(new_tokens.saturating_sub(1))
        .is_some_and(|needed| needed <= n_positions);
    if !fits {
        return Err(InputError::new(format!(
            "a prompt of {prompt_len} tokens plus {new_tokens} new tokens needs {} positions, more than the model's context of {n_positions} (its context length); ask for at most {} new tokens or shorten the prompt",
            prompt_len as u128 + new_tokens.saturating_sub(1) as u128,
            n_positions + 1 - prompt_len
        )));
    }
    Ok(())
}

/// Greedy decoding: the prompt in one pass, then one token per step from the context.
pub fn generate(
    model: &dyn Loaded,
    prompt_ids: &[u32],
    opts: GenerateOptions,
    observer: &mut dyn StepObserver,
) -> Result<Generation> {
    check_fits(prompt_ids.len(), opts.new_tokens, model.context_length())?;
    let end_of_text = model.end_of_text();
    let mut ctx = model.new_context(1, prompt_ids.len() + opts.new_tokens)?;
    let mut new_ids = Vec::with_capacity(opts.new_tokens);
    let mut step_seconds = Vec::with_capacity(opts.new_tokens);
    let mut input: Vec<u32> = prompt_ids.to_vec();
    for index in 0..opts.new_tokens {
        let start = clock::synced_now(model)?;
        let token = model.next_tokens(&[&input], ctx.as_mut())?[0];
        let seconds = clock::synced_seconds_since(model, start)?;
        let kind = if index == 0 {
            StepKind::Prefill
        } else {
            StepKind::Decode
        };
        observer.on_step(&Step {
            kind,
            index,
            token,
            seconds,
        });
        new_ids.push(token);
        step_seconds.push(seconds);
        if opts.stop_at_end_of_text && Some(token) == end_of_text {
            break;
        }
        input = vec![token];
    }
    let text = model.detokenize(&new_ids)?;
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        new_ids,
        text,
        step_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_limit_counts_only_fed_positions() {
        assert!(check_fits(4, 50, 1024).is_ok());
        assert!(check_fits(1000, 25, 1024).is_ok());
        let e = check_fits(1000, 26, 1024).unwrap_err().to_string();
        assert!(
            e.contains("1025") && e.contains("1024") && e.contains("at most 25"),
            "{e}"
        );
        assert!(check_fits(0, 5, 1024)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }
}
