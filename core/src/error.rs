//! One error type for the core; every message says what was expected.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No GPU adapter matched, or the device could not be created.
    NoAdapter(String),
    /// An op was called with sizes that disagree with its buffers or its rules.
    Shape(String),
    /// A GPU-side failure: out of memory, device lost, a failed readback.
    Gpu(String),
    /// Bytes that do not hold what their format says.
    Format(String),
    /// Training produced a NaN or infinite loss or gradient.
    NonFinite(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(f, "no usable GPU adapter: {m}"),
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::Gpu(m) => write!(f, "GPU error: {m}"),
            Error::Format(m) => write!(f, "format error: {m}"),
            Error::NonFinite(m) => write!(f, "training diverged: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Returns a shape error unless `cond` holds; `msg` is built only on failure.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape(msg()))
    }
}
