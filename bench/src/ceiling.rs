//! The engine's ceilings for idemkv's write set: what raw redb (and a
//! minimal journal) can do with exactly the rows fresh-key cycles write,
//! without idemkv's threads, codec or decisions, or with only the threads.
//!
//! The write set of one cycle: a claim inserts an in-flight row and its
//! expiry entry; the completion replaces the in-flight row by a completed
//! row in `records`, which keeps the claim's expiry entry. The tables are
//! idemkv's three, as `src/durability/storage.rs` defines them.
//!
//! Durability, per batch of operations, is one of:
//! - one durable redb commit (idemkv with `Config::journal(false)`);
//! - a commit with `Durability::None`, the batch's operations appended as
//!   frames (length, sequence number, crc, then the row) to a preallocated,
//!   zero-filled journal file and `fdatasync`ed, and a durable redb commit
//!   once a second and once more at the end, inside the timing (idemkv's
//!   default). One thread applies then syncs, no overlap: this measures
//!   what replacing redb's durable commit by a sequential append pays, not
//!   a journal's whole design (no reader visibility rule, no segment
//!   recycling, no recovery).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};

use crate::BoxError;

type Result<T, E = BoxError> = std::result::Result<T, E>;

/// idemkv's completed records.
pub const RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("records");
/// idemkv's in-flight records.
pub const INFLIGHT: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("inflight");
/// idemkv's expiry index: (sweep time, key hash).
pub const EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> = TableDefinition::new("expiry");
/// Encoded size of a claim (key, fingerprint, token, four times, version
/// byte and crc).
pub const CLAIM_BYTES: usize = 116;
/// Encoded size of a completed record with a 256-byte body.
pub const COMPLETED_BYTES: usize = 366;
/// idemkv's default lease, in ms.
pub const LEASE_MS: u64 = 60_000;
/// idemkv's default retention, in ms.
pub const RETENTION_MS: u64 = 86_400_000;

/// One operation of the write set, on cycle number `.0`.
#[derive(Clone, Copy)]
enum Op {
    Claim(usize),
    Complete(usize),
}

/// How a ceiling makes its batches durable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// One durable redb commit per batch.
    EveryCommit,
    /// A journal append and `fdatasync` per batch, a durable redb commit
    /// once a second.
    Journal,
}

/// The engine's ceiling: one thread applying the write set of `cycles`
/// fresh-key cycles, `batch` operations per commit, claims and completions
/// interleaved as under load (a completion always lands in a later commit
/// than its claim). Returns cycles per second.
///
/// The file first gets `existing` completed records, as many as idemkv's
/// file held when its run started, so both trees have the same depth.
pub fn engine(
    dir: &Path,
    existing: u64,
    batch: usize,
    cycles: usize,
    durable: Durable,
) -> Result<f64> {
    let mut file = CeilingFile::create(dir, &format!("engine-{batch}"), existing, cycles, durable)?;
    let started = Instant::now();
    // Operation j of the stream: a claim of the next cycle for even j, the
    // completion of the cycle claimed `batch` operations earlier for odd j.
    let mut claimed = VecDeque::new();
    let mut next_claim = 0;
    let mut done = 0;
    let mut ops = Vec::with_capacity(batch);
    while done < cycles {
        let mut in_this_commit = Vec::new();
        for slot in 0..batch {
            if slot % 2 == 1 || next_claim >= cycles {
                if let Some(i) = claimed.pop_front() {
                    ops.push(Op::Complete(i));
                    done += 1;
                }
            } else {
                ops.push(Op::Claim(next_claim));
                in_this_commit.push(next_claim);
                next_claim += 1;
            }
        }
        claimed.extend(in_this_commit);
        file.apply(&ops)?;
        ops.clear();
    }
    file.finish()?;
    Ok(cycles as f64 / started.elapsed().as_secs_f64())
}

/// What a handed-off run measured.
#[derive(Clone, Copy, Debug)]
pub struct HandedOff {
    /// Claim + completion cycles per second.
    pub cycles_per_s: f64,
    /// Operations per commit on average.
    pub ops_per_commit: f64,
    /// Commits made.
    pub commits: u64,
    /// What the scheduler counted for the writer thread during the run
    /// (`None` where `/proc` does not tell); the setup is not in it.
    pub writer: Option<crate::ThreadStats>,
    /// The client threads' CPU time per cycle (µs), where `/proc` tells.
    pub clients_us: Option<f64>,
}

