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

/// The first I/O error among `e` and its causes.
pub(crate) fn io_error_in<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = c.source();
    }
    None
}

/// Whether an I/O error says the storage refuses writes until someone acts: full, over quota,
/// read-only, or not ours to write.
pub(crate) fn is_unwritable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem | K::PermissionDenied
    )
}
