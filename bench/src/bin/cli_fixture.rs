//! Writes the store file the command line is timed on (docs/benchmarks.md):
//! `cli_fixture PATH [RECORDS]` (default 100,000): 1% of them in flight with
//! leases that ended 50 minutes ago, the rest completed with 256-byte
//! bodies, over 50 scopes, all written an hour ago and kept for a day.

use std::time::{Duration, SystemTime};

use idemkv::{Begin, Config, Durability, Fingerprint, Key, ManualClock, Store, StoredResponse};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: cli_fixture PATH [RECORDS]")?;
    let records: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let clock = ManualClock::new(SystemTime::now() - Duration::from_secs(3600));
    let config = Config::default()
        .clock(clock)
        .durability(Durability::None)
        .lease(Duration::from_secs(600))
        .retention(Duration::from_secs(24 * 3600))
        .sweep_interval(None);
    let store = Store::open(&path, config)?;
    for i in 0..records {
        let key = Key::new(
            &format!("tenant-{} POST /v1/charges", i % 50),
            &format!("order-{i}"),
        )?;
        let Begin::Claimed(claim) = store.begin(&key, Fingerprint::of(&i.to_le_bytes()))? else {
            return Err(format!("{key} was not new: use a fresh PATH").into());
        };
        if i % 100 == 0 {
            // Left in flight: its lease ends ten minutes after the claim.
            drop(claim);
            continue;
        }
        let response = StoredResponse::new(201, vec![b'x'; 256])
            .with_header("content-type", "application/json");
        store.complete(claim, response)?;
    }
    store.close()?;
    println!("{records} records in {path}");
    Ok(())
}
