//! Preference tuning: DPO (sigmoid, IPO, hinge) and ORPO, as TRL defines them, on pairs of
//! completions of one prompt, the chosen one and the rejected one.
//!
//! A pair's loss depends on each completion's log-probability as a whole (summed over its
//! tokens), so a step runs the forward, sums each sequence's token log-probabilities, and
//! only then knows each token's weight in the gradient: ∂loss/∂(token NLL) = −∂loss/∂(the
//! sequence's log-probability) (TrainPass::forward_backward_weighted). The reference
//! log-probabilities (DPO) come from the same model with the adapter switched off, or with
//! the frozen starting adapter, as PEFT does in TRL: no second copy of the weights.
//!
//! Records: `prompt`, `chosen`, `rejected` as strings, or `chosen`/`rejected` as chat
//! message lists (with `prompt` as a message list, or sharing their first messages).

use serde_json::Value;

use super::data::{prepare_one, DataOptions, DataStats, Example, Prepared, Record};
use crate::model::backward::TokenBatch;
use crate::model::Tokenizer;
use crate::ops::cross_entropy::IGNORE;
use crate::{Error, Result};

/// What a run optimizes.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// The mean NLL of the response tokens (supervised fine-tuning).
    Sft,
    /// Direct preference optimization against the reference (TRL's DPOTrainer).
    Dpo { beta: f64, loss: DpoLoss, label_smoothing: f64 },
    /// Odds-ratio preference optimization: the chosen NLL plus alpha times the odds-ratio
    /// term, no reference (TRL's ORPOTrainer, whose `beta` is this alpha).
    Orpo { alpha: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DpoLoss {
    /// −log σ(β·δ), with label smoothing ε: −(1−ε)·log σ(β·δ) − ε·log σ(−β·δ) (cDPO).
    Sigmoid,
    /// (δ̄ − 1/(2β))², δ̄ from log-ratios averaged over each completion's tokens.
    Ipo,
    /// max(0, 1 − β·δ).
    Hinge,
}

impl DpoLoss {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sigmoid" => Ok(DpoLoss::Sigmoid),
            "ipo" => Ok(DpoLoss::Ipo),
            "hinge" => Ok(DpoLoss::Hinge),
            other => Err(Error::invalid_setting("dpo_loss", format!("\"{other}\": expected sigmoid, ipo or hinge"))),
        }
    }
}

impl Objective {
    pub fn is_preference(&self) -> bool {
        !matches!(self, Objective::Sft)
    }

    pub fn needs_reference(&self) -> bool {
        matches!(self, Objective::Dpo { .. })
    }
}

/// One completion's log-probability (summed over its loss tokens) and its loss tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeqLogp {
    pub sum: f64,
    pub tokens: usize,
}

impl SeqLogp {
    fn mean(self) -> f64 {
        self.sum / self.tokens.max(1) as f64
    }
}

/// Per sequence of `batch` (by segment), the log-probability of its loss tokens from the
/// tokens' NLLs.
pub fn sequence_logps(batch: &TokenBatch, nll: &[f32]) -> Vec<SeqLogp> {
    let n_seq = batch.seg.last().map_or(0, |&s| s as usize + 1);
    let mut out = vec![SeqLogp::default(); n_seq];
    for ((&seg, &t), &l) in batch.seg.iter().zip(&batch.targets).zip(nll) {
        if t != IGNORE {
            out[seg as usize].sum -= l as f64;
            out[seg as usize].tokens += 1;
        }
    }
    out
}

/// One pair's part of the loss (before the mean over pairs), its derivatives by the chosen
/// and rejected log-probabilities (sums), and what TRL logs of it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairTerms {
    pub loss: f64,
    pub d_chosen: f64,
    pub d_rejected: f64,
    pub reward_chosen: f64,
    pub reward_rejected: f64,
    /// TRL's logps/chosen and logps/rejected: sums for DPO, means per token for ORPO.
    pub logp_chosen: f64,
    pub logp_rejected: f64,
    /// ORPO: the log odds ratio and log σ of it.
    pub log_odds: f64,
    pub log_sigmoid_odds: f64,
}

