//! The write-ahead journal: durability for commits that the storage engine
//! applies without syncing.
//!
//! With [`Config::journal`](crate::Config::journal), the committer applies a
//! batch in a write transaction, appends the batch's changes to the journal
//! as one frame and syncs it (`fdatasync`), and only then commits the
//! transaction with the engine's `Durability::None`: a small sequential
//! append replaces the engine's durable commit, which writes every page the
//! batch dirtied. Now and then (see [`Journal::checkpoint_due`]) a batch is
//! committed durably instead, with the last journaled sequence number in
//! `meta` (`journal_seq`): a checkpoint, which covers every frame up to it.
//! After a crash the engine's file is as of its last checkpoint, and opening
//! it replays the frames after that one (see
//! [`storage::prepare`](crate::durability::storage::prepare)).
//!
//! Layout: the directory `<file>.journal` beside the store's file holds
//! segment files `segment-<n>` (a store over a custom backend uses a
//! [`JournalStorage`] instead), each [`SEGMENT_BYTES`] long, zero-filled
//! when created and reused afterwards, so that a frame's sync writes data
//! and never the file's size or block map. A segment starts with a header
//! (magic, segment number, sequence number of its first frame, crc); frames
//! start at [`FRAMES_START`], each at a multiple of [`FRAME_ALIGN`]:
//!
//! ```text
//! len u32 | segment u64 | seq u64 | payload crc u32 | header crc u32 | payload
//! ```
//!
//! Invariants:
//! - Frames carry consecutive sequence numbers across segments, and each
//!   frame names its segment: a frame left over from a segment's earlier use
//!   has an older segment number, and ends the segment like zeros do.
//! - A frame is on disk (synced) before the transaction that carries its
//!   changes commits: nothing a reader can see is missing from the journal
//!   or a checkpoint.
//! - A segment is reused only once a checkpoint covers every frame in it,
//!   and the segment being written is never reused.
//! - A segment's header is synced before its first frame is written; a new
//!   segment file is zero-filled and synced, and its directory synced,
//!   before its header is written.
//! - At recovery a damaged frame ends the journal only at the tail of the
//!   segment that holds the newest frames: a damaged frame followed by a
//!   good one of the same segment, or a segment that ends before the next
//!   one begins, is refused as corruption (`Error::Corrupted`) instead of
//!   dropping acknowledged commits.
//!
//! Longer than most files here on purpose: the frame format, the segment ring
//! and its recovery scan are one invariant (which frames a reopen replays).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::durability::crash_point;
use crate::durability::journal_storage::JournalStorage;
use crate::error::{Error, Result};
use crate::sync::time::Instant;

/// Bytes of one segment file. Trades the disk preallocated for the journal
/// (a few segments, reused) against how often a writer moves to the next
/// one, and bounds a frame: a batch whose frame does not fit is written as
/// a checkpoint instead. Not tuned by measurement: at 64 clients a segment
/// lasts a few tenths of a second.
pub(crate) const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Full segments of frames that no checkpoint covers yet after which a
/// checkpoint is due whatever `Config::checkpoint_interval` says. Each
/// checkpoint syncs the pages that the store's unsynced commits dirtied and
/// rewrites the tree's upper pages: under heavy load, checkpointing at every
/// full segment (4 MiB of frames, a few tenths of a second at 64 threads)
/// spent twice the time in checkpoints that a checkpoint per second did
/// (docs/benchmarks.md, "Checkpoint stalls"). With the one being written, the journal then
/// holds at most five segments (20 MiB), and an open replays at most that.
pub(crate) const CHECKPOINT_SEGMENTS: usize = 4;

/// Where a segment's frames start; the header sits in the page before.
pub(crate) const FRAMES_START: u64 = 4096;

/// Every frame starts at a multiple of this offset, so that recovery looks
/// for frames after a damaged one at a few thousand places per segment, not
/// at every byte. A frame's sync writes whole pages anyway, so the padding
/// costs no I/O.
pub(crate) const FRAME_ALIGN: u64 = 512;

const MAGIC: &[u8; 8] = b"idemkvJ1";
const SEGMENT_HEADER: usize = 28;
const FRAME_HEADER: usize = 28;

