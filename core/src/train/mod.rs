//! Fine-tuning: data (records, templates, loss masks), batching, the learning-rate
//! schedule, the optimizer, the step loop and the run engine around it ([`run`]). Files
//! are the caller's business: these modules take and return bytes and values, so the CLI
//! and the web app share them.

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod memory;
pub mod optimizer;
pub mod preference;
pub mod run;
pub mod schedule;
pub mod settings;
pub mod trainer;