fn log_sigmoid(x: f64) -> f64 {
    // stable for both signs
    -(1.0 + (-x.abs()).exp()).ln() + x.min(0.0)
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log(1 − eˣ) for x < 0.
fn log1mexp(x: f64) -> f64 {
    if x > -std::f64::consts::LN_2 {
        (-x.exp_m1()).ln()
    } else {
        (-x.exp()).ln_1p()
    }
}

impl Objective {
    /// A pair's terms from the policy's log-probabilities and, for DPO, the reference's.
    pub fn pair_terms(&self, chosen: SeqLogp, rejected: SeqLogp, reference: Option<(SeqLogp, SeqLogp)>) -> PairTerms {
        match *self {
            Objective::Sft => PairTerms::default(),
            Objective::Dpo { beta, loss, label_smoothing: eps } => {
                let (rc, rr) = reference.expect("DPO needs the reference log-probabilities");
                let (lc, lr) = (chosen.sum - rc.sum, rejected.sum - rr.sum);
                let delta = lc - lr;
                let (value, d_c, d_r) = match loss {
                    DpoLoss::Sigmoid => {
                        let z = beta * delta;
                        let value = -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
                        let d = beta * (-(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z));
                        (value, d, -d)
                    }
                    DpoLoss::Hinge => {
                        let z = beta * delta;
                        let d = if z < 1.0 { -beta } else { 0.0 };
                        ((1.0 - z).max(0.0), d, -d)
                    }
                    DpoLoss::Ipo => {
                        let (nc, nr) = (chosen.tokens.max(1) as f64, rejected.tokens.max(1) as f64);
                        let h = lc / nc - lr / nr - 1.0 / (2.0 * beta);
                        (h * h, 2.0 * h / nc, -2.0 * h / nr)
                    }
                };
                PairTerms {
                    loss: value,
                    d_chosen: d_c,
                    d_rejected: d_r,
                    reward_chosen: beta * lc,
                    reward_rejected: beta * lr,
                    logp_chosen: chosen.sum,
                    logp_rejected: rejected.sum,
                    log_odds: 0.0,
                    log_sigmoid_odds: 0.0,
                }
            }
            Objective::Orpo { alpha } => {
                let (pc, pr) = (chosen.mean(), rejected.mean());
                let log_odds = (pc - pr) - (log1mexp(pc) - log1mexp(pr));
                let ls = log_sigmoid(log_odds);
                // loss −α·log σ(lo); ∂lo/∂p̄c = 1/(1 − e^p̄c), ∂lo/∂p̄r = −1/(1 − e^p̄r); p̄ = sum/n
                let g = -alpha * sigmoid(-log_odds);
                PairTerms {
                    loss: -alpha * ls,
                    d_chosen: g / (-pc.exp_m1()) / chosen.tokens.max(1) as f64,
                    d_rejected: -g / (-pr.exp_m1()) / rejected.tokens.max(1) as f64,
                    reward_chosen: alpha * pc,
                    reward_rejected: alpha * pr,
                    logp_chosen: pc,
                    logp_rejected: pr,
                    log_odds,
                    log_sigmoid_odds: ls,
                }
            }
        }
    }
}

/// The metrics TRL logs for preference training, means over the pairs of a step (or an
/// evaluation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PreferenceStats {
    pub loss: f64,
    pub rewards_chosen: f64,
    pub rewards_rejected: f64,
    pub accuracy: f64,
    pub margin: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
    /// ORPO: the chosen completions' NLL per token, mean log σ(log odds), mean log odds.
    pub nll: Option<f64>,
    pub log_odds_ratio: Option<f64>,
    pub log_odds_chosen: Option<f64>,
    pub pairs: usize,
}