/// The journal directory of the store file at `path`.
pub(crate) fn dir_of(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".journal");
    PathBuf::from(name)
}

/// What the writer knows of one segment of the pool.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Its number while in use; 0 while free.
    number: u64,
    /// The sequence number of its last frame (0 when it has none).
    last_seq: u64,
}

/// The journal's writer: the segment pool and where the next frame goes.
pub(crate) struct Journal {
    storage: Arc<dyn JournalStorage>,
    segments: Vec<Segment>,
    /// The segment being written (an index into `segments`).
    current: Option<usize>,
    /// Where the next frame goes in the current segment.
    offset: u64,
    /// The number the next segment gets.
    next_number: u64,
    /// The sequence number of the next frame.
    next_seq: u64,
    /// Every frame up to this one is covered by a checkpoint.
    covered_seq: u64,
    /// When the last checkpoint was taken.
    checkpoint_at: Instant,
}

/// What recovery found: the frames after the last checkpoint, in order, and
/// the writer that continues after them.
pub(crate) struct Recovered {
    /// (sequence number, payload) of each frame to replay.
    pub frames: Vec<(u64, Vec<u8>)>,
    pub journal: Journal,
}

/// One segment, for reading.
struct Reader<'s> {
    storage: &'s dyn JournalStorage,
    index: usize,
}

