//! A checkpoint folder's files: the adapter in PEFT's format (loadable as is), the
//! optimizer's moments, and trainer_state.json with the step and the settings that fix the
//! data order, which a resumed run must share.

use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

use super::trainer::{TrainConfig, TrainerState};
use crate::io::hf_export::{write_tensors, ExportDtype};
use crate::lora::{peft, Adapter};
use crate::{Error, Result};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The settings a resumed run must share with the one that wrote the checkpoint.
/// `frozen_reference`: DPO's reference is the starting adapter (so a resume needs it again).
fn fingerprint(cfg: &TrainConfig, train_examples: usize, frozen_reference: bool) -> Value {
    let mut run = json!({
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "train_examples": train_examples,
        "r": cfg.lora.r,
        "targets": cfg.lora.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
    });
    // only preference runs name it: supervised checkpoints from before it stay resumable
    if cfg.objective.is_preference() {
        run["objective"] = json!(format!("{:?}", cfg.objective));
    }
    if frozen_reference {
        run["reference"] = json!("the starting adapter");
    }
    run
}

/// Every file of a checkpoint as (name, bytes).
pub fn files(
    adapter: &Adapter,
    base_model: &str,
    moments: &[(Vec<f32>, Vec<f32>)],
    state: &TrainerState,
    cfg: &TrainConfig,
    train_examples: usize,
    frozen_reference: bool,
) -> Result<Vec<(String, Vec<u8>)>> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = moments
        .iter()
        .enumerate()
        .flat_map(|(i, (m, v))| [(format!("{i}.exp_avg"), vec![m.len()], m.clone()), (format!("{i}.exp_avg_sq"), vec![v.len()], v.clone())])
        .collect();
    let st = json!({
        "step": state.step,
        "best_eval_loss": state.best_eval_loss,
        "evals_since_best": state.evals_since_best,
        "run": fingerprint(cfg, train_examples, frozen_reference),
    });
    let mut files = peft::files(adapter, base_model)?;
    files.push((OPTIMIZER_FILE.into(), write_tensors(&tensors, ExportDtype::F32)?));
    files.push((STATE_FILE.into(), serde_json::to_vec_pretty(&st).expect("json")));
    Ok(files)
}

/// What a run needs to continue from a checkpoint.
pub struct Restored {
    pub adapter: Adapter,
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
    pub state: TrainerState,
}

/// Reads a checkpoint's files (`read(name)` returns a file's bytes) and checks that it
/// belongs to a run with these settings.
pub fn read(dir: &str, read: &dyn Fn(&str) -> Result<Vec<u8>>, cfg: &TrainConfig, train_examples: usize, frozen_reference: bool) -> Result<Restored> {
    let state_bytes = read(STATE_FILE)?;
    let st: Value = serde_json::from_slice(&state_bytes).map_err(|e| Error::bad_file(format!("{dir}/{STATE_FILE}"), format!("not valid JSON ({e})")).with_source(e))?;
    let want = fingerprint(cfg, train_examples, frozen_reference);
    if st.get("run") != Some(&want) {
        return Err(Error::bad_file(dir, format!("the checkpoint was written by a run with {}, this run has {want}; resume with the same data, seed, batch size, accumulation, r, targets, objective and starting adapter",
            st.get("run").unwrap_or(&Value::Null)
        )));
    }
    let step = st.get("step").and_then(Value::as_u64).ok_or_else(|| Error::bad_file(format!("{dir}/{STATE_FILE}"), "\"step\" is missing"))? as usize;
    let state = TrainerState {
        step,
        best_eval_loss: st.get("best_eval_loss").and_then(Value::as_f64),
        evals_since_best: st.get("evals_since_best").and_then(Value::as_u64).unwrap_or(0) as usize,
    };
    let config = String::from_utf8(read(peft::CONFIG_FILE)?).map_err(|_| Error::bad_file(format!("{dir}/{}", peft::CONFIG_FILE), "not UTF-8"))?;
    let adapter = peft::read(&config, &read(peft::WEIGHTS_FILE)?, dir)?;
    let opt_bytes = read(OPTIMIZER_FILE)?;
    let st = SafeTensors::deserialize(&opt_bytes).map_err(|e| Error::bad_file(format!("{dir}/{OPTIMIZER_FILE}"), format!("not a valid safetensors file ({e})")).with_source(e))?;
    let get = |name: String| -> Result<Vec<f32>> {
        let t = st.tensor(&name).map_err(|_| Error::bad_file(format!("{dir}/{OPTIMIZER_FILE}"), format!("tensor {name} is missing")))?;
        if t.dtype() != Dtype::F32 {
            return Err(Error::bad_file(format!("{dir}/{OPTIMIZER_FILE}"), format!("tensor {name} is not F32")));
        }
        Ok(bytemuck::pod_collect_to_vec(t.data()))
    };
    let moments = (0..st.len() / 2).map(|i| Ok((get(format!("{i}.exp_avg"))?, get(format!("{i}.exp_avg_sq"))?))).collect::<Result<Vec<_>>>()?;
    Ok(Restored { adapter, moments, state })
}
