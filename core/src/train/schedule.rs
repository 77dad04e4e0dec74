//! Learning-rate schedules as transformers' get_scheduler computes them: the rate for
//! optimizer step k (counting from 0) rises linearly over the warmup steps, then stays
//! (constant), falls linearly to 0 (linear) or follows half a cosine to 0 (cosine).

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            other => Err(Error::invalid_setting("schedule", format!("unknown schedule \"{other}\" (expected constant, linear or cosine)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        }
    }

    pub fn lr(self, base: f32, step: usize, warmup: usize, total: usize) -> f32 {
        if step < warmup {
            return base * step as f32 / warmup.max(1) as f32;
        }
        let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        let factor = match self {
            Schedule::Constant => 1.0,
            Schedule::Linear => (1.0 - progress).max(0.0),
            Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        };
        base * factor as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        assert_eq!(Schedule::Linear.lr(1.0, 0, 2, 10), 0.0);
        assert_eq!(Schedule::Linear.lr(1.0, 1, 2, 10), 0.5);
        assert_eq!(Schedule::Linear.lr(1.0, 2, 2, 10), 1.0);
        assert_eq!(Schedule::Linear.lr(1.0, 6, 2, 10), 0.5);
        assert!((Schedule::Cosine.lr(1.0, 6, 2, 10) - 0.5).abs() < 1e-6);
        assert_eq!(Schedule::Constant.lr(1.0, 9, 2, 10), 1.0);
        assert_eq!(Schedule::Cosine.lr(1.0, 10, 0, 10), 0.0);
    }
}