impl Journal {
    /// Reads the journal in `storage` (no segments: empty) and returns the
    /// frames after `covered_seq`, the last sequence number the store's
    /// file covers. The writer returned starts a new segment for its first
    /// frame; every existing segment is free once the caller has
    /// checkpointed the replayed frames (see [`Journal::checkpointed`]).
    pub fn recover(storage: Arc<dyn JournalStorage>, covered_seq: u64) -> Result<Recovered> {
        storage
            .remove_leftovers()
            .map_err(|err| io_error(&*storage, err))?;
        let mut count = storage.segments().map_err(|err| io_error(&*storage, err))?;
        if count > 0 {
            // Before any of them is read or written again: what a failed
            // creation left listed survives a power cut from here on.
            storage
                .sync_segments()
                .map_err(|err| io_error(&*storage, err))?;
        }
        let mut headers = Vec::with_capacity(count);
        for index in 0..count {
            let len = match storage.segment_len(index) {
                Ok(len) => len,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Err(damaged(&*storage, format!("segment {index} is missing")));
                }
                Err(err) => return Err(io_error(&*storage, err)),
            };
            if len == SEGMENT_BYTES {
                headers.push(Reader::new(&*storage, index).header()?);
                continue;
            }
            // A newest segment of the wrong length without a header was
            // never activated (its creation was cut short, by a crash or a
            // full disk, on a storage that does not create segments
            // atomically): it holds nothing, and is deleted.
            let newest = index + 1 == count;
            let has_header =
                len >= SEGMENT_HEADER as u64 && Reader::new(&*storage, index).header()?.is_some();
            if newest && !has_header {
                storage
                    .remove_segment(index)
                    .map_err(|err| io_error(&*storage, err))?;
                count -= 1;
                break;
            }
            return Err(damaged(
                &*storage,
                format!("segment {index} is {len} bytes instead of {SEGMENT_BYTES}"),
            ));
        }
        // Segments in use, oldest first.
        let mut order: Vec<(usize, Header)> = headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|h| (i, h)))
            .collect();
        order.sort_by_key(|(_, h)| h.number);
        let newest_number = order.last().map(|(_, h)| h.number);
        // A segment whose header is unreadable is free (its activation was
        // torn: no frame is written before the header is synced), unless it
        // holds a frame newer than every readable header.
        for (index, header) in headers.iter().enumerate() {
            if header.is_none()
                && let Some(frame) = Reader::new(&*storage, index).frame(FRAMES_START)?
                && newest_number.is_none_or(|newest| frame.number > newest)
                && frame.seq > covered_seq
            {
                return Err(damaged(
                    &*storage,
                    format!("the header of segment {index} is damaged"),
                ));
            }
        }
        let mut frames = Vec::new();
        let mut next_needed = covered_seq + 1;
        let mut last_seq = covered_seq;
        for &(index, header) in &order {
            if header.first_seq > next_needed {
                return Err(damaged(
                    &*storage,
                    format!(
                        "frames {next_needed} to {} are missing (segment {index} starts after them)",
                        header.first_seq - 1
                    ),
                ));
            }
            let reader = Reader::new(&*storage, index);
            let mut offset = FRAMES_START;
            let mut expected = header.first_seq;
            loop {
                let frame = match reader.frame(offset)? {
                    Some(frame) if frame.number == header.number => frame,
                    // Zeros, a frame of the segment's earlier use, or a
                    // damaged frame: the segment's frames end here, which
                    // is only fine if nothing of ours follows.
                    _ => {
                        if let Some(later) =
                            reader.later_frame(offset, header.number, next_needed)?
                        {
                            return Err(damaged(
                                &*storage,
                                format!(
                                    "segment {index} is damaged at byte {offset}, before frame {later}"
                                ),
                            ));
                        }
                        break;
                    }
                };
                if frame.seq != expected {
                    return Err(damaged(
                        &*storage,
                        format!(
                            "segment {index} holds frame {} where frame {expected} belongs",
                            frame.seq
                        ),
                    ));
                }
                if frame.seq == next_needed {
                    frames.push((frame.seq, frame.payload));
                    next_needed += 1;
                }
                last_seq = last_seq.max(frame.seq);
                offset = aligned(offset + (FRAME_HEADER + frame.payload_len) as u64);
                expected += 1;
            }
        }
        let next_number = headers
            .iter()
            .flatten()
            .map(|h| h.number)
            .max()
            .unwrap_or(0)
            + 1;
        Ok(Recovered {
            frames,
            journal: Journal {
                storage,
                segments: vec![
                    Segment {
                        number: 0,
                        last_seq: 0,
                    };
                    count
                ],
                current: None,
                offset: 0,
                next_number,
                next_seq: last_seq + 1,
                covered_seq,
                checkpoint_at: Instant::now(),
            },
        })
    }

    /// The sequence number of the last frame written (or replayed).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether a payload of `len` bytes fits in one frame; a batch whose
    /// changes do not is committed durably instead (a checkpoint).
    pub fn fits(len: usize) -> bool {
        (FRAME_HEADER + len) as u64 <= SEGMENT_BYTES - FRAMES_START
    }

    /// Whether the next commit should be a checkpoint: some frame is not
    /// covered yet, and the last checkpoint is `interval` old
    /// (`Config::checkpoint_interval`) or [`CHECKPOINT_SEGMENTS`] segments
    /// other than the current one hold frames a checkpoint does not cover
    /// yet (so the pool stays at five segments or fewer under any load).
    pub fn checkpoint_due(&self, interval: Duration) -> bool {
        if self.last_seq() == self.covered_seq {
            return false;
        }
        let uncovered = || {
            self.segments
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    Some(*i) != self.current && s.number != 0 && s.last_seq > self.covered_seq
                })
                .count()
        };
        Instant::now().saturating_duration_since(self.checkpoint_at) >= interval
            || uncovered() >= CHECKPOINT_SEGMENTS
    }

    /// Appends one frame with `payload` and syncs it; returns its sequence
    /// number. On an error the frame may be on disk in part or whole; the
    /// store must not write more frames (it reopens and recovers).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        let needed = (FRAME_HEADER + payload.len()) as u64;
        if !Self::fits(payload.len()) {
            return Err(Error::corrupted(format!(
                "a journal frame of {needed} bytes does not fit a segment"
            )));
        }
        let current = match self.current {
            Some(current) if self.offset + needed <= SEGMENT_BYTES => current,
            _ => self.start_segment()?,
        };
        let seq = self.next_seq;
        let frame = encode_frame(self.segments[current].number, seq, payload);
        self.storage
            .write(current, self.offset, &frame)
            .and_then(|()| {
                crash_point::reached("segment.frame_written");
                self.storage.sync_data(current)
            })
            .map_err(|err| io_error(&*self.storage, err))?;
        crash_point::reached("segment.frame_synced");
        self.segments[current].last_seq = seq;
        self.offset = aligned(self.offset + needed);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Records that a durable commit covers every frame up to `seq`: each
    /// segment holding only such frames, other than the current one, is
    /// free to reuse.
    pub fn checkpointed(&mut self, seq: u64) {
        self.covered_seq = self.covered_seq.max(seq);
        self.checkpoint_at = Instant::now();
        for (i, segment) in self.segments.iter_mut().enumerate() {
            if Some(i) != self.current && segment.last_seq <= self.covered_seq {
                segment.number = 0;
            }
        }
    }

    /// Segments in the pool.
    #[cfg(test)]
    fn pool_size(&self) -> usize {
        self.segments.len()
    }

    /// Makes a free segment (or a new one) current, with its header synced;
    /// returns its index.
    fn start_segment(&mut self) -> Result<usize> {
        let free = self
            .segments
            .iter()
            .enumerate()
            .position(|(i, s)| Some(i) != self.current && s.number == 0);
        let index = match free {
            Some(index) => index,
            None => {
                let index = self.segments.len();
                self.storage
                    .create_segment(index, SEGMENT_BYTES)
                    .map_err(|err| io_error(&*self.storage, err))?;
                self.segments.push(Segment {
                    number: 0,
                    last_seq: 0,
                });
                index
            }
        };
        let number = self.next_number;
        let header = encode_header(number, self.next_seq);
        self.storage
            .write(index, 0, &header)
            .and_then(|()| {
                crash_point::reached("segment.header_written");
                self.storage.sync_data(index)
            })
            .map_err(|err| io_error(&*self.storage, err))?;
        crash_point::reached("segment.header_synced");
        self.segments[index] = Segment {
            number,
            last_seq: 0,
        };
        self.next_number += 1;
        self.current = Some(index);
        self.offset = FRAMES_START;
        Ok(index)
    }
}

