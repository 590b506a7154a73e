//! How commands print and write their results.

pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Writes a file so that it is either absent or complete (see `regionseek::pipeline::write_atomic`).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(regionseek::pipeline::write_atomic(path, bytes)?)
}
