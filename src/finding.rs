//! A problem `sluice check` found, with what to do about it. A leaf, so that every component can
//! check its own prerequisites (sources, the Kafka client, the lake) without depending on the
//! command that prints them.

/// One problem found, with what to do about it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub(crate) subject: String,
    pub(crate) problem: String,
    pub(crate) fix: String,
    /// A risk worth knowing that does not stop the pipeline (the exit code stays 0).
    pub warning: bool,
}

impl Finding {
    pub(crate) fn problem(subject: &str, problem: String, fix: String) -> Finding {
        Finding {
            subject: subject.to_string(),
            problem,
            fix,
            warning: false,
        }
    }

    pub(crate) fn warning(subject: &str, problem: String, fix: String) -> Finding {
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
