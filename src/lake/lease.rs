//! One live writer per lake (in Kafka mode, per writer's part of it): the lease.
//!
//! ```text
//! <base>/leases/<epoch>.json   {"holder": "host/pid/token", "epoch": 7, "beat": 42, ...}
//! ```
//!
//! A process takes the lake by creating the next epoch's lease file, create-if-absent (the same
//! exclusive step as commit records, see `Store::create_new`), so two processes can never hold
//! one epoch. The holder rewrites its own file every [`RENEW_EVERY`] (the beat). Another process
//! that finds a live lease waits, naming the holder; it takes over when the beat has not moved
//! for [`EXPIRES_AFTER`] by its own clock (no clocks are compared across machines), when the
//! holder released the lake on a clean stop, or at once when the holder was a process of this
//! host that no longer exists (a `kill -9` restarted by systemd need not wait).
//!
//! The lease only keeps live writers apart politely; correctness does not rest on timing. The
//! commit log is the fence: a new holder's first act is a commit record of its epoch
//! (`LakeRoot::recover`), and every commit record is created only if absent, so a paused or
//! partitioned old holder that wakes up fails at its next commit ("fenced") and stops, before it
//! moves or deletes anything.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::store::Store;

/// How often the holder renews its lease.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long a lease's beat must stand still before another process takes the lake over.
pub(crate) const EXPIRES_AFTER: Duration = Duration::from_secs(10);
/// How often a waiting process looks at the lease again.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How many old lease files to keep, for the record.
const KEEP_LEASES: u64 = 5;

/// A lease file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    /// `<host>/<pid>/<random token>`: who holds it, in words an operator can act on.
    holder: String,
    epoch: u64,
    /// Bumped at every renewal: a waiting process watches it move.
    beat: u64,
    renewed_at_ms: i64,
    /// Set by a holder that stopped cleanly: the next process need not wait.
    #[serde(default)]
    released: bool,
}

/// What a holder's lake handle needs to know: its epoch, and whether it was fenced.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) epoch: u64,
    pub(crate) holder: String,
    /// `Some(new holder)` once the heartbeat saw a newer epoch.
    fenced: watch::Receiver<Option<String>>,
}

impl Claim {
    /// The holder that took the lake over from us, if one did.
    pub(crate) fn fenced_by(&self) -> Option<String> {
        self.fenced.borrow().clone()
    }
}

#[cfg(test)]
impl Claim {
    /// A claim on `epoch` that nobody fences (for tests of the commit log alone).
    pub(crate) fn for_test(epoch: u64) -> Claim {
        Claim {
            epoch,
            holder: format!("test/{epoch}"),
            fenced: watch::channel(None).1,
        }
    }
}

