//! Named failpoints at the exactly-once seams, where a test kills the process as `kill -9` would
//! and then proves that nothing was lost or written twice (`tests/failpoints.rs`).
//!
//! They are compiled in only with the `failpoints` feature (the test suite's build); without it
//! [`crash_point!`] expands to nothing. A test arms one with the `FAILPOINTS` environment
//! variable of the `fail` crate, `FAILPOINTS=<name>=return` (or `2*off->return` to let the first
//! two passes go by), and the process sends itself SIGKILL there: no destructor, flush or
//! shutdown path runs.
//!
//! | name | where |
//! |---|---|
//! | `lake.before_commit_record` | data files fsynced and published in `tmp/`, no commit record yet |
//! | `lake.after_commit_record` | the commit record renamed into place, data files still in `tmp/` |
//! | `sink.before_ack` | the commit done, its positions not yet handed to the sources |
//! | `kafka.inside_transaction` | a raw-topic transaction's records and offsets sent, not committed |
//! | `ods.before_state` | a new ODS version renamed into place, its merge state not yet written |
//!
//! A *stall point* instead pauses the thread that passes it, as a long garbage collection, a slow
//! disk or a long merge would, while the process's other threads (heartbeats) go on. A test arms
//! it with `FAILPOINTS=<name>=sleep(<ms>)`, or `3*off->1*sleep(<ms>)` for the fourth pass.
//!
//! | name | where |
//! |---|---|
//! | `sinks.before_commit` | a Kafka sink worker about to commit what it took from its partitions |

/// Kill the process here when the failpoint `$name` is armed.
#[cfg(feature = "failpoints")]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::failpoint::kill_self($name))
    };
}

/// Nothing, in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! crash_point {
    ($name:literal) => {};
}
pub(crate) use crash_point;

/// Pause here when the failpoint `$name` is armed with `sleep(<ms>)`.
#[cfg(feature = "failpoints")]
macro_rules! stall_point {
    ($name:literal) => {
        fail::fail_point!($name)
    };
}

/// Nothing, in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! stall_point {
    ($name:literal) => {};
}
pub(crate) use stall_point;

/// SIGKILL to this process: the closest a test can get to pulling the plug.
#[cfg(feature = "failpoints")]
pub(crate) fn kill_self(name: &str) -> ! {
    eprintln!("failpoint {name}: killing the process");
    // SAFETY: kill(2) with this process's own pid and a valid signal number has no memory
    // effects; SIGKILL cannot be caught, so the call does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}
