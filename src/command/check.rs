//! `sluice check`: validate every file, reach every source and sink, check prerequisites, and
//! print every problem with its fix.

use std::path::Path;

use crate::finding::Finding;
use crate::lake::commit::LakeRoot;
use crate::transform::TransformDef;

/// Run every check. Returns the findings (empty when all is well).
pub async fn run(config_path: &Path) -> Vec<Finding> {
    let (config, transforms) = match crate::transform::load::load(config_path) {
        Ok(loaded) => loaded,
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
        let (found, tables) = crate::source::check(source).await;
        if !tables.is_empty() {
            reached.push(source.name.clone());
        }
        findings.extend(found);
        schemas.extend(tables);
    }
    findings.extend(check_transforms(&transforms, &schemas, &reached));
    if config.daemon.log.kind == crate::config::LogKind::Kafka {
        let settings = crate::kafka::KafkaSettings::new(
            config.daemon.log.kafka_config(),
            &config.daemon.pipeline,
            None,
        );
        findings.extend(crate::kafka::check::check(&settings, &named_streams(&transforms)).await);
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

/// Every stream the transforms name: their inputs, outputs and dead letters.
fn named_streams(transforms: &[TransformDef]) -> Vec<String> {
    transforms
        .iter()
        .flat_map(|t| [t.from.clone(), t.name.clone(), t.dlq.clone()])
        .collect()
}

/// Plan every transform against the live schema of the table it reads: unknown columns and
/// type errors show here, before the daemon runs.
fn check_transforms(
    transforms: &[TransformDef],
    schemas: &[crate::event::TableSchema],
    reached: &[String],
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for t in transforms {
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
