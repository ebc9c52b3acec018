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
//! - An I/O error (EIO) at a chosen operation, once: the operation does
//!   nothing and fails. A failed sync also gives up the file's pending
//!   writes, as Linux does (the pages are marked clean, so a later sync
//!   succeeds without writing them): reads still see them, a later
//!   successful sync makes none of them durable, and a power cut keeps a
//!   random part of them, as if some reached the disk before the error.
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

pub use crate::rng::Rng;
use idemkv::fault_injection::{JournalDir, SegmentFile};

/// Sector size of torn writes.
const SECTOR: usize = 512;

/// Linux's errno for an I/O error.
const EIO: i32 = 5;

/// Whether `err` is the simulated EIO.
fn is_eio(err: &io::Error) -> bool {
    err.raw_os_error() == Some(EIO)
}

/// One change to a file not yet synced.
#[derive(Clone, Debug)]
enum Pending {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    /// A write of `len` zero bytes (a segment's zero-fill), kept without
    /// its bytes.
    Zeros {
        offset: u64,
        len: usize,
    },
    SetLen(u64),
}

/// A file's bytes: what reads see, and what a power cut keeps.
#[derive(Clone, Debug, Default)]
struct FileData {
    now: SparseBytes,
    synced: SparseBytes,
    pending: Vec<Pending>,
    /// Writes a failed sync gave up: visible in `now`, never made durable
    /// by a later sync, partly kept by a power cut.
    abandoned: Vec<Pending>,
}

impl FileData {
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.now.write(offset, data);
        if is_zero(data) {
            self.pending.push(Pending::Zeros {
                offset,
                len: data.len(),
            });
        } else {
            self.pending.push(Pending::Write {
                offset,
                data: data.to_vec(),
            });
        }
    }

    fn set_len(&mut self, len: u64) {
        self.now.resize(len);
        self.pending.push(Pending::SetLen(len));
    }

    /// A sync failed with EIO: its pending writes are given up.
    fn fail_sync(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.abandoned.extend(pending);
    }

    /// Makes the pending changes durable: applied in order to the synced
    /// bytes, which then equal `now` (without copying a whole file per
    /// sync: a segment is 4 MiB).
    fn sync(&mut self) {
        // What a failed sync gave up is gone for good once a later sync
        // returns (no later power cut brings it back).
        self.abandoned.clear();
        for change in self.pending.drain(..) {
            match change {
                Pending::SetLen(len) => self.synced.resize(len),
                Pending::Write { offset, data } => self.synced.write(offset, &data),
                Pending::Zeros { offset, len } => self.synced.write_zeros(offset, len),
            }
        }
    }

    /// What a power cut leaves: the synced bytes, then each pending change
    /// in order, a length change whole or not at all and a write sector by
    /// sector, each with probability one half.
    fn cut(&mut self, rng: &mut Rng) {
        let mut kept = self.synced.clone();
        let abandoned = std::mem::take(&mut self.abandoned);
        for change in abandoned.into_iter().chain(self.pending.drain(..)) {
            match change {
                Pending::SetLen(len) => {
                    if rng.one_in(2) {
                        kept.resize(len);
                    }
                }
                Pending::Write { offset, data } => {
                    for (i, sector) in data.chunks(SECTOR).enumerate() {
                        if rng.one_in(2) {
                            kept.write(offset + (i * SECTOR) as u64, sector);
                        }
                    }
                }
                Pending::Zeros { offset, len } => {
                    for start in (0..len).step_by(SECTOR) {
                        if rng.one_in(2) {
                            let sector = SECTOR.min(len - start);
                            kept.write_zeros(offset + start as u64, sector);
                        }
                    }
                }
            }
        }
        self.now = kept.clone();
        self.synced = kept;
    }
}

/// Whether `bytes` are all zero (without an early exit, which lets the
/// compiler check many bytes at once).
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0, |any, &b| any | b) == 0
}

/// Page size of [`SparseBytes`].
const PAGE: usize = 4096;