/// A held lease, renewed on a blocking thread until it is released or dropped.
pub(crate) struct Lease {
    claim: Claim,
    store: Store,
    dir: String,
    stop: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

/// The result of waiting for the lake.
pub(crate) enum Acquired {
    Held(Lease),
    /// The daemon was asked to stop while it waited.
    ShutDown,
}

/// Take the lease in `<base>/leases/`, waiting while another live process holds it. `floor` is
/// the highest epoch the commit log has seen (so that a deleted lease folder cannot reuse an
/// epoch); `waiting` is called with the holder's name whenever the wait starts on a new holder.
pub(crate) async fn acquire(
    store: Store,
    base: &str,
    floor: u64,
    mut shutdown: watch::Receiver<bool>,
    mut waiting: impl FnMut(&str),
) -> io::Result<Acquired> {
    let dir = format!("{base}/leases");
    let me = holder_name();
    // The lease last seen, and since when (by our clock) it has not moved.
    let mut watched: Option<(LeaseRecord, Instant)> = None;
    loop {
        let current = tokio::task::block_in_place(|| latest_lease(&store, &dir))?;
        let take = match &current {
            None => Some(floor + 1),
            Some(lease) if lease.released => Some(lease.epoch.max(floor) + 1),
            Some(lease) if holder_is_gone(&lease.holder) => {
                tracing::info!(holder = %lease.holder, "the lake's last holder, a process of this host, is gone: taking the lake over");
                Some(lease.epoch.max(floor) + 1)
            }
            Some(lease) => {
                let since = match &watched {
                    Some((seen, since)) if seen.epoch == lease.epoch && seen.beat == lease.beat => {
                        *since
                    }
                    _ => {
                        if watched
                            .as_ref()
                            .is_none_or(|(seen, _)| seen.holder != lease.holder)
                        {
                            tracing::warn!(holder = %lease.holder, epoch = lease.epoch, "the lake is held by another sluice process: waiting for it to stop (or to stop renewing its lease for {EXPIRES_AFTER:?})");
                            waiting(&lease.holder);
                        }
                        watched = Some((lease.clone(), Instant::now()));
                        Instant::now()
                    }
                };
                if since.elapsed() >= EXPIRES_AFTER {
                    tracing::warn!(holder = %lease.holder, "the lake's holder stopped renewing its lease: taking the lake over");
                    Some(lease.epoch.max(floor) + 1)
                } else {
                    None
                }
            }
        };
        if let Some(epoch) = take {
            let record = LeaseRecord {
                holder: me.clone(),
                epoch,
                beat: 0,
                renewed_at_ms: chrono::Utc::now().timestamp_millis(),
                released: false,
            };
            match tokio::task::block_in_place(|| create_lease(&store, &dir, &record)) {
                Ok(()) => {
                    tracing::info!(epoch, holder = %me, "holding the lake");
                    return Ok(Acquired::Held(Lease::start(store, dir, record)));
                }
                // Another process took this epoch first: watch its lease instead.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(Acquired::ShutDown),
        }
    }
}

impl Lease {
    fn start(store: Store, dir: String, record: LeaseRecord) -> Lease {
        let (fenced_tx, fenced) = watch::channel(None);
        let claim = Claim {
            epoch: record.epoch,
            holder: record.holder.clone(),
            fenced,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (store, dir, stop) = (store.clone(), dir.clone(), stop.clone());
            let runtime = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("lake-lease".into())
                .spawn(move || {
                    let _entered = runtime.enter();
                    renew_until_stopped(&store, &dir, record, &stop, &fenced_tx)
                })
                .ok()
        };
        Lease {
            claim,
            store,
            dir,
            stop,
            heartbeat,
        }
    }

    pub(crate) fn claim(&self) -> Claim {
        self.claim.clone()
    }

    /// Stop renewing and mark the lease released, so that the next process starts at once.
    pub(crate) fn release(mut self) {
        self.stop_heartbeat();
        if self.claim.fenced_by().is_some() {
            return; // not ours any more
        }
        let record = LeaseRecord {
            holder: self.claim.holder.clone(),
            epoch: self.claim.epoch,
            beat: u64::MAX,
            renewed_at_ms: chrono::Utc::now().timestamp_millis(),
            released: true,
        };
        let path = lease_path(&self.dir, self.claim.epoch);
        let released = serde_json::to_vec_pretty(&record)
            .map_err(io::Error::other)
            .and_then(|bytes| tokio::task::block_in_place(|| self.store.put_atomic(&path, &bytes)));
        match released {
            Ok(()) => tracing::info!(epoch = self.claim.epoch, "released the lake"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the lake's lease: the next process waits for it to expire")
            }
        }
    }

    fn stop_heartbeat(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// The heartbeat: rewrite our lease file every [`RENEW_EVERY`] until stopped, or until a newer
/// epoch shows that another process took the lake over (then say so on `fenced` and stop).
fn renew_until_stopped(
    store: &Store,
    dir: &str,
    mut record: LeaseRecord,
    stop: &AtomicBool,
    fenced: &watch::Sender<Option<String>>,
) {
    let mut last_error_logged: Option<Instant> = None;
    loop {
        let next = Instant::now() + RENEW_EVERY;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let renewed = latest_lease(store, dir).and_then(|latest| match latest {
            Some(newer) if newer.epoch > record.epoch => Ok(Some(newer.holder)),
            _ => {
                record.beat += 1;
                record.renewed_at_ms = chrono::Utc::now().timestamp_millis();
                let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
                store.put_atomic(&lease_path(dir, record.epoch), &bytes)?;
                Ok(None)
            }
        });
        match renewed {
            Ok(Some(holder)) => {
                tracing::error!(%holder, "another sluice process took the lake over: this one stops writing to it");
                fenced.send_replace(Some(holder));
                return;
            }
            Ok(None) => {}
            // Keep trying: a lake that cannot be reached cannot be committed to either, and the
            // commit log fences us if another process takes over meanwhile.
            Err(e) => {
                if last_error_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "could not renew the lake's lease");
                    last_error_logged = Some(Instant::now());
                }
            }
        }
    }
}

/// Who holds the lease in `<base>/leases/`, for messages.
pub(crate) fn current_holder(store: &Store, base: &str) -> Option<String> {
    let lease = latest_lease(store, &format!("{base}/leases")).ok()??;
    Some(format!("{} (lease epoch {})", lease.holder, lease.epoch))
}

fn lease_path(dir: &str, epoch: u64) -> String {
    format!("{dir}/{epoch:020}.json")
}

/// The lease of the highest epoch in `dir`.
fn latest_lease(store: &Store, dir: &str) -> io::Result<Option<LeaseRecord>> {
    let Some(epoch) = store.numbered_records(dir)?.pop() else {
        return Ok(None);
    };
    let bytes = store.get(&lease_path(dir, epoch))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("lease {epoch} in {dir} is unreadable: {e}"),
        )
    })
}

