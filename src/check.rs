//! `sluice check`: validate every file, reach every source and sink, check prerequisites, and
//! print every problem with its fix.

use std::path::Path;

use crate::config::{Config, SourceKind};
use crate::sink::lake::LakeRoot;

/// One problem found, with what to do about it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub subject: String,
    pub problem: String,
    pub fix: String,
    /// A risk worth knowing that does not stop the pipeline (the exit code stays 0).
    pub warning: bool,
}

impl Finding {
    pub fn problem(subject: &str, problem: String, fix: String) -> Finding {
        Finding {
            subject: subject.to_string(),
            problem,
            fix,
            warning: false,
        }
    }

    pub fn warning(subject: &str, problem: String, fix: String) -> Finding {
        Finding {
            subject: subject.to_string(),
            problem,
            fix,
            warning: true,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.warning { "warning: " } else { "" };
        write!(
            f,
            "{kind}{}: {}\n    fix: {}",
            self.subject, self.problem, self.fix
        )
    }
}

/// Run every check. Returns the findings (empty when all is well).
pub async fn run(config_path: &Path) -> Vec<Finding> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            return errors
                .0
                .into_iter()
                .map(|p| {
                    Finding::problem(
                        &p.file.display().to_string(),
                        location_message(&p),
                        "edit the file as described".into(),
                    )
                })
                .collect();
        }
    };
    let mut findings = Vec::new();
    for source in &config.sources {
        match source.kind {
            SourceKind::Postgres => {
                findings.extend(crate::source::postgres::check::check(source).await)
            }
            other => findings.push(Finding::problem(
                &format!("source `{}`", source.name),
                format!("kind `{other:?}` is not supported by this build yet"),
                "use kind: postgres".into(),
            )),
        }
    }
    if !config.transform_files.is_empty() {
        findings.push(Finding::problem(
            "transforms",
            format!(
                "{} transform file(s) found; transforms are not supported by this build yet",
                config.transform_files.len()
            ),
            "remove them from the transforms folder for now".into(),
        ));
    }
    if let Err(e) = tokio::task::block_in_place(|| {
        LakeRoot::open(&config.daemon.sink.path).and_then(|lake| lake.check_writable())
    }) {
        findings.push(Finding::problem(
            "sink",
            format!("cannot write to `{}`: {e}", config.daemon.sink.path),
            "create the folder or fix its permissions".into(),
        ));
    }
    findings
}

fn location_message(p: &crate::config::ConfigProblem) -> String {
    match (p.line, p.column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: {}", p.message),
        (Some(l), None) => format!("line {l}: {}", p.message),
        _ => p.message.clone(),
    }
}
