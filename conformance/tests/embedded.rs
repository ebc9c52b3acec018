//! The suite against the embedded store: in memory, on a file, and on a
//! file with the replay cache off.

use std::time::Duration;

use idemkv::fault_injection::WriteFaults;
use idemkv::{AsyncStore, Config, ManualClock, Store};
use idemkv_conformance::{BoxError, Fault, Harness, Setup, Skipped, Subject};

/// An [`AsyncStore`] on a manual clock, with its file's directory (if any)
/// kept alive as long as the store.
struct Embedded {
    store: AsyncStore,
    clock: ManualClock,
    /// The switch that fails the store's next commit (`None` in memory: a
    /// store without a file cannot heal from a failed commit).
    faults: Option<WriteFaults>,
    _dir: Option<tempfile::TempDir>,
}

impl Subject for Embedded {
    type Backend = AsyncStore;

    fn backend(&self) -> &AsyncStore {
        &self.store
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn sweep(&self) -> idemkv::Result<u64> {
        self.store.blocking().sweep_expired()
    }

    async fn inject(&self, fault: Fault) -> Result<(), BoxError> {
        let Some(faults) = &self.faults else {
            return Err(Skipped(
                "an in-memory store cannot heal from a failed commit (it has no file to reopen); \
                 the placements on a file run this case"
                    .into(),
            )
            .into());
        };
        match fault {
            Fault::BeforeLanding => faults.fail_next_commit(),
            Fault::AnswerLost => faults.lose_next_answer(),
        }
        Ok(())
    }
}

fn config(setup: Setup, clock: &ManualClock) -> Config {
    Config::default()
        .clock(clock.clone())
        .lease(setup.lease)
        .retention(setup.retention)
        .max_response_bytes(setup.max_response_bytes)
        .max_recovery_point_bytes(setup.max_recovery_point_bytes)
        .sweep_batch(setup.sweep_batch)
        .sweep_interval(None)
}

/// Where the store keeps its records.
#[derive(Clone, Copy)]
enum Placement {
    InMemory,
    OnFile,
    /// On a file, with the replay cache off: every answer comes from the
    /// file, so a case cannot pass on what the cache remembers.
    OnFileWithoutCache,
}

impl Harness for Placement {
    type Subject = Embedded;

    async fn open(&self, setup: Setup) -> Result<Embedded, BoxError> {
        let clock = ManualClock::default();
        let faults = WriteFaults::default();
        let config = config(setup, &clock).write_faults(faults.clone());
        let (store, dir) = match self {
            Placement::InMemory => (Store::in_memory(config)?, None),
            Placement::OnFileWithoutCache => {
                let dir = tempfile::tempdir()?;
                (
                    Store::open(dir.path().join("suite.redb"), config.cache_bytes(0))?,
                    Some(dir),
                )
            }
            Placement::OnFile => {
                let dir = tempfile::tempdir()?;
                (
                    Store::open(dir.path().join("suite.redb"), config)?,
                    Some(dir),
                )
            }
        };
        Ok(Embedded {
            store: store.to_async(),
            clock,
            faults: dir.is_some().then_some(faults),
            _dir: dir,
        })
    }
}

mod in_memory {
    idemkv_conformance::suite!(super::Placement::InMemory);
}

mod on_file {
    idemkv_conformance::suite!(super::Placement::OnFile);
}

mod on_file_without_replay_cache {
    idemkv_conformance::suite!(super::Placement::OnFileWithoutCache);
}