/// The same write set and durability, fed by `clients` threads the way
/// idemkv's committer is: each client sends its claim through a channel
/// and waits for the answer, then its completion, `per_client` cycles in
/// turn; one writer thread takes whatever is queued as a batch (no
/// lingering for more), applies it, makes it durable and answers each
/// operation. Nothing else: no decisions, no codec, no reads. Returns
/// cycles per second, the mean operations per commit and what the scheduler
/// counted for the writer (this thread).
///
/// This is the ceiling of the design (one writer, callers handing off to it)
/// on this machine's cores, which the clients share with the writer. With
/// `decide`, the writer also reads what idemkv's committer reads to decide
/// each operation before writing it: the key's row in `inflight`, then (on
/// a miss) in `records`.
pub fn handed_off(dir: &Path, shape: Shape, decide: bool) -> Result<HandedOff> {
    HandedOff::measure(dir, "handed-off", shape, decide, handed_off_run)
}

/// The file and the clients of one handed-off measurement.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Records in the file before the run.
    pub existing: u64,
    /// Client threads.
    pub clients: usize,
    /// Cycles each client runs.
    pub per_client: usize,
    /// How the writer makes its batches durable.
    pub durable: Durable,
}

/// The clients and the writer of [`handed_off`]; returns the commits made.
fn handed_off_run(
    file: &mut CeilingFile,
    clients_cpu: &ClientsCpu,
    clients: usize,
    per_client: usize,
) -> Result<u64> {
    let (submit, queue) = mpsc::channel::<(Op, mpsc::SyncSender<()>)>();
    std::thread::scope(|scope| -> Result<u64> {
        for client in 0..clients {
            let submit = submit.clone();
            scope.spawn(move || {
                let (answer, answered) = mpsc::sync_channel(1);
                'cycles: for n in 0..per_client {
                    let cycle = client * per_client + n;
                    for op in [Op::Claim(cycle), Op::Complete(cycle)] {
                        // A send or receive fails only when the writer
                        // stopped on an error, which it returns itself.
                        if submit.send((op, answer.clone())).is_err() || answered.recv().is_err() {
                            break 'cycles;
                        }
                    }
                }
                clients_cpu.add_this_thread();
            });
        }
        drop(submit);
        file.serve(&queue, |answers| {
            for answer in answers.drain(..) {
                // A client that is gone needs no answer.
                let _ = answer.send(());
            }
        })
    })
}

impl HandedOff {
    /// Creates the file `name` in `dir` and measures `run` (`shape`'s
    /// clients handing their cycles to a writer on this thread, returning
    /// the commits made) and the closing checkpoint, part of the cost; the
    /// file's setup is not in the figures. With `decide`, the writer reads
    /// what deciding reads.
    fn measure(
        dir: &Path,
        name: &str,
        shape: Shape,
        decide: bool,
        run: fn(&mut CeilingFile, &ClientsCpu, usize, usize) -> Result<u64>,
    ) -> Result<HandedOff> {
        let cycles = shape.clients * shape.per_client;
        let mut file = CeilingFile::create(dir, name, shape.existing, cycles, shape.durable)?;
        file.decide = decide;
        let clients = ClientsCpu::default();
        let writer_before = crate::ThreadStats::of(None);
        let started = Instant::now();
        let commits = run(&mut file, &clients, shape.clients, shape.per_client)?;
        file.finish()?;
        let elapsed = started.elapsed().as_secs_f64();
        let writer_after = crate::ThreadStats::of(None);
        Ok(HandedOff {
            cycles_per_s: cycles as f64 / elapsed,
            ops_per_commit: (2 * cycles) as f64 / commits.max(1) as f64,
            commits,
            writer: writer_before
                .zip(writer_after)
                .map(|(before, after)| after.since(before)),
            clients_us: clients.per_cycle(cycles),
        })
    }
}

/// The client threads' CPU time, each adding its own as it ends.
#[derive(Default)]
struct ClientsCpu {
    ns: std::sync::atomic::AtomicU64,
    unknown: std::sync::atomic::AtomicBool,
}

