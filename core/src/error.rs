//! One error type for the core. Each variant is something a caller can act on; the message
//! says what is wrong and what was expected, never which flag or button to use: each front
//! end adds its own advice (the CLI names its flags, the web app its fields).

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Error {
    /// No GPU adapter matched, or the device could not be created.
    NoAdapter(String),
    /// The GPU could not hold what was asked of it (an allocation past its memory or past
    /// one of its buffer limits). Smaller batches, sequences or ranks, or a quantized base,
    /// need less.
    OutOfMemory(String),
    /// The GPU device was lost (a driver reset, a crash, a browser reclaiming it): the
    /// work since the last checkpoint is gone; a new context is needed.
    DeviceLost(String),
    /// Any other failure the GPU reported (a validation error, a failed readback).
    Gpu(String),
    /// Reading or writing `path` failed (the front ends' storage: files on disk, browser
    /// storage).
    Io { path: String, source: Arc<std::io::Error> },
    /// Bytes that do not hold what their format says. `origin` names the file and, where
    /// known, the position in it: the line or item of a data file, the tensor, the
    /// metadata key.
    BadFile { origin: String, detail: String, source: Option<Source> },
    /// A valid file that asks for something Hearth does not implement (an architecture, a
    /// rope scaling, a tokenizer model, an adapter type).
    Unsupported { origin: String, detail: String },
    /// A setting out of its range, or one that contradicts the model or the data. `setting`
    /// is its name in the run specification (`max_seq_len`, `r`, `template`, ...).
    InvalidSetting { setting: &'static str, detail: String },
    /// Training produced a NaN or infinite loss or gradient at optimizer step `step`
    /// (counted from 1); the adapter was not updated with it.
    Diverged { step: usize, detail: String },
    /// A model's output that should be a number is NaN or infinite (scoring, evaluation
    /// outside a training run).
    NotFinite(String),
    /// An op was called with sizes that disagree with its buffers or its rules.
    Shape(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The error underneath a bad file (a JSON or safetensors parser's), kept for callers that
/// walk the chain.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

impl Error {
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), source: Arc::new(source) }
    }

    pub fn bad_file(origin: impl fmt::Display, detail: impl Into<String>) -> Self {
        Error::BadFile { origin: origin.to_string(), detail: detail.into(), source: None }
    }

    /// A bad file's error with the parser's error underneath it (other variants unchanged).
    pub fn with_source(self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        match self {
            Error::BadFile { origin, detail, .. } => Error::BadFile { origin, detail, source: Some(Arc::new(e)) },
            other => other,
        }
    }

    /// [`Error::with_source`] for an error that comes boxed (the tokenizers crate's).
    pub fn with_boxed_source(self, e: Box<dyn std::error::Error + Send + Sync>) -> Self {
        match self {
            Error::BadFile { origin, detail, .. } => Error::BadFile { origin, detail, source: Some(Arc::from(e)) },
            other => other,
        }
    }

    pub fn unsupported(origin: impl fmt::Display, detail: impl Into<String>) -> Self {
        Error::Unsupported { origin: origin.to_string(), detail: detail.into() }
    }

    pub fn invalid_setting(setting: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidSetting { setting, detail: detail.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(f, "no usable GPU adapter: {m}"),
            Error::OutOfMemory(m) => write!(f, "the GPU ran out of memory: {m}"),
            Error::DeviceLost(m) => write!(f, "the GPU device was lost: {m}"),
            Error::Gpu(m) => write!(f, "GPU error: {m}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::BadFile { origin, detail, .. } => write!(f, "{origin}: {detail}"),
            Error::Unsupported { origin, detail } => write!(f, "{origin}: {detail}"),
            Error::InvalidSetting { setting, detail } => write!(f, "setting {setting}: {detail}"),
            Error::Diverged { step, detail } => write!(f, "training diverged at step {step}: {detail}"),
            Error::NotFinite(m) => write!(f, "not finite: {m}"),
            Error::Shape(m) => write!(f, "shape error: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source.as_ref()),
            Error::BadFile { source: Some(source), .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Returns a shape error unless `cond` holds; `msg` is built only on failure.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape(msg()))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    #[test]
    fn a_bad_file_keeps_the_parser_error_underneath() {
        let e = crate::train::data::parse_records("d.jsonl", "{\"prompt\": 1}\n{oops\n").unwrap_err();
        assert!(e.to_string().starts_with("d.jsonl line 2: not valid JSON"), "{e}");
        let source = e.source().expect("the JSON parser's error");
        assert!(source.downcast_ref::<serde_json::Error>().is_some(), "{source:?}");
        let e = crate::model::Tokenizer::from_hf(b"{}", None, None, "m").err().expect("not a tokenizer");
        assert!(e.to_string().starts_with("m/tokenizer.json: "), "{e}");
        assert!(e.source().is_some(), "the tokenizers crate's error stays underneath");
    }
}