/// Create the lease file of `record.epoch`, only if no process created it first; drop old ones.
fn create_lease(store: &Store, dir: &str, record: &LeaseRecord) -> io::Result<()> {
    store.mkdirs(dir)?;
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    let scratch = format!("{dir}/.{}-{:016x}", record.epoch, rand::random::<u64>());
    store.create_new(&lease_path(dir, record.epoch), &scratch, &bytes)?;
    if record.epoch > KEEP_LEASES {
        let _ = store.delete(&lease_path(dir, record.epoch - KEEP_LEASES));
    }
    Ok(())
}

/// `<host>/<pid>/<token>`: the token tells two runs of one pid apart.
fn holder_name() -> String {
    format!(
        "{}/{}/{:08x}",
        host_name(),
        std::process::id(),
        rand::random::<u32>()
    )
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether `holder` names a process of this host that no longer runs. Conservative: any doubt
/// (another host, no /proc) means "maybe alive", and the lease is left to expire.
fn holder_is_gone(holder: &str) -> bool {
    let mut parts = holder.split('/');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name()
        && pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, epoch: u64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            epoch,
            beat: 0,
            renewed_at_ms: 0,
            released: false,
        }
    }

    #[test]
    fn only_one_process_creates_an_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        create_lease(&store, "_sluice/leases", &record("a", 1)).unwrap();
        let second = create_lease(&store, "_sluice/leases", &record("b", 1)).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AlreadyExists);
        let latest = latest_lease(&store, "_sluice/leases").unwrap().unwrap();
        assert_eq!(latest.holder, "a");
        // No scratch file is left behind by the loser.
        assert_eq!(store.list_files("_sluice/leases").unwrap().len(), 1);
    }

    #[test]
    fn a_process_of_this_host_that_is_gone_is_recognised() {
        let me = holder_name();
        assert!(!holder_is_gone(&me), "this process is alive");
        // pid_max on Linux is at most 2^22: this pid cannot exist.
        let gone = format!("{}/{}/00000000", host_name(), 1u32 << 23);
        assert!(holder_is_gone(&gone));
        let elsewhere = format!("another-host-{}/{}/00000000", host_name(), 1u32 << 23);
        assert!(
            !holder_is_gone(&elsewhere),
            "another host's process may be alive"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_process_waits_for_a_live_holder_and_takes_a_released_lake() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let (_stop, shutdown) = watch::channel(false);
        let Acquired::Held(first) = acquire(
            Store::open(&path).unwrap(),
            "_sluice",
            0,
            shutdown.clone(),
            |_| {},
        )
        .await
        .unwrap() else {
            panic!("an empty lake is free")
        };
        assert_eq!(first.claim().epoch, 1);
        // A holder that renews: the second waits (it names the holder) until the first releases.
        let (named_tx, mut named) = tokio::sync::mpsc::unbounded_channel();
        let second = tokio::spawn(acquire(
            Store::open(&path).unwrap(),
            "_sluice",
            0,
            shutdown.clone(),
            move |holder| {
                let _ = named_tx.send(holder.to_string());
            },
        ));
        let holder = named.recv().await.unwrap();
        assert_eq!(holder, first.claim().holder);
        assert!(!second.is_finished());
        first.release();
        let Acquired::Held(second) = second.await.unwrap().unwrap() else {
            panic!("a released lake is free")
        };
        assert_eq!(second.claim().epoch, 2);
    }
}