impl ClientsCpu {
    /// Adds the calling thread's CPU time over its life.
    fn add_this_thread(&self) {
        use std::sync::atomic::Ordering;
        match crate::ThreadStats::of(None) {
            Some(stats) => {
                self.ns.fetch_add(stats.cpu_ns, Ordering::Relaxed);
            }
            None => self.unknown.store(true, Ordering::Relaxed),
        }
    }

    fn per_cycle(&self, cycles: usize) -> Option<f64> {
        use std::sync::atomic::Ordering;
        (!self.unknown.load(Ordering::Relaxed))
            .then(|| self.ns.load(Ordering::Relaxed) as f64 / 1e3 / cycles.max(1) as f64)
    }
}

/// [`handed_off`] with one wake-up call per batch instead of one per
/// operation: the writer marks each answered client's flag and then wakes
/// every waiting client at once (`Condvar::notify_all`); a client whose flag
/// is still clear waits again.
pub fn handed_off_broadcast(dir: &Path, shape: Shape) -> Result<HandedOff> {
    HandedOff::measure(dir, "broadcast", shape, false, broadcast_run)
}

/// The clients and the writer of [`handed_off_broadcast`]; returns the
/// commits made.
fn broadcast_run(
    file: &mut CeilingFile,
    clients_cpu: &ClientsCpu,
    clients: usize,
    per_client: usize,
) -> Result<u64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};
    let (submit, queue) = mpsc::channel::<(Op, usize)>();
    let answered: Vec<AtomicBool> = (0..clients).map(|_| AtomicBool::new(false)).collect();
    let board = (Mutex::new(()), Condvar::new());
    let stopped = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<u64> {
        for client in 0..clients {
            let submit = submit.clone();
            let (answered, board, stopped) = (&answered[client], &board, &stopped);
            scope.spawn(move || {
                'cycles: for n in 0..per_client {
                    let cycle = client * per_client + n;
                    for op in [Op::Claim(cycle), Op::Complete(cycle)] {
                        if submit.send((op, client)).is_err() {
                            break 'cycles;
                        }
                        let mut guard = board.0.lock().unwrap_or_else(|e| e.into_inner());
                        while !answered.swap(false, Ordering::Acquire) {
                            if stopped.load(Ordering::Relaxed) {
                                break 'cycles;
                            }
                            guard = board.1.wait(guard).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                }
                clients_cpu.add_this_thread();
            });
        }
        drop(submit);
        let wake_all = || {
            let _guard = board.0.lock().unwrap_or_else(|e| e.into_inner());
            board.1.notify_all();
        };
        let served = file.serve(&queue, |clients| {
            for client in clients.drain(..) {
                answered[client].store(true, Ordering::Release);
            }
            wake_all();
        });
        if served.is_err() {
            stopped.store(true, Ordering::Relaxed);
            wake_all();
        }
        served
    })
}

/// A raw redb file with idemkv's tables and, for [`Durable::Journal`], its
/// journal.
struct CeilingFile {
    db: Database,
    journal: Option<Journal>,
    last_checkpoint: Instant,
    started: Instant,
    claim_row: Vec<u8>,
    completed_row: Vec<u8>,
    /// Read each key's row before writing it, as deciding does.
    decide: bool,
}

