//! A simulated disk under a whole store: the store's file (a
//! `StorageBackend`) and its journal directory (a `JournalDir`, under the
//! journal's real segment-creation code), with a file system's durability
//! rules and a power cut that keeps only what they make durable.
//!
//! - A file's bytes and length are durable once its sync returns; until
//!   then each write (and each length change) is pending.
//! - A directory entry (a created, renamed or removed file) is durable once
//!   the directory's sync returns.
//! - A power cut, at a chosen disk operation, stops the disk: that
//!   operation and every later one fail with an I/O error, as if the
//!   process had died there. [`SimDisk::restart`] then brings back what a
//!   machine would find: the synced directory entries, each file's synced
//!   bytes, and of its pending writes a random subset of 512-byte sectors
//!   (torn writes included), drawn from the run's seed.
//! - A full disk: once the disk's bytes pass a limit, a write that grows a
//!   file fails with `StorageFull` until the limit is lifted.
//!
//! Every disk operation is counted, so a run is the same for the same seed
//! as long as the store's threads make the same calls in the same order
//! (the simulation turns off the writeback thread and the timed
//! checkpoints for that).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use idemkv::StorageBackend;
use idemkv::fault_injection::{JournalDir, SegmentFile};

/// Sector size of torn writes.
const SECTOR: usize = 512;

/// A deterministic generator (SplitMix64): the simulation's one source of
/// randomness.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// One change to a file not yet synced.
#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A file's bytes: what reads see, and what a power cut keeps.
#[derive(Clone, Debug, Default)]
struct FileData {
    now: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<Pending>,
}

impl FileData {
    fn write(&mut self, offset: u64, data: &[u8]) {
        apply_write(&mut self.now, offset, data);
        self.pending.push(Pending::Write {
            offset,
            data: data.to_vec(),
        });
    }

    fn set_len(&mut self, len: u64) {
        self.now.resize(len as usize, 0);
        self.pending.push(Pending::SetLen(len));
    }

    fn sync(&mut self) {
        self.synced = self.now.clone();
        self.pending.clear();
    }

    /// What a power cut leaves: the synced bytes, then each pending change
    /// in order, a length change whole or not at all and a write sector by
    /// sector, each with probability one half.
    fn cut(&mut self, rng: &mut Rng) {
        let mut kept = self.synced.clone();
        for change in self.pending.drain(..) {
            match change {
                Pending::SetLen(len) => {
                    if rng.one_in(2) {
                        kept.resize(len as usize, 0);
                    }
                }
                Pending::Write { offset, data } => {
                    for (i, sector) in data.chunks(SECTOR).enumerate() {
                        if rng.one_in(2) {
                            apply_write(&mut kept, offset + (i * SECTOR) as u64, sector);
                        }
                    }
                }
            }
        }
        self.now = kept.clone();
        self.synced = kept;
    }
}

fn apply_write(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

/// Fills `out` from `bytes` at `offset`, as a file's read would.
fn read_from(bytes: &[u8], offset: u64, out: &mut [u8]) -> io::Result<()> {
    let start = offset as usize;
    let source = bytes
        .get(start..start + out.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
    out.copy_from_slice(source);
    Ok(())
}

type Inode = u64;

/// The whole simulated machine's disk.
#[derive(Debug, Default)]
struct World {
    store_file: FileData,
    dir_exists: bool,
    entries: BTreeMap<String, Inode>,
    synced_entries: BTreeMap<String, Inode>,
    inodes: HashMap<Inode, FileData>,
    next_inode: Inode,
    /// Disk operations so far.
    ops: u64,
    /// The operation at which the power goes.
    cut_at: Option<u64>,
    /// The power is gone: every operation fails.
    down: bool,
    /// Total bytes the disk holds before a growing write fails.
    space: Option<u64>,
    /// What happened, for a failure's trace (the last entries).
    log: Vec<String>,
}

impl World {
    /// Counts one operation; fails it if the power is (or goes) down.
    fn op(&mut self, what: impl FnOnce() -> String) -> io::Result<()> {
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.down = true;
            self.log
                .push(format!("op {}: power cut at {}", self.ops, what()));
        }
        if self.down {
            return Err(io::Error::other("simulated power cut"));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.store_file.now.len() as u64
            + self
                .inodes
                .values()
                .map(|f| f.now.len() as u64)
                .sum::<u64>()
    }

    /// Fails a change that would grow the disk past its space.
    fn room_for(&self, old_len: usize, new_end: u64) -> io::Result<()> {
        if let Some(space) = self.space {
            let growth = new_end.saturating_sub(old_len as u64);
            if growth > 0 && self.used() + growth > space {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
        }
        Ok(())
    }

    fn inode(&mut self, inode: Inode) -> io::Result<&mut FileData> {
        self.inodes
            .get_mut(&inode)
            .ok_or_else(|| io::Error::other("a file of the simulated disk that a power cut took"))
    }
}

/// A simulated disk: the store's file and its journal directory.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<World>>);

impl SimDisk {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store's file, as a storage backend.
    pub fn store_file(&self) -> SimStoreFile {
        SimStoreFile(self.clone())
    }

    /// The journal's directory.
    pub fn journal_dir(&self) -> SimDir {
        SimDir(self.clone())
    }

    /// Disk operations so far.
    pub fn ops(&self) -> u64 {
        self.world().ops
    }

    /// The power goes at the `n`-th operation from now (1: the next one).
    pub fn cut_after(&self, n: u64) {
        let mut world = self.world();
        world.cut_at = Some(world.ops + n.max(1));
    }

    /// Whether a power cut is set to come.
    pub fn armed(&self) -> bool {
        let world = self.world();
        !world.down && world.cut_at.is_some()
    }

    /// Calls off a power cut set to come.
    pub fn disarm(&self) {
        let mut world = self.world();
        if !world.down {
            world.cut_at = None;
        }
    }

    /// Whether a space limit is set.
    pub fn is_limited(&self) -> bool {
        self.world().space.is_some()
    }

    /// Whether the power is down.
    pub fn is_down(&self) -> bool {
        self.world().down
    }

    /// The power goes now, if it has not already.
    pub fn cut_now(&self) {
        let mut world = self.world();
        if !world.down {
            world.down = true;
            let at = world.ops;
            world
                .log
                .push(format!("op {at}: power cut between operations"));
        }
    }

    /// The machine comes back: the synced directory entries, each file's
    /// synced bytes and a random part of its pending writes.
    pub fn restart(&self, rng: &mut Rng) {
        let mut world = self.world();
        world.down = false;
        world.cut_at = None;
        world.store_file.cut(rng);
        world.entries = world.synced_entries.clone();
        let live: Vec<Inode> = world.entries.values().copied().collect();
        world.inodes.retain(|inode, _| live.contains(inode));
        let mut inodes: Vec<Inode> = world.inodes.keys().copied().collect();
        inodes.sort_unstable();
        for inode in inodes {
            if let Some(file) = world.inodes.get_mut(&inode) {
                file.cut(rng);
            }
        }
        let names: Vec<String> = world.entries.keys().cloned().collect();
        world
            .log
            .push(format!("restart: journal directory holds {names:?}"));
    }

    /// A full disk from now on: growing writes fail once the disk holds
    /// `extra` bytes more than now. `None` lifts the limit.
    pub fn fill(&self, extra: Option<u64>) {
        let mut world = self.world();
        world.space = extra.map(|extra| world.used() + extra);
    }

    /// The last `n` things the disk saw happen.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let world = self.world();
        world.log[world.log.len().saturating_sub(n)..].to_vec()
    }
}

/// The store's file on a [`SimDisk`].
#[derive(Clone, Debug)]
pub struct SimStoreFile(SimDisk);

impl StorageBackend for SimStoreFile {
    fn len(&self) -> io::Result<u64> {
        let mut world = self.0.world();
        world.op(|| "store file: len".into())?;
        Ok(world.store_file.now.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| "store file: read".into())?;
        read_from(&world.store_file.now, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| format!("store file: set_len {len}"))?;
        let old = world.store_file.now.len();
        world.room_for(old, len)?;
        world.store_file.set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| "store file: sync".into())?;
        world.store_file.sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| format!("store file: write {} at {offset}", data.len()))?;
        let old = world.store_file.now.len();
        world.room_for(old, offset + data.len() as u64)?;
        world.store_file.write(offset, data);
        Ok(())
    }
}