/// A file's contents as pages, where a page never written with anything
/// but zeros takes no memory: a 4 MiB zero-filled segment costs nothing
/// to keep, copy or restore.
#[derive(Clone, Debug, Default)]
struct SparseBytes {
    len: u64,
    /// Pages holding a nonzero byte (or once did); a missing page reads as
    /// zeros. No page holds bytes at or past `len`.
    pages: BTreeMap<u64, Box<[u8; PAGE]>>,
}

impl SparseBytes {
    fn len(&self) -> u64 {
        self.len
    }

    /// Sets the length; bytes past it are gone, and read as zeros if the
    /// file grows again.
    fn resize(&mut self, len: u64) {
        if len < self.len {
            let first_gone = len.div_ceil(PAGE as u64);
            self.pages.split_off(&first_gone);
            let tail = (len % PAGE as u64) as usize;
            if tail > 0
                && let Some(page) = self.pages.get_mut(&(len / PAGE as u64))
            {
                page[tail..].fill(0);
            }
        }
        self.len = len;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.len = self.len.max(offset + data.len() as u64);
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let n = (PAGE - within).min(data.len() - done);
            let chunk = &data[done..done + n];
            match self.pages.get_mut(&index) {
                Some(page) => page[within..within + n].copy_from_slice(chunk),
                None if is_zero(chunk) => {}
                None => {
                    let mut page = Box::new([0u8; PAGE]);
                    page[within..within + n].copy_from_slice(chunk);
                    self.pages.insert(index, page);
                }
            }
            done += n;
        }
    }

    fn write_zeros(&mut self, offset: u64, len: usize) {
        self.len = self.len.max(offset + len as u64);
        let end = offset + len as u64;
        let first = offset / PAGE as u64;
        let last = end.div_ceil(PAGE as u64);
        for (&index, page) in self.pages.range_mut(first..last) {
            let page_start = index * PAGE as u64;
            let from = offset.max(page_start) - page_start;
            let to = end.min(page_start + PAGE as u64) - page_start;
            page[from as usize..to as usize].fill(0);
        }
    }

    /// Fills `out` from `offset`, as a file's read would.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if offset + out.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let (index, within) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let n = (PAGE - within).min(out.len() - done);
            match self.pages.get(&index) {
                Some(page) => out[done..done + n].copy_from_slice(&page[within..within + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }
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
    /// The space limit lifts itself at its first refusal (a full disk that
    /// an operator clears at once), so that nothing the store does while it
    /// heals races with the simulation lifting it.
    space_once: bool,
    /// Growing writes refused for want of space so far.
    refusals: u64,
    /// The operation that fails with EIO: the first of `eio_run`.
    eio_at: Option<u64>,
    /// How many operations in a row fail from `eio_at` on (one unless a
    /// stretch was asked for).
    eio_run: u64,
    /// Operations of the current stretch still to fail.
    eio_left: u64,
    /// EIO errors so far.
    eios: u64,
    /// What happened, for a failure's trace (the last entries).
    log: Vec<String>,
    /// Which disk this is among the process's (see `SimDisk::default`).
    disk: u64,
    /// Restarts of the machine so far.
    boots: u64,
}

impl World {
    /// Counts one operation; fails it if the power is (or goes) down.
    fn op(&mut self, what: impl Fn() -> String) -> io::Result<()> {
        // Operations on a disk without power are not counted: how many a
        // store's threads try before the machine restarts is up to them,
        // and the count must stay the seed's.
        if self.down {
            return Err(io::Error::other("simulated power cut"));
        }
        self.ops += 1;
        if log_every_op() {
            eprintln!("disk op {}: {}", self.ops, what());
        }
        if self.cut_at == Some(self.ops) {
            self.down = true;
            self.log
                .push(format!("op {}: power cut at {}", self.ops, what()));
        }
        if self.down {
            return Err(io::Error::other("simulated power cut"));
        }
        if self.eio_at == Some(self.ops) {
            self.eio_at = None;
            self.eio_left = self.eio_run.max(1);
        }
        if self.eio_left > 0 {
            self.eio_left -= 1;
            self.eios += 1;
            self.log.push(format!("op {}: EIO at {}", self.ops, what()));
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.store_file.now.len() + self.inodes.values().map(|f| f.now.len()).sum::<u64>()
    }

    /// Fails a change that would grow the disk past its space.
    fn room_for(&mut self, old_len: u64, new_end: u64) -> io::Result<()> {
        if let Some(space) = self.space {
            let growth = new_end.saturating_sub(old_len);
            if growth > 0 && self.used() + growth > space {
                self.refusals += 1;
                if self.space_once {
                    self.space = None;
                }
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

/// Whether every disk operation is printed as it happens
/// (`IDEMKV_SIM_DISK_LOG=1`), to follow a failing seed's run in detail.
pub fn log_every_op() -> bool {
    static LOG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOG.get_or_init(|| std::env::var_os("IDEMKV_SIM_DISK_LOG").is_some())
}

/// A simulated disk: the store's file and its journal directory.
#[derive(Clone, Debug)]
pub struct SimDisk(Arc<Mutex<World>>);

impl Default for SimDisk {
    /// A new, empty disk, with a number of its own in this process: the
    /// store file's name (`StorageBackend::name`) tells it apart from every
    /// other disk's, and from its own file before a restart, whose page
    /// cache the restart emptied.
    fn default() -> SimDisk {
        static DISKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SimDisk(Arc::new(Mutex::new(World {
            disk: DISKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..World::default()
        })))
    }
}

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

    /// The `n`-th operation from now (1: the next one) fails with EIO.
    pub fn eio_after(&self, n: u64) {
        self.eio_stretch_after(n, 1);
    }

    /// From the `n`-th operation from now on, `run` operations in a row
    /// fail with EIO (a bad stretch of the disk that it remaps after a
    /// while): whatever the store retries meanwhile fails too.
    pub fn eio_stretch_after(&self, n: u64, run: u64) {
        let mut world = self.world();
        world.eio_at = Some(world.ops + n.max(1));
        world.eio_run = run.max(1);
    }

    /// Growing writes the disk refused for want of space so far.
    pub fn refusals(&self) -> u64 {
        self.world().refusals
    }

    /// EIO errors the disk answered so far.
    pub fn eios(&self) -> u64 {
        self.world().eios
    }

    /// Calls off an EIO set to come.
    pub fn no_eio(&self) {
        let mut world = self.world();
        world.eio_at = None;
        world.eio_left = 0;
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
        world.boots += 1;
        world.down = false;
        world.cut_at = None;
        world.eio_at = None;
        world.eio_left = 0;
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
        world.space_once = false;
    }

    /// As [`fill`](Self::fill), but the limit lifts itself at its first
    /// refusal: one `StorageFull`, then room again.
    pub fn fill_once(&self, extra: u64) {
        let mut world = self.world();
        world.space = Some(world.used() + extra);
        world.space_once = true;
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
        Ok(world.store_file.now.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut world = self.0.world();
        world.op(|| "store file: read".into())?;
        world.store_file.now.read(offset, out)
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
        if let Err(err) = world.op(|| "store file: sync".into()) {
            if is_eio(&err) {
                world.store_file.fail_sync();
            }
            return Err(err);
        }
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

    /// The disk's number and the boot: a process's memory of a doubted
    /// file does not survive the machine's restart, and asking is not a
    /// disk operation.
    fn name(&self) -> Option<String> {
        let world = self.0.world();
        Some(format!(
            "simulated disk {}, boot {}",
            world.disk, world.boots
        ))
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
        Ok(world.inode(self.inode)?.now.len())
    }

    fn read_at(&self, out: &mut [u8], offset: u64) -> io::Result<()> {
        let mut world = self.disk.world();
        world.op(|| format!("journal: read {}", self.name))?;
        world.inode(self.inode)?.now.read(offset, out)
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
        if let Err(err) = world.op(|| format!("journal: sync {}", self.name)) {
            if is_eio(&err) {
                world.inode(self.inode)?.fail_sync();
            }
            return Err(err);
        }
        world.inode(self.inode)?.sync();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}
