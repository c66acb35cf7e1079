//! `rowsync check`: validates the configuration, then prints one line per finding of the
//! pre-flight check (`engine::preflight`); exits non-zero on a failure.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::engine::preflight;

/// Runs the check on the file at `path` and prints its findings.
pub async fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ok   configuration {} is valid", config.path.display());
    let report = preflight::run(&config).await;
    for f in &report.findings {
        println!("{f}");
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
