//! The suite against the embedded store, in memory and on a file.

use std::time::Duration;

use idemkv::{AsyncStore, Config, ManualClock, Store};
use idemkv_conformance::{BoxError, Harness, Setup, Subject};

/// An [`AsyncStore`] on a manual clock, with its file's directory (if any)
/// kept alive as long as the store.
struct Embedded {
    store: AsyncStore,
    clock: ManualClock,
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
}

fn config(setup: Setup, clock: &ManualClock) -> Config {
    Config::default()
        .clock(clock.clone())
        .lease(setup.lease)
        .retention(setup.retention)
        .max_response_bytes(setup.max_response_bytes)
        .max_checkpoint_bytes(setup.max_checkpoint_bytes)
        .sweep_batch(setup.sweep_batch)
        .sweep_interval(None)
}

/// Where the store keeps its records.
#[derive(Clone, Copy)]
enum Placement {
    InMemory,
    OnFile,
}

impl Harness for Placement {
    type Subject = Embedded;

    async fn open(&self, setup: Setup) -> Result<Embedded, BoxError> {
        let clock = ManualClock::default();
        let config = config(setup, &clock);
        let (store, dir) = match self {
            Placement::InMemory => (Store::in_memory(config)?, None),
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
