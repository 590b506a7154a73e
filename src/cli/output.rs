//! How commands print and write their results.

pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

pub use regionseek::pipeline::write_atomic;

/// The library says an index is busy; the command line says how to wait for it.
pub fn with_wait_hint(e: regionseek::index::IndexError) -> anyhow::Error {
    match e {
        regionseek::index::IndexError::Locked { .. } => {
            anyhow::anyhow!("{e} (--wait starts once the other is done)")
        }
        other => other.into(),
    }
}
