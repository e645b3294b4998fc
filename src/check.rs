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
    let mut schemas = Vec::new();
    let mut reached = Vec::new();
    for source in &config.sources {
        let (found, tables) = match source.kind {
            SourceKind::Mysql => crate::source::mysql::check::check(source).await,
            SourceKind::Mongodb => crate::source::mongodb::check::check(source).await,
            SourceKind::Postgres => crate::source::postgres::check::check(source).await,
        };
        if !tables.is_empty() {
            reached.push(source.name.clone());
        }
        findings.extend(found);
        schemas.extend(tables);
    }
    findings.extend(check_transforms(&config, &schemas, &reached));
    if config.daemon.log.kind == crate::config::LogKind::Kafka {
        let settings = crate::log::kafka::KafkaSettings::new(
            config.daemon.log.kafka_config(),
            &config.daemon.pipeline,
            None,
        );
        findings.extend(crate::log::kafka::check::check(&settings, &config).await);
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

/// Plan every transform against the live schema of the table it reads: unknown columns and
/// type errors show here, before the daemon runs.
fn check_transforms(
    config: &Config,
    schemas: &[crate::event::TableSchema],
    reached: &[String],
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for t in &config.transforms {
        let subject = format!("{}:{}", t.file.display(), t.select_line);
        match schemas.iter().find(|s| s.stream == t.from) {
            Some(raw) => {
                if let Err(e) =
                    crate::transform::plan::compile(t, &std::sync::Arc::new(raw.clone()))
                {
                    findings.push(Finding::problem(
                        &subject,
                        e.message,
                        "edit the SELECT (column names and types are the source table's)".into(),
                    ));
                }
            }
            None if reached.iter().any(|r| t.from.starts_with(&format!("{r}."))) => {
                findings.push(Finding::problem(
                    &subject,
                    format!(
                        "unknown stream `{}`: its source captures no such table",
                        t.from
                    ),
                    "fix FROM, or add the table to the source's `tables`".into(),
                ));
            }
            None => {} // the source could not be reached: reported above
        }
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
