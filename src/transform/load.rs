//! Loading a pipeline's configuration with its transforms: `sluice.yaml` and the files it names
//! (the leaf `crate::config`), then every `transforms/*.sql` parsed ([`super::definition`]) and
//! checked against the sources, with every problem of all files reported at once.

use std::collections::BTreeSet;
use std::path::Path;

use super::TransformDef;
use super::definition::parse_file;
use crate::config::{
    Config, ConfigErrors, ConfigProblem, DaemonConfig, SourceConfig, Zone, problem,
};

/// `sluice.yaml`, its sources and its transforms, every file parsed and checked.
pub fn load(path: &Path) -> Result<(Config, Vec<TransformDef>), ConfigErrors> {
    let mut transforms = Vec::new();
    let config = Config::load_with(path, |config, problems| {
        for file in &config.transform_files {
            match parse_file(file) {
                Ok(t) => transforms.push(t),
                Err(p) => problems.push(p),
            }
        }
        validate_transforms(path, &config.daemon, &config.sources, &transforms, problems);
    })?;
    Ok((config, transforms))
}

/// Transforms must read a stream some source captures, and name streams of their own.
fn validate_transforms(
    path: &Path,
    daemon: &DaemonConfig,
    sources: &[SourceConfig],
    transforms: &[TransformDef],
    problems: &mut Vec<ConfigProblem>,
) {
    let at_select = |t: &TransformDef, message: String| ConfigProblem {
        file: t.file.clone(),
        line: Some(t.select_line),
        column: None,
        message,
    };
    let mut names = BTreeSet::new();
    for t in transforms {
        if !names.insert(t.name.clone()) {
            problems.push(problem(
                &t.file,
                format!(
                    "stream `{}` is created by another transform file too",
                    t.name
                ),
            ));
        }
        let (source_name, table) = t.from.split_once('.').unwrap_or((&t.from, ""));
        match sources.iter().find(|s| s.name == source_name) {
            None => problems.push(at_select(
                t,
                format!(
                    "unknown stream `{}`: FROM names a raw stream `<source>.<schema>.<table>`, and no source is called `{source_name}` (sources: {})",
                    t.from,
                    sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
            Some(s) if !s.tables.iter().any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(table))) => {
                problems.push(at_select(
                    t,
                    format!(
                        "unknown stream `{}`: source `{}` captures {:?}, which does not include `{table}`",
                        t.from, s.name, s.tables
                    ),
                ))
            }
            Some(_) => {}
        }
        if sources
            .iter()
            .any(|s| t.name.starts_with(&format!("{}.", s.name)))
        {
            problems.push(problem(
                &t.file,
                format!(
                    "stream name `{}` starts with a source's name: that is how raw streams are named; choose another prefix, e.g. clean.",
                    t.name
                ),
            ));
        }
    }
    if !transforms.is_empty() && !daemon.sink.zones.contains(&Zone::Cleansed) {
        problems.push(problem(
            path,
            "transforms are defined but sink.zones does not include `cleansed`: add it, e.g. zones: [raw, cleansed, ods]".into(),
        ));
    }
}
