//! Acknowledgements: the positions a commit covers flow back to the sources, which only then
//! confirm them to their database (or, in Kafka mode, the raw-topic transaction covers them).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::position::ResumePosition;

/// Positions the sink has committed, per source; sources acknowledge these to their database.
pub(crate) type CommittedPositions = Arc<BTreeMap<String, ResumePosition>>;

/// The receiving end sources watch for commits.
pub(crate) type Acks = watch::Receiver<CommittedPositions>;
