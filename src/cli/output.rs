//! How commands print and write their results.

pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

pub use regionseek::pipeline::write_atomic;
