//! Reading an instance's output: the log file of a stream and its rotated generations
//! (written by [`crate::logger`]), from the last lines, from a point in time, or all of it,
//! and following it as it grows — across rotations, which the reader notices as the file at
//! the path changing under it: it finishes the file it has open (now `stdout.1`), then goes on
//! with the new one. A file truncated in place (an external `logrotate` with copytruncate) is
//! read again from its start.

use std::io::{self, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::logger::{generation_path, index_path, writing_path};

/// Generations older than this are not looked for.
const MAX_GENERATIONS: usize = 100;
/// How often a followed file is checked for more.
const POLL: Duration = Duration::from_millis(100);
/// How many times the generation after a rotated file is looked for (2 ms apart) before
/// giving up, and after how many listings without the rotated file it is taken as dropped.
const OPEN_NEXT_TRIES: usize = 250;
const DROPPED_AFTER: usize = 25;
/// A followed log of an instance that no longer runs, whose logger does not say when it has
/// ended (one started by an older agent), ends once nothing was written to it for this long.
const SETTLE: Duration = Duration::from_millis(500);
/// A followed log of an instance that no longer runs, whose logger still runs (a process that
/// left the instance's group still holds the pipe), ends once nothing was written for this long.
const ORPHANED: Duration = Duration::from_secs(5);

/// Whether the logger of `log` still runs: it holds [`writing_path`] locked while it does.
/// `None` when there is no such file (a logger started by an older agent).
fn logger_runs(log: &Path) -> Option<bool> {
    let file = std::fs::OpenOptions::new().read(true).open(writing_path(log)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Which part of a log to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// The last this many lines (of what `since` selects, if given).
    pub tail_lines: Option<u64>,
    /// What was written at or after this time (in unix milliseconds; to the second).
    pub since_millis: Option<i64>,
    /// At most this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A position in a log: a generation (0: the current file) and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    /// Oldest first: `generations[0]` is the oldest file.
    file: usize,
    offset: u64,
}

/// The files of a log, oldest first (`stdout.2`, `stdout.1`, `stdout`).
fn generations(log: &Path) -> Vec<PathBuf> {
    let mut older: Vec<PathBuf> =
        (1..=MAX_GENERATIONS).map(|n| generation_path(log, n)).take_while(|p| p.exists()).collect();
    older.reverse();
    older.push(log.to_path_buf());
    older
}

/// Reads a log's index: `(unix millis, offset)` pairs.
fn index(log: &Path) -> Vec<(i64, u64)> {
    std::fs::read_to_string(index_path(log))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (millis, offset) = line.split_once(' ')?;
            Some((millis.parse().ok()?, offset.parse().ok()?))
        })
        .collect()
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The first byte written in the same second as `since` or later. Without an index (output
/// written straight to the file), a file counts as written at its modification time.
fn since_position(files: &[PathBuf], since_millis: i64) -> Position {
    let second = since_millis.div_euclid(1000);
    for (file, path) in files.iter().enumerate() {
        let entries = index(path);
        if entries.is_empty() {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let millis =
                modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as i64);
            if len(path) > 0 && millis.div_euclid(1000) >= second {
                return Position { file, offset: 0 };
            }
            continue;
        }
        if let Some((_, offset)) = entries.iter().find(|(millis, _)| millis.div_euclid(1000) >= second) {
            return Position { file, offset: *offset };
        }
    }
    end_of(files)
}

fn end_of(files: &[PathBuf]) -> Position {
    let last = files.len() - 1;
    Position { file: last, offset: len(&files[last]) }
}

/// The start of the last `lines` lines (a final line without its newline counts).
fn tail_position(files: &[PathBuf], lines: u64) -> io::Result<Position> {
    use std::io::{Read, Seek};
    let mut wanted = lines;
    let mut first_byte_seen = false;
    for (file, path) in files.iter().enumerate().rev() {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut end = f.metadata()?.len();
        let mut buffer = vec![0u8; 64 << 10];
        while end > 0 {
            let start = end.saturating_sub(buffer.len() as u64);
            let chunk = &mut buffer[..(end - start) as usize];
            f.seek(io::SeekFrom::Start(start))?;
            f.read_exact(chunk)?;
            for (i, byte) in chunk.iter().enumerate().rev() {
                let at = start + i as u64;
                if !first_byte_seen {
                    // The newline ending the last line does not start another.
                    first_byte_seen = true;
                    if *byte == b'\n' {
                        continue;
                    }
                }
                if *byte == b'\n' {
                    if wanted == 0 {
                        return Ok(Position { file, offset: at + 1 });
                    }
                    wanted -= 1;
                    if wanted == 0 {
                        return Ok(Position { file, offset: at + 1 });
                    }
                }
            }
            end = start;
        }
    }
    Ok(Position { file: 0, offset: 0 })
}

/// Where reading starts for `selection`.
fn start(files: &[PathBuf], selection: &Selection) -> io::Result<Position> {
    let mut position = Position { file: 0, offset: 0 };
    if let Some(since) = selection.since_millis {
        position = position.max(since_position(files, since));
    }
    if let Some(lines) = selection.tail_lines {
        position = position.max(if lines == 0 { end_of(files) } else { tail_position(files, lines)? });
    }
    Ok(position)
}

/// A log being read: the file open (by inode: rotation renames it), and where in it.
pub struct Reader {
    log: PathBuf,
    open: tokio::fs::File,
    inode: u64,
    offset: u64,
    left: Option<u64>,
    follow: bool,
    /// Not following: where the log ended when it was opened (inode, offset), so what is
    /// read is the log as it was then, not lines written while it is read.
    end: Option<(u64, u64)>,
    idle_since: Option<tokio::time::Instant>,
    /// The instance ended and so did its logger: what is in the files is all there will be.
    logger_ended: bool,
}

impl Reader {
    /// Opens the log at `log` (e.g. `<sandbox>/stdout`) for `selection`; `None` if there is
    /// no such log.
    pub async fn open(log: &Path, selection: Selection, follow: bool) -> io::Result<Option<Self>> {
        if !log.exists() {
            return Ok(None);
        }
        let files = generations(log);
        let last = files.last().expect("the current file");
        let end = match std::fs::metadata(last) {
            Ok(meta) if !follow => Some((meta.ino(), meta.len())),
            _ => None,
        };
        let position = start(&files, &selection)?;
        let (open, inode) = open_at(&files[position.file], position.offset).await?;
        Ok(Some(Self {
            log: log.to_path_buf(),
            open,
            inode,
            offset: position.offset,
            left: selection.limit_bytes,
            follow,
            end,
            idle_since: None,
            logger_ended: false,
        }))
    }

    /// The next bytes; `None` at the end: of the log when not following, or once the instance
    /// no longer runs (`running` says) and nothing more is written.
    pub async fn next(&mut self, running: impl Fn() -> bool) -> io::Result<Option<Vec<u8>>> {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            if self.left == Some(0) {
                return Ok(None);
            }
            let mut want = self.left.map_or(buffer.len(), |left| left.min(buffer.len() as u64) as usize);
            if let Some((inode, offset)) = self.end
                && inode == self.inode
            {
                if self.offset >= offset {
                    return Ok(None);
                }
                want = want.min((offset - self.offset).min(usize::MAX as u64) as usize);
            }
            let n = self.open.read(&mut buffer[..want]).await?;
            if n > 0 {
                self.offset += n as u64;
                self.left = self.left.map(|left| left - n as u64);
                self.idle_since = None;
                buffer.truncate(n);
                return Ok(Some(buffer));
            }
            // At the end of the open file: is it still the current one?
            let current = tokio::fs::metadata(&self.log).await.ok();
            if let Some(meta) = current.as_ref().filter(|m| m.ino() == self.inode) {
                if meta.len() < self.offset {
                    // Truncated in place: read it again from its start.
                    self.open.seek(SeekFrom::Start(0)).await?;
                    self.offset = 0;
                    continue;
                }
                if !self.follow || self.logger_ended {
                    return Ok(None);
                }
                if !running() {
                    match logger_runs(&self.log) {
                        // Everything is written: read to the end once more, then stop.
                        Some(false) => {
                            self.logger_ended = true;
                            continue;
                        }
                        logger => {
                            let quiet = if logger.is_some() { ORPHANED } else { SETTLE };
                            let idle = *self.idle_since.get_or_insert_with(tokio::time::Instant::now);
                            if idle.elapsed() >= quiet {
                                return Ok(None);
                            }
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            // Rotated away (now `stdout.1`, or older): it is complete once read again to its
            // end; then the generation written after it, found by inode.
            let n = self.open.read(&mut buffer[..want]).await?;
            if n > 0 {
                self.offset += n as u64;
                self.left = self.left.map(|left| left - n as u64);
                buffer.truncate(n);
                return Ok(Some(buffer));
            }
            self.open_next().await?;
        }
    }

    /// Opens the generation written after the open one (the oldest still there if the open
    /// one was dropped meanwhile).
    ///
    /// The logger may be rotating while the files are listed (renaming the oldest first), so a
    /// listing can miss a file or see two generations at different moments; a choice is taken
    /// only when it holds: the open file still sits where it was found after the next one was
    /// opened — a rotation moves a file before the newer one takes its place, so what was at
    /// the next place then is the file written after it.
    async fn open_next(&mut self) -> io::Result<()> {
        let inode_of = |p: &Path| std::fs::metadata(p).ok().map(|m| m.ino());
        let mut missing = 0;
        for _ in 0..OPEN_NEXT_TRIES {
            let files = generations(&self.log);
            let next = match files.iter().position(|p| inode_of(p) == Some(self.inode)) {
                Some(k) if k + 1 == files.len() => return Ok(()), // The current file again.
                Some(k) => Some(k),
                // Not listed: a rotation under way hid it, or it was dropped (too old).
                None if missing < DROPPED_AFTER => {
                    missing += 1;
                    None
                }
                None => {
                    let (open, inode) = open_at(&files[0], 0).await?;
                    (self.open, self.inode, self.offset) = (open, inode, 0);
                    return Ok(());
                }
            };
            if let Some(k) = next
                && let Ok((open, inode)) = open_at(&files[k + 1], 0).await
                && inode_of(&files[k]) == Some(self.inode)
            {
                (self.open, self.inode, self.offset) = (open, inode, 0);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(io::Error::other(format!("{}: rotated too fast to follow", self.log.display())))
    }
}

async fn open_at(path: &Path, offset: u64) -> io::Result<(tokio::fs::File, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let inode = file.metadata().await?.ino();
    file.seek(SeekFrom::Start(offset)).await?;
    Ok((file, inode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logger::{Rotation, run};

    fn lines(range: std::ops::Range<u32>) -> Vec<u8> {
        range.flat_map(|i| format!("line {i:03}\n").into_bytes()).collect()
    }

    async fn read_all(log: &Path, selection: Selection) -> String {
        let mut reader = Reader::open(log, selection, false).await.unwrap().expect("a log");
        let mut out = Vec::new();
        while let Some(bytes) = reader.next(|| false).await.unwrap() {
            out.extend(bytes);
        }
        String::from_utf8(out).unwrap()
    }

    /// 40 lines logged over 40 seconds (one per second from t = 1000 s), rotating at 100 bytes.
    fn logged(dir: &Path) -> PathBuf {
        let log = dir.join("stdout");
        for i in 0..40u32 {
            let clock = || 1_000_000 + i64::from(i) * 1000;
            run(&lines(i..i + 1)[..], &log, Rotation { max_bytes: 100, keep: 10 }, clock).unwrap();
        }
        log
    }

    #[tokio::test]
    async fn all_of_it_the_last_lines_from_a_time_and_at_most_some_bytes_across_generations() {
        let dir = tempfile::tempdir().unwrap();
        let log = logged(dir.path());
        assert!(generation_path(&log, 2).exists(), "rotated several times");
        let all = read_all(&log, Selection::default()).await;
        assert_eq!(all.as_bytes(), lines(0..40));
        let tail = read_all(&log, Selection { tail_lines: Some(3), ..Selection::default() }).await;
        assert_eq!(tail, "line 037\nline 038\nline 039\n");
        let tail = read_all(&log, Selection { tail_lines: Some(15), ..Selection::default() }).await;
        assert_eq!(tail.as_bytes(), lines(25..40), "across rotated files");
        let since = read_all(&log, Selection { since_millis: Some(1_030_500), ..Selection::default() }).await;
        assert_eq!(since.as_bytes(), lines(30..40), "from the second of 1030.5 s on");
        let both =
            read_all(&log, Selection { since_millis: Some(1_010_000), tail_lines: Some(2), limit_bytes: None }).await;
        assert_eq!(both, "line 038\nline 039\n");
        let limited = read_all(&log, Selection { limit_bytes: Some(12), ..Selection::default() }).await;
        assert_eq!(limited, "line 000\nlin");
        assert_eq!(read_all(&log, Selection { tail_lines: Some(0), ..Selection::default() }).await, "");
        assert!(Reader::open(&dir.path().join("nothing"), Selection::default(), false).await.unwrap().is_none());
    }

    /// Input that stalls once for a second after its first kilobyte.
    struct Slow<R> {
        input: R,
        read: usize,
        stalled: bool,
    }

    impl<R: std::io::Read> std::io::Read for Slow<R> {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            if self.read >= 1024 && !self.stalled {
                self.stalled = true;
                std::thread::sleep(Duration::from_secs(1));
            }
            let most = buffer.len().min(64);
            let n = self.input.read(&mut buffer[..most])?;
            self.read += n;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn following_goes_on_across_rotations_and_ends_once_the_instance_has_ended() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stdout");
        std::fs::write(&log, "").unwrap();
        let (pipe_out, mut pipe_in) = std::io::pipe().unwrap();
        let writer_log = log.clone();
        let logger = std::thread::spawn(move || {
            // Files of 64 bytes, enough of them kept that a follower polling every 100 ms
            // never finds the one it reads dropped.
            // A logger that falls behind for longer than a reader used to wait (as on a busy
            // machine: the failing CI run of 2026-12-01 read 1547 of 1800 bytes): reading
            // ends only once it has written everything and ended.
            let slow = Slow { input: pipe_out, read: 0, stalled: false };
            run(slow, &writer_log, Rotation { max_bytes: 64, keep: 100 }, || 0).unwrap();
        });
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut reader = Reader::open(&log, Selection::default(), true).await.unwrap().unwrap();
        let writing = running.clone();
        let producer = std::thread::spawn(move || {
            use std::io::Write;
            for i in 0..200u32 {
                pipe_in.write_all(format!("line {i:03}\n").as_bytes()).unwrap();
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            drop(pipe_in);
            writing.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        let mut seen = Vec::new();
        let flag = running.clone();
        let follow = async {
            while let Some(bytes) = reader.next(|| flag.load(std::sync::atomic::Ordering::SeqCst)).await.unwrap() {
                seen.extend(bytes);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), follow).await.expect("following ends after the instance");
        producer.join().unwrap();
        logger.join().unwrap();
        let seen = String::from_utf8(seen).unwrap();
        assert!(generation_path(&log, 20).exists(), "rotated many times while followed");
        assert!(seen.as_bytes() == lines(0..200), "every line once, in order; got {} bytes:\n{seen}", seen.len());
    }
}
