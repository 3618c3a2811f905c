//! The logger: a small process between an instance and one of its log files.
//!
//! An instance's stdout and stderr are pipes, each read by a logger (`baton logger`) that
//! writes what comes to `<sandbox>/stdout` (or `stderr`), rotates the file when it reaches a
//! size (`stdout` → `stdout.1` → … → `stdout.<keep>`, the oldest dropped), and keeps a time
//! index beside it (`stdout.index`) so that logs can be read from a point in time. Loggers are
//! in their own process group and outlive the agent: an agent restart neither breaks an
//! instance's output (its pipe would close) nor loses any of it. A logger ends when every
//! writer of its pipe has (the instance's process group is gone).
//!
//! Rotation renames the file and opens a new one, so nothing written is lost (unlike
//! `logrotate`'s copy-and-truncate), and a reader following the file sees the old one end and
//! the new one begin (see [`crate::logs`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The index of a log file: lines of `<unix milliseconds> <offset>`, one for each second in
/// which something was written: the bytes from `offset` on were written at or after that time.
pub fn index_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".index");
    log.with_file_name(name)
}

/// The file a logger holds locked (an exclusive `flock`) for as long as it runs: a reader
/// following the log knows that nothing more will be written once it can lock it too. The
/// kernel releases the lock however the logger ends.
pub fn writing_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".writing");
    log.with_file_name(name)
}

/// The `n`-th older generation of a log file: `stdout.1` is the newest rotated one.
pub fn generation_path(log: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return log.to_path_buf();
    }
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{n}"));
    log.with_file_name(name)
}

/// How large a log file grows before it is rotated, and how many rotated ones are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

impl Default for Rotation {
    /// 16 MiB, 2 rotated files: at most 48 MiB per stream.
    fn default() -> Self {
        Self { max_bytes: 16 << 20, keep: 2 }
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    index: File,
    size: u64,
    /// The second of the last index entry.
    indexed_second: Option<i64>,
}

impl Writer {
    fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let index = OpenOptions::new().create(true).append(true).open(index_path(path))?;
        Ok(Self { path: path.to_path_buf(), file, index, size, indexed_second: None })
    }

    fn write(&mut self, bytes: &[u8], now_millis: i64) -> io::Result<()> {
        let second = now_millis.div_euclid(1000);
        if self.indexed_second != Some(second) {
            writeln!(self.index, "{now_millis} {}", self.size)?;
            self.indexed_second = Some(second);
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `stdout.<k>` → `stdout.<k+1>` for every kept one (the oldest dropped), `stdout` →
    /// `stdout.1`, each with its index; then a new, empty `stdout`.
    fn rotate(&mut self, keep: usize) -> io::Result<()> {
        let paths = |n| {
            let log = generation_path(&self.path, n);
            let index = index_path(&log);
            (log, index)
        };
        let (oldest, oldest_index) = paths(keep.max(1));
        let _ = std::fs::remove_file(oldest);
        let _ = std::fs::remove_file(oldest_index);
        for n in (0..keep.max(1)).rev() {
            let (from, from_index) = paths(n);
            let (to, to_index) = paths(n + 1);
            if from.exists() {
                std::fs::rename(&from, &to)?;
            }
            if from_index.exists() {
                std::fs::rename(&from_index, &to_index)?;
            }
        }
        *self = Writer::open(&self.path)?;
        Ok(())
    }
}

/// Copies `input` to the log file at `path` until `input` ends, rotating as `rotation` says.
/// `now_millis` tells the time (for the index).
pub fn run(mut input: impl Read, path: &Path, rotation: Rotation, now_millis: impl Fn() -> i64) -> io::Result<()> {
    let writing = OpenOptions::new().create(true).truncate(false).write(true).open(writing_path(path))?;
    writing.lock()?;
    let mut writer = Writer::open(path)?;
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buffer[..n];
        while !chunk.is_empty() {
            // A file never exceeds the size: what does not fit goes to the next one, cut after
            // the last whole line that fits (within a line only if a line alone is longer).
            let room = rotation.max_bytes.saturating_sub(writer.size).max(1) as usize;
            if chunk.len() <= room {
                writer.write(chunk, now_millis())?;
                if writer.size >= rotation.max_bytes {
                    writer.rotate(rotation.keep)?;
                }
                break;
            }
            let cut = chunk[..room].iter().rposition(|b| *b == b'\n').map_or(room, |i| i + 1);
            let (now, rest) = chunk.split_at(cut);
            writer.write(now, now_millis())?;
            writer.rotate(rotation.keep)?;
            chunk = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rotates_and_indexes_without_losing_a_byte() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stdout");
        let input: Vec<u8> = (0..100).flat_map(|i| format!("line {i:03}\n").into_bytes()).collect();
        let clock = std::cell::Cell::new(1_000_000i64);
        run(&input[..], &log, Rotation { max_bytes: 300, keep: 2 }, || {
            clock.set(clock.get() + 250);
            clock.get()
        })
        .unwrap();
        // 900 bytes in files of 300: the first 300 went with the third rotation.
        let read = |p: PathBuf| std::fs::read(p).unwrap_or_default();
        let kept: Vec<u8> =
            [generation_path(&log, 2), generation_path(&log, 1), log.clone()].into_iter().flat_map(read).collect();
        assert_eq!(kept, input[input.len() - kept.len()..], "the newest bytes, in order");
        assert!(kept.len() >= 600, "{}", kept.len());
        for n in 1..=2 {
            let file = read(generation_path(&log, n));
            assert!(file.ends_with(b"\n") && file.starts_with(b"line"), "rotated at line boundaries");
        }
        assert!(!generation_path(&log, 3).exists(), "only 2 rotated files are kept");
        for n in 1..=2 {
            let index = std::fs::read_to_string(index_path(&generation_path(&log, n))).unwrap();
            let first = index.lines().next().unwrap();
            assert!(first.ends_with(" 0"), "each file's index starts at offset 0: {first}");
        }
    }
}
