//! What every error of sluice can say about itself: whether retrying can help, and its causes in
//! one line. A leaf: the sources, the Kafka client, the sink and the topologies all classify
//! their errors with it.

/// Whether retrying can help. Materialize's split: definite errors mean the data or the setup is
/// wrong (stop with a clear message); transient ones are the network or a restarting server.
pub(crate) trait Classify {
    fn is_transient(&self) -> bool;
}

/// The error with its causes, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