fn io_error(storage: &dyn JournalStorage, err: std::io::Error) -> Error {
    let advice = if err.kind() == std::io::ErrorKind::StorageFull {
        format!(
            " (the journal needs {} MiB of free space for a new segment: free space on its \
             file system; a store that is running resumes writes by itself once there is room)",
            SEGMENT_BYTES >> 20
        )
    } else {
        String::new()
    };
    Error::io(std::io::Error::new(
        err.kind(),
        format!("journal {}: {err}{advice}", storage.describe()),
    ))
}

fn damaged(storage: &dyn JournalStorage, detail: String) -> Error {
    Error::corrupted(format!(
        "the journal {}: {detail}; restore the store's file and journal from a backup",
        storage.describe()
    ))
}

#[derive(Clone, Copy, Debug)]
struct Header {
    number: u64,
    first_seq: u64,
}

fn encode_header(number: u64, first_seq: u64) -> [u8; SEGMENT_HEADER] {
    let mut header = [0u8; SEGMENT_HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&number.to_le_bytes());
    header[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&header[..24]);
    header[24..].copy_from_slice(&crc.to_le_bytes());
    header
}

fn encode_frame(number: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&number.to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&header_crc.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

struct Frame {
    payload_len: usize,
    number: u64,
    seq: u64,
    payload: Vec<u8>,
}

/// A frame header whose crc holds: (payload len, segment, seq, payload crc).
fn frame_header(bytes: &[u8]) -> Option<(usize, u64, u64, u32)> {
    if bytes.len() < FRAME_HEADER || crc32fast::hash(&bytes[..24]) != le32(&bytes[24..28]) {
        return None;
    }
    Some((
        le32(&bytes[..4]) as usize,
        le64(&bytes[4..12]),
        le64(&bytes[12..20]),
        le32(&bytes[20..24]),
    ))
}

impl<'s> Reader<'s> {
    fn new(storage: &'s dyn JournalStorage, index: usize) -> Reader<'s> {
        Reader { storage, index }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.storage
            .read(self.index, offset, out)
            .map_err(|err| io_error(self.storage, err))
    }

    /// The segment's header, or `None` if it has none (a new or torn one).
    fn header(&self) -> Result<Option<Header>> {
        let mut bytes = [0u8; SEGMENT_HEADER];
        self.read(0, &mut bytes)?;
        if &bytes[..8] != MAGIC || crc32fast::hash(&bytes[..24]) != le32(&bytes[24..28]) {
            return Ok(None);
        }
        Ok(Some(Header {
            number: le64(&bytes[8..16]),
            first_seq: le64(&bytes[16..24]),
        }))
    }

    /// The whole, undamaged frame at `offset`, or `None`.
    fn frame(&self, offset: u64) -> Result<Option<Frame>> {
        if offset + FRAME_HEADER as u64 > SEGMENT_BYTES {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER];
        self.read(offset, &mut header)?;
        let Some((payload_len, number, seq, crc)) = frame_header(&header) else {
            return Ok(None);
        };
        if offset + (FRAME_HEADER + payload_len) as u64 > SEGMENT_BYTES {
            return Ok(None);
        }
        let mut payload = vec![0u8; payload_len];
        self.read(offset + FRAME_HEADER as u64, &mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return Ok(None);
        }
        Ok(Some(Frame {
            payload_len,
            number,
            seq,
            payload,
        }))
    }

    /// The sequence number of a whole frame of segment `number` with a
    /// sequence number from `from` on, anywhere after `offset`: proof that
    /// the journal was damaged in the middle rather than torn at its end.
    fn later_frame(&self, offset: u64, number: u64, from: u64) -> Result<Option<u64>> {
        let mut rest = vec![0u8; (SEGMENT_BYTES - offset) as usize];
        self.read(offset, &mut rest)?;
        let number_bytes = number.to_le_bytes();
        // Frames start at aligned offsets only.
        let mut at = (aligned(offset + 1) - offset) as usize;
        while at + FRAME_HEADER <= rest.len() {
            if rest[at + 4..at + 12] == number_bytes
                && let Some((_, _, seq, _)) = frame_header(&rest[at..at + FRAME_HEADER])
                && seq >= from
                && let Some(frame) = self.frame(offset + at as u64)?
            {
                return Ok(Some(frame.seq));
            }
            at += FRAME_ALIGN as usize;
        }
        Ok(None)
    }
}

/// `offset` rounded up to the next frame start.
fn aligned(offset: u64) -> u64 {
    offset.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

fn le32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(b)
}

fn le64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    use crate::durability::journal_storage::DirJournal;

    fn recover(dir: &Path, covered_seq: u64) -> Result<Recovered> {
        Journal::recover(Arc::new(DirJournal::new(dir.to_path_buf())), covered_seq)
    }

    fn segment_path(dir: &Path, index: usize) -> PathBuf {
        dir.join(format!("segment-{index}"))
    }

    fn payload(seq: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![(seq % 251) as u8; len];
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        bytes
    }

    /// A journal in a fresh directory, with `count` frames of `len` bytes.
    fn written(count: u64, len: usize) -> (tempfile::TempDir, PathBuf, Journal) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir_of(&tmp.path().join("store.redb"));
        let mut journal = recover(&dir, 0).unwrap().journal;
        for seq in 1..=count {
            assert_eq!(journal.append(&payload(seq, len)).unwrap(), seq);
        }
        (tmp, dir, journal)
    }

    fn seqs(frames: &[(u64, Vec<u8>)]) -> Vec<u64> {
        frames.iter().map(|(seq, _)| *seq).collect()
    }

    fn frame_offset(nth: u64, len: usize) -> u64 {
        FRAMES_START + (nth - 1) * aligned((FRAME_HEADER + len) as u64)
    }

    fn damage(dir: &Path, segment: usize, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir, segment))
            .unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    #[test]
    fn recovery_returns_the_frames_after_the_checkpoint_in_order() {
        let (_tmp, dir, journal) = written(5, 100);
        drop(journal);
        let recovered = recover(&dir, 2).unwrap();
        assert_eq!(seqs(&recovered.frames), [3, 4, 5]);
        assert_eq!(recovered.frames[0].1, payload(3, 100));
        assert_eq!(recovered.journal.last_seq(), 5);
        let none = recover(&dir, 5).unwrap();
        assert!(none.frames.is_empty());
        assert_eq!(none.journal.last_seq(), 5);
    }

    #[test]
    fn a_torn_last_frame_ends_the_journal() {
        let (_tmp, dir, journal) = written(4, 100);
        drop(journal);
        // The last frame's payload half written.
        damage(&dir, 0, frame_offset(4, 100) + 80, &[0xAB; 40]);
        let recovered = recover(&dir, 0).unwrap();
        assert_eq!(seqs(&recovered.frames), [1, 2, 3]);
        // Its header half written.
        damage(&dir, 0, frame_offset(4, 100) + 10, &[0xCD; 4]);
        assert_eq!(seqs(&recover(&dir, 0).unwrap().frames), [1, 2, 3]);
    }

    #[test]
    fn a_damaged_frame_before_the_last_is_refused() {
        let (_tmp, dir, journal) = written(5, 100);
        drop(journal);
        damage(&dir, 0, frame_offset(2, 100) + 50, &[0xEE]);
        let err = recover(&dir, 0).err().unwrap();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        // A damaged header before a whole frame is refused the same way.
        let (_tmp, dir, journal) = written(5, 100);
        drop(journal);
        damage(&dir, 0, frame_offset(3, 100) + 2, &[0xEE; 3]);
        assert!(recover(&dir, 0).is_err());
    }

    #[test]
    fn segments_are_reused_once_a_checkpoint_covers_them() {
        // Three 1 MiB frames fill a segment.
        let len = 1 << 20;
        let (_tmp, dir, mut journal) = written(0, len);
        for seq in 1..=30 {
            journal.append(&payload(seq, len)).unwrap();
            if journal.checkpoint_due(Duration::from_secs(1)) {
                journal.checkpointed(seq);
            }
        }
        assert!(
            journal.pool_size() <= CHECKPOINT_SEGMENTS + 1,
            "{} segments",
            journal.pool_size()
        );
        let covered = journal.covered_seq;
        drop(journal);
        // Earlier uses of the reused segments are ignored, the rest replays.
        let recovered = recover(&dir, covered).unwrap();
        assert_eq!(
            seqs(&recovered.frames),
            (covered + 1..=30).collect::<Vec<_>>()
        );
        for (seq, bytes) in &recovered.frames {
            assert_eq!(*bytes, payload(*seq, len));
        }
        // A writer after recovery starts a new segment and continues.
        let mut journal = recovered.journal;
        journal.checkpointed(30);
        assert_eq!(journal.append(&payload(31, 10)).unwrap(), 31);
        drop(journal);
        assert_eq!(seqs(&recover(&dir, 30).unwrap().frames), [31]);
    }

    #[test]
    fn a_segment_that_ends_early_before_a_newer_one_is_refused() {
        let len = 1 << 20;
        // Frames 1-3 fill segment 0; frame 4 starts segment 1.
        let (_tmp, dir, journal) = written(4, len);
        drop(journal);
        assert_eq!(seqs(&recover(&dir, 0).unwrap().frames), [1, 2, 3, 4]);
        // The last frame of the older segment is damaged: not a torn tail.
        damage(&dir, 0, frame_offset(3, len) + 100, &[0x11; 8]);
        let err = recover(&dir, 0).err().unwrap();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        // Covered by a checkpoint, it does not matter.
        assert_eq!(seqs(&recover(&dir, 3).unwrap().frames), [4]);
    }

    #[test]
    fn a_torn_segment_header_frees_the_segment_unless_frames_follow() {
        let len = 1 << 20;
        let (_tmp, dir, journal) = written(4, len);
        drop(journal);
        // Segment 1 holds frame 4: its header damaged hides a synced frame.
        damage(&dir, 1, 3, &[0x22; 4]);
        assert!(recover(&dir, 0).is_err());
        // A header torn before its first frame was written: free.
        let (_tmp, dir, mut journal) = written(3, len);
        journal.checkpointed(3);
        journal.start_segment().unwrap();
        drop(journal);
        damage(&dir, 1, 3, &[0x22; 4]);
        let recovered = recover(&dir, 3).unwrap();
        assert!(recovered.frames.is_empty());
        assert_eq!(recovered.journal.last_seq(), 3);
    }

    #[test]
    fn a_damaged_frame_larger_than_an_alignment_slot_is_refused() {
        // Each frame spans several 512-byte slots: the search for a later
        // frame must look past the damaged frame's own slots.
        let len = 2000;
        let (_tmp, dir, journal) = written(5, len);
        drop(journal);
        damage(&dir, 0, frame_offset(2, len) + 1500, &[0xEE; 4]);
        let err = recover(&dir, 0).err().unwrap();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        // The last one torn is a torn tail.
        let (_tmp, dir, journal) = written(5, len);
        drop(journal);
        damage(&dir, 0, frame_offset(5, len) + 1500, &[0xEE; 4]);
        assert_eq!(seqs(&recover(&dir, 0).unwrap().frames), [1, 2, 3, 4]);
    }

    /// Writes `len` zero bytes as segment `index`, as a creation in place
    /// cut short would leave it.
    fn short_segment(dir: &Path, index: usize, len: u64) {
        std::fs::create_dir_all(dir).unwrap();
        let file = std::fs::File::create(segment_path(dir, index)).unwrap();
        file.set_len(len).unwrap();
    }

    #[test]
    fn a_short_newest_segment_without_a_header_is_deleted() {
        // A new store's first segment cut short, or empty.
        for len in [0, 10, 1_785_856] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = dir_of(&tmp.path().join("store.redb"));
            short_segment(&dir, 0, len);
            let mut journal = recover(&dir, 0).unwrap().journal;
            assert!(!segment_path(&dir, 0).exists(), "left a {len}-byte segment");
            assert_eq!(journal.append(&payload(1, 100)).unwrap(), 1);
            drop(journal);
            assert_eq!(seqs(&recover(&dir, 0).unwrap().frames), [1]);
        }
        // Behind full segments with frames: those frames still replay.
        let len = 1 << 20;
        let (_tmp, dir, journal) = written(4, len);
        drop(journal);
        short_segment(&dir, 2, SEGMENT_BYTES / 3);
        let recovered = recover(&dir, 0).unwrap();
        assert_eq!(seqs(&recovered.frames), [1, 2, 3, 4]);
        assert!(!segment_path(&dir, 2).exists());
        let mut journal = recovered.journal;
        journal.checkpointed(4);
        assert_eq!(journal.append(&payload(5, 10)).unwrap(), 5);
        drop(journal);
        assert_eq!(seqs(&recover(&dir, 4).unwrap().frames), [5]);
    }

    #[test]
    fn a_short_segment_that_is_not_the_newest_or_has_a_header_is_refused() {
        let len = 1 << 20;
        // Segment 0 holds frames and is cut: acknowledged frames are gone.
        let (_tmp, dir, journal) = written(4, len);
        drop(journal);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 0))
            .unwrap();
        file.set_len(SEGMENT_BYTES / 2).unwrap();
        assert!(matches!(recover(&dir, 0), Err(Error::Corrupted { .. })));
        // The newest, with a header, cut: it held frames.
        let (_tmp, dir, journal) = written(4, len);
        drop(journal);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 1))
            .unwrap();
        file.set_len(SEGMENT_BYTES / 2).unwrap();
        assert!(matches!(recover(&dir, 0), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn a_segment_left_half_created_under_its_temporary_name_is_removed() {
        let (_tmp, dir, journal) = written(2, 100);
        drop(journal);
        let temp = dir.join("segment-1.creating");
        std::fs::write(&temp, vec![0u8; 12345]).unwrap();
        let recovered = recover(&dir, 0).unwrap();
        assert_eq!(seqs(&recovered.frames), [1, 2]);
        assert!(!temp.exists());
    }

    #[test]
    fn a_missing_or_cut_segment_file_is_refused() {
        let len = 1 << 20;
        let (_tmp, dir, journal) = written(7, len);
        drop(journal);
        std::fs::remove_file(segment_path(&dir, 1)).unwrap();
        assert!(matches!(recover(&dir, 0), Err(Error::Corrupted { .. })));
        let (_tmp, dir, journal) = written(2, 100);
        drop(journal);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 0))
            .unwrap();
        file.set_len(SEGMENT_BYTES / 2).unwrap();
        assert!(matches!(recover(&dir, 0), Err(Error::Corrupted { .. })));
    }
}
