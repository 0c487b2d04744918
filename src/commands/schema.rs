//! `nsync schema`: the JSON Schema of pipeline files.

use std::process::ExitCode;

use nsync_engine::Registry;

pub fn schema(registry: &Registry) -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(&nsync_engine::schema::pipeline_schema(registry))?
    );
    Ok(ExitCode::SUCCESS)
}