impl PreferenceStats {
    /// The metrics under TRL's names (rewards/chosen, ...), each name after `prefix`
    /// ("eval_" for an evaluation), for metrics.jsonl and the page.
    pub fn to_json(&self, prefix: &str) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: f64| {
            m.insert(format!("{prefix}{k}"), serde_json::json!(v));
        };
        put("rewards/chosen", self.rewards_chosen);
        put("rewards/rejected", self.rewards_rejected);
        put("rewards/accuracies", self.accuracy);
        put("rewards/margins", self.margin);
        put("logps/chosen", self.logps_chosen);
        put("logps/rejected", self.logps_rejected);
        for (k, v) in [("nll_loss", self.nll), ("log_odds_ratio", self.log_odds_ratio), ("log_odds_chosen", self.log_odds_chosen)] {
            if let Some(v) = v {
                put(k, v);
            }
        }
        m
    }
}

/// Sums pair terms over a step and turns them into [`PreferenceStats`].
#[derive(Clone, Debug, Default)]
pub struct PreferenceTally {
    pairs: usize,
    terms: PairTerms,
    accurate: usize,
    chosen_nll: f64,
    chosen_tokens: usize,
}

impl PreferenceTally {
    pub fn add(&mut self, t: &PairTerms, chosen: SeqLogp) {
        self.pairs += 1;
        let s = &mut self.terms;
        s.loss += t.loss;
        s.reward_chosen += t.reward_chosen;
        s.reward_rejected += t.reward_rejected;
        s.logp_chosen += t.logp_chosen;
        s.logp_rejected += t.logp_rejected;
        s.log_odds += t.log_odds;
        s.log_sigmoid_odds += t.log_sigmoid_odds;
        self.accurate += usize::from(t.reward_chosen > t.reward_rejected);
        self.chosen_nll -= chosen.sum;
        self.chosen_tokens += chosen.tokens;
    }

    /// The chosen completions' NLL per token.
    pub fn chosen_nll(&self) -> f64 {
        self.chosen_nll / self.chosen_tokens.max(1) as f64
    }

    pub fn stats(&self, objective: &Objective) -> PreferenceStats {
        let p = self.pairs.max(1) as f64;
        let s = &self.terms;
        let orpo = matches!(objective, Objective::Orpo { .. });
        let nll = self.chosen_nll();
        PreferenceStats {
            // ORPO's loss: the chosen NLL (per token over the step) plus the mean odds term
            loss: s.loss / p + if orpo { nll } else { 0.0 },
            rewards_chosen: s.reward_chosen / p,
            rewards_rejected: s.reward_rejected / p,
            accuracy: self.accurate as f64 / p,
            margin: (s.reward_chosen - s.reward_rejected) / p,
            logps_chosen: s.logp_chosen / p,
            logps_rejected: s.logp_rejected / p,
            nll: orpo.then_some(nll),
            log_odds_ratio: orpo.then_some(s.log_sigmoid_odds / p),
            log_odds_chosen: orpo.then_some(s.log_odds / p),
            pairs: self.pairs,
        }
    }
}

/// ∂loss/∂(each token's NLL) for a micro-batch of pairs (chosen, rejected, chosen, ...):
/// −(∂loss/∂ its sequence's log-probability) / `pairs` (the step's pairs, over which the loss
/// is a mean); for ORPO the chosen tokens add 1/`chosen_tokens` (the step's, over which the
/// NLL is a mean).
pub fn token_weights(batch: &TokenBatch, terms: &[PairTerms], pairs: usize, objective: &Objective, chosen_tokens: usize) -> Vec<f32> {
    let p = pairs.max(1) as f64;
    let nll = if matches!(objective, Objective::Orpo { .. }) { 1.0 / chosen_tokens.max(1) as f64 } else { 0.0 };
    batch
        .seg
        .iter()
        .zip(&batch.targets)
        .map(|(&seg, &t)| {
            if t == IGNORE {
                return 0.0;
            }
            let pair = &terms[seg as usize / 2];
            let w = if seg % 2 == 0 { -pair.d_chosen / p + nll } else { -pair.d_rejected / p };
            w as f32
        })
        .collect()
}

/// A preference pair, tokenized: the chosen and the rejected example, each with loss on its
/// completion only.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferencePair {
    pub chosen: Example,
    pub rejected: Example,
}