impl CeilingFile {
    fn create(
        dir: &Path,
        name: &str,
        existing: u64,
        cycles: usize,
        durable: Durable,
    ) -> Result<CeilingFile> {
        let path = dir.join(format!("ceiling-{name}.redb"));
        // A file left by an earlier ceiling in the same directory is
        // replaced, so every ceiling starts from `existing` records.
        let _ = std::fs::remove_file(&path);
        let db = Database::create(path)?;
        let journal = match durable {
            Durable::Journal => Some(Journal::create(
                &dir.join(format!("ceiling-{name}.log")),
                cycles,
            )?),
            Durable::EveryCommit => None,
        };
        let completed_row = vec![b'r'; COMPLETED_BYTES];
        let txn = db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            for i in 0..existing {
                let h = *blake3::hash(format!("existing-{i}").as_bytes()).as_bytes();
                records.insert(&h, completed_row.as_slice())?;
                expiry.insert((RETENTION_MS + i, &h), ())?;
            }
        }
        txn.commit()?;
        Ok(CeilingFile {
            db,
            journal,
            last_checkpoint: Instant::now(),
            started: Instant::now(),
            claim_row: vec![b'c'; CLAIM_BYTES],
            completed_row,
            decide: false,
        })
    }

    /// The writer's loop: takes whatever is queued as a batch, applies it in
    /// one commit, then has `answer` answer the batch's clients (and empty
    /// the list); returns the number of commits once every client is gone.
    fn serve<A>(
        &mut self,
        queue: &mpsc::Receiver<(Op, A)>,
        mut answer: impl FnMut(&mut Vec<A>),
    ) -> Result<u64> {
        let mut commits = 0;
        let mut ops = Vec::new();
        let mut waiting = Vec::new();
        while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            while let Some((op, client)) = next {
                ops.push(op);
                waiting.push(client);
                next = queue.try_recv().ok();
            }
            self.apply(&ops)?;
            commits += 1;
            ops.clear();
            answer(&mut waiting);
        }
        Ok(commits)
    }

    /// Applies `ops` in one commit and makes them durable.
    fn apply(&mut self, ops: &[Op]) -> Result<()> {
        let hash = |i: usize| *blake3::hash(format!("ceiling-{i}").as_bytes()).as_bytes();
        let now_ms = self.started.elapsed().as_millis() as u64 + 1_000_000;
        let mut txn = self.db.begin_write()?;
        let checkpoint =
            self.journal.is_none() || self.last_checkpoint.elapsed() >= Duration::from_secs(1);
        if !checkpoint {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut inflight = txn.open_table(INFLIGHT)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            for op in ops {
                let (Op::Claim(i) | Op::Complete(i)) = *op;
                let h = hash(i);
                if self.decide {
                    // In idemkv's order: `inflight`, then `records`.
                    let found = match inflight.get(&h)? {
                        Some(row) => Some(row.value().len()),
                        None => records.get(&h)?.map(|row| row.value().len()),
                    };
                    std::hint::black_box(found);
                }
                match op {
                    Op::Claim(_) => {
                        inflight.insert(&h, self.claim_row.as_slice())?;
                        expiry.insert((now_ms + LEASE_MS + RETENTION_MS, &h), ())?;
                        if let Some(journal) = &mut self.journal {
                            journal.frame(&h, &self.claim_row);
                        }
                    }
                    Op::Complete(_) => {
                        inflight.remove(&h)?;
                        records.insert(&h, self.completed_row.as_slice())?;
                        if let Some(journal) = &mut self.journal {
                            journal.frame(&h, &self.completed_row);
                        }
                    }
                }
            }
        }
        txn.commit()?;
        if checkpoint {
            self.last_checkpoint = Instant::now();
        }
        if let Some(journal) = &mut self.journal {
            journal.sync()?;
        }
        Ok(())
    }

    /// The closing checkpoint, part of the cost: it writes every page the
    /// undurable commits left dirty. (A run shorter than the checkpoint
    /// interval pays for more checkpoints per cycle than a long one.)
    fn finish(&self) -> Result<()> {
        if self.journal.is_some() {
            self.db.begin_write()?.commit()?;
        }
        Ok(())
    }
}

/// The journal of the journal ceiling: a preallocated, zero-filled file
/// written at an advancing offset, so that `fdatasync` has no metadata to
/// update.
struct Journal {
    file: std::fs::File,
    offset: u64,
    sequence: u64,
    pending: Vec<u8>,
}

impl Journal {
    fn create(path: &Path, cycles: usize) -> Result<Journal> {
        use std::io::Write;
        let size = (cycles * 2 * (16 + 32 + COMPLETED_BYTES)) as u64 + (1 << 20);
        let mut file = std::fs::File::create(path)?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..size.div_ceil(zeros.len() as u64) {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(Journal {
            file,
            offset: 0,
            sequence: 0,
            pending: Vec::new(),
        })
    }

    /// Frames one operation: length, sequence, crc of the rest, key, row.
    fn frame(&mut self, key: &[u8; 32], row: &[u8]) {
        self.sequence += 1;
        let len = (32 + row.len()) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.sequence.to_le_bytes());
        crc.update(key);
        crc.update(row);
        self.pending.extend_from_slice(&len.to_le_bytes());
        self.pending.extend_from_slice(&self.sequence.to_le_bytes());
        self.pending
            .extend_from_slice(&crc.finalize().to_le_bytes());
        self.pending.extend_from_slice(key);
        self.pending.extend_from_slice(row);
    }

    /// Writes the batch's frames at the end of the journal and syncs them.
    fn sync(&mut self) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&self.pending, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}