/// The journal's directory on a [`SimDisk`].
#[derive(Clone, Debug)]
pub struct SimDir(SimDisk);

/// A file of a [`SimDir`]: its inode, which a power cut may take.
#[derive(Debug)]
pub struct SimFile {
    disk: SimDisk,
    inode: Inode,
    name: String,
}

impl JournalDir for SimDir {
    type File = SimFile;

    fn exists(&self) -> bool {
        self.0.world().dir_exists
    }

    fn create(&self) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| "journal: create directory".into())?;
        world.dir_exists = true;
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut world = self.0.world();
        world.op(|| "journal: list".into())?;
        Ok(world.entries.keys().cloned().collect())
    }

    fn create_file(&self, name: &str) -> io::Result<SimFile> {
        let mut world = self.0.world();
        world.op(|| format!("journal: create {name}"))?;
        let inode = match world.entries.get(name).copied() {
            Some(inode) => {
                world.inode(inode)?.set_len(0);
                inode
            }
            None => {
                world.next_inode += 1;
                let inode = world.next_inode;
                world.inodes.insert(inode, FileData::default());
                world.entries.insert(name.to_string(), inode);
                inode
            }
        };
        Ok(SimFile {
            disk: self.0.clone(),
            inode,
            name: name.to_string(),
        })
    }

    fn open_file(&self, name: &str) -> io::Result<SimFile> {
        let mut world = self.0.world();
        world.op(|| format!("journal: open {name}"))?;
        let inode = *world
            .entries
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(SimFile {
            disk: self.0.clone(),
            inode,
            name: name.to_string(),
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| format!("journal: rename {from} to {to}"))?;
        let inode = world
            .entries
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        world.entries.insert(to.to_string(), inode);
        Ok(())
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| format!("journal: remove {name}"))?;
        world
            .entries
            .remove(name)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync(&self) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| "journal: sync directory".into())?;
        world.synced_entries = world.entries.clone();
        Ok(())
    }

    fn describe(&self) -> String {
        "<simulated journal directory>".into()
    }
}

impl SegmentFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        let mut world = self.disk.world();
        world.op(|| format!("journal: len of {}", self.name))?;
        Ok(world.inode(self.inode)?.now.len() as u64)
    }

    fn read_at(&self, out: &mut [u8], offset: u64) -> io::Result<()> {
        let mut world = self.disk.world();
        world.op(|| format!("journal: read {}", self.name))?;
        read_from(&world.inode(self.inode)?.now, offset, out)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut world = self.disk.world();
        world.op(|| format!("journal: write {} at {offset} of {}", data.len(), self.name))?;
        let old = world.inode(self.inode)?.now.len();
        world.room_for(old, offset + data.len() as u64)?;
        world.inode(self.inode)?.write(offset, data);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut world = self.disk.world();
        world.op(|| format!("journal: sync {}", self.name))?;
        world.inode(self.inode)?.sync();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}