fn messages(r: &Record, name: &str) -> Result<Option<Vec<Value>>> {
    match r.fields.get(name) {
        Some(Value::Array(list)) => Ok(Some(list.clone())),
        Some(Value::String(_)) | None => Ok(None),
        Some(_) => Err(Error::bad_file(&r.origin, format!("\"{name}\" should be a string or a list of chat messages"))),
    }
}

/// The two supervised records a preference record stands for: (prompt, chosen) and
/// (prompt, rejected), as prompt/completion records or as conversations whose last
/// assistant turn is the completion.
pub fn pair_records(r: &Record) -> Result<(Record, Record)> {
    for field in ["chosen", "rejected"] {
        if !r.fields.contains_key(field) {
            return Err(Error::bad_file(&r.origin, format!("field \"{field}\" is missing (a preference record has prompt, chosen and rejected)")));
        }
    }
    if r.fields["chosen"] == r.fields["rejected"] {
        return Err(Error::bad_file(&r.origin, "chosen and rejected are the same: there is nothing to prefer"));
    }
    let one = |completion: &Value, chat: bool| -> Result<Record> {
        let mut fields = serde_json::Map::new();
        if chat {
            let mut list = match r.fields.get("prompt") {
                Some(Value::Array(p)) => p.clone(),
                Some(Value::String(p)) => vec![serde_json::json!({"role": "user", "content": p})],
                None => Vec::new(),
                Some(_) => return Err(Error::bad_file(&r.origin, "\"prompt\" should be a string or a list of chat messages")),
            };
            list.extend(completion.as_array().cloned().unwrap_or_default());
            fields.insert("messages".into(), Value::Array(list));
        } else {
            let prompt = r.fields.get("prompt").and_then(Value::as_str).ok_or_else(|| Error::bad_file(&r.origin, "field \"prompt\" is missing or not a string"))?;
            let completion = completion.as_str().ok_or_else(|| Error::bad_file(&r.origin, "chosen and rejected should both be strings, or both chat message lists"))?;
            fields.insert("prompt".into(), Value::String(prompt.into()));
            fields.insert("completion".into(), Value::String(completion.into()));
        }
        Ok(Record { origin: r.origin.clone(), fields })
    };
    let chat = messages(r, "chosen")?.is_some() || messages(r, "rejected")?.is_some();
    Ok((one(&r.fields["chosen"], chat)?, one(&r.fields["rejected"], chat)?))
}

/// Every preference record as a [`PreferencePair`] (the same templates and loss masks as
/// supervised data, the loss on the last assistant turn only for conversations), with what
/// truncation did (`examples`: pairs; a pair is dropped when a completion is cut to
/// nothing). A bad record is an error naming its line.
pub fn prepare_pairs(records: &[Record], tok: &Tokenizer, opts: &DataOptions) -> Result<(Vec<PreferencePair>, DataStats)> {
    let mut stats = DataStats::default();
    let mut out = Vec::new();
    for r in records {
        let (c, rj) = pair_records(r)?;
        let (chosen, rejected) = (last_turn_only(prepare_one(&c, tok, opts)?), last_turn_only(prepare_one(&rj, tok, opts)?));
        stats.truncated += usize::from(chosen.truncated || rejected.truncated);
        if chosen.example.counted() == 0 || rejected.example.counted() == 0 {
            stats.dropped += 1;
            continue;
        }
        if chosen.example == rejected.example {
            return Err(Error::bad_file(&r.origin, "chosen and rejected give the same tokens: there is nothing to prefer"));
        }
        stats.examples += 1;
        stats.tokens += chosen.example.tokens.len() + rejected.example.tokens.len();
        stats.loss_tokens += chosen.example.counted() + rejected.example.counted();
        out.push(PreferencePair { chosen: chosen.example, rejected: rejected.example });
    }
    if out.is_empty() {
        return Err(Error::invalid_setting("max_seq_len", format!("no preference pair has completion tokens left within {} tokens ({} dropped)", opts.max_seq_len, stats.dropped)));
    }
    Ok((out, stats))
}

