//! The sequence cut: replays of a source are dropped by sequence, so a restart from an older
//! position writes nothing twice.

use crate::event::{ChangeEvent, Seq};

/// Replays are cut by sequence: per raw stream, the highest sequence already taken, so an
/// event at or below it (a source re-reading from its last resumable position) is skipped.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqCut {
    high: std::collections::HashMap<String, Seq>,
}

impl SeqCut {
    pub(crate) fn new(high: std::collections::HashMap<String, Seq>) -> Self {
        SeqCut { high }
    }

    /// Take the event (true) or skip it as a replay (false).
    pub(crate) fn admit(&mut self, event: &ChangeEvent) -> bool {
        match self.high.get_mut(&event.table.stream) {
            Some(high) if event.seq <= *high => false,
            Some(high) => {
                *high = event.seq;
                true
            }
            None => {
                self.high.insert(event.table.stream.clone(), event.seq);
                true
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Seq)> {
        self.high.iter()
    }
}