/// Loss on the last run of loss tokens only: a conversation's earlier assistant turns are
/// part of the prompt both completions share.
fn last_turn_only(mut p: Prepared) -> Prepared {
    let loss = &mut p.example.loss;
    if let Some(end) = loss.iter().rposition(|&l| l) {
        let start = loss[..end].iter().rposition(|&l| !l).map_or(0, |i| i + 1);
        for l in &mut loss[..start] {
            *l = false;
        }
    }
    p
}

/// The records as training examples for `objective`: supervised examples, or preference
/// pairs as chosen, rejected, chosen, ... (`DataStats::examples` then counts pairs).
pub fn prepare_examples(objective: &Objective, records: &[Record], tok: &Tokenizer, opts: &DataOptions) -> Result<(Vec<Example>, DataStats)> {
    if objective.is_preference() {
        let (pairs, stats) = prepare_pairs(records, tok, opts)?;
        Ok((interleave(&pairs), stats))
    } else {
        super::data::prepare(records, tok, opts)
    }
}

/// The examples of `pairs`, chosen then rejected, pair after pair: what a micro-batch packs.
pub fn interleave(pairs: &[PreferencePair]) -> Vec<Example> {
    pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(sum: f64, tokens: usize) -> SeqLogp {
        SeqLogp { sum, tokens }
    }

    /// Each objective's derivatives against finite differences of its loss.
    #[test]
    fn pair_derivatives_match_finite_differences() {
        let objectives = [
            Objective::Dpo { beta: 0.1, loss: DpoLoss::Sigmoid, label_smoothing: 0.0 },
            Objective::Dpo { beta: 0.3, loss: DpoLoss::Sigmoid, label_smoothing: 0.2 },
            Objective::Dpo { beta: 0.1, loss: DpoLoss::Ipo, label_smoothing: 0.0 },
            Objective::Dpo { beta: 0.5, loss: DpoLoss::Hinge, label_smoothing: 0.0 },
            Objective::Orpo { alpha: 0.2 },
        ];
        let reference = Some((seq(-20.0, 5), seq(-18.0, 7)));
        for o in &objectives {
            for (c, r) in [(-19.0, -21.0), (-25.0, -12.0), (-4.0, -30.0)] {
                let (c, r) = (seq(c, 5), seq(r, 7));
                let t = o.pair_terms(c, r, reference);
                let h = 1e-5;
                let f = |c: SeqLogp, r: SeqLogp| o.pair_terms(c, r, reference).loss;
                let dc = (f(seq(c.sum + h, 5), r) - f(seq(c.sum - h, 5), r)) / (2.0 * h);
                let dr = (f(c, seq(r.sum + h, 7)) - f(c, seq(r.sum - h, 7))) / (2.0 * h);
                assert!((t.d_chosen - dc).abs() < 1e-6 && (t.d_rejected - dr).abs() < 1e-6, "{o:?} at ({}, {}): {t:?} vs ({dc}, {dr})", c.sum, r.sum);
            }
        }
    }

    #[test]
    fn dpo_sigmoid_is_log_2_when_the_policy_is_the_reference() {
        let o = Objective::Dpo { beta: 0.1, loss: DpoLoss::Sigmoid, label_smoothing: 0.0 };
        let (c, r) = (seq(-10.0, 3), seq(-12.0, 4));
        let t = o.pair_terms(c, r, Some((c, r)));
        assert!((t.loss - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!((t.reward_chosen, t.reward_rejected), (0.0, 0.0));
    }

    #[test]
    fn log_helpers_are_stable() {
        assert!((log_sigmoid(-800.0) + 800.0).abs() < 1e-9 && log_sigmoid(800.0).abs() < 1e-9);
        assert!((log1mexp(-1e-9) - (1e-9f64).ln()).abs() < 1e-6);
        assert!((log1mexp(-50.0) + (-50.0f64).exp()).abs() < 1e-30);
    }
}
