//! `kubectl logs`: reads a container's CRI log files (rotated ones first,
//! oldest to newest, then the live file) and streams the text out, with
//! upstream's options: tailLines, sinceTime/sinceSeconds, limitBytes,
//! timestamps and follow (which also follows a rotation of the live file).

use std::collections::VecDeque;
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use runtime::containers::logs::{parse_line, rotated_files, LogStream};
use tokio::sync::{mpsc, watch};

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N lines (before `limit_bytes` applies).
    pub tail_lines: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
}

/// One whole line of output, pieced together from `P` entries.
struct Line {
    time: DateTime<Utc>,
    text: Vec<u8>,
}

/// Turns CRI entries into whole lines; partial entries wait per stream.
#[derive(Default)]
struct Assembler {
    partial: [Option<Line>; 2],
}

impl Assembler {
    fn push(&mut self, raw: &[u8]) -> Option<Line> {
        let entry = parse_line(raw)?;
        let slot = &mut self.partial[usize::from(entry.stream == LogStream::Stderr)];
        let mut line = slot.take().unwrap_or(Line { time: entry.time, text: Vec::new() });
        line.text.extend_from_slice(&entry.content);
        if entry.partial {
            *slot = Some(line);
            return None;
        }
        line.text.push(b'\n');
        Some(line)
    }
}

/// Applies since/timestamps/limitBytes and sends what's left; false once
/// the byte limit is reached or the receiver is gone.
struct Emitter {
    opts: LogOptions,
    sent: usize,
    out: mpsc::Sender<Bytes>,
}

impl Emitter {
    async fn emit(&mut self, line: Line) -> bool {
        if self.opts.since.is_some_and(|since| line.time < since) {
            return true;
        }
        let mut buf = Vec::with_capacity(line.text.len() + 32);
        if self.opts.timestamps {
            buf.extend_from_slice(line.time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(&line.text);
        let mut more = true;
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.sent);
            if buf.len() >= room {
                buf.truncate(room);
                more = false;
            }
        }
        self.sent += buf.len();
        if !buf.is_empty() && self.out.send(Bytes::from(buf)).await.is_err() {
            return false;
        }
        more
    }
}

/// A file being read line by line from a position.
struct Cursor {
    file: std::fs::File,
    inode: u64,
    pending: Vec<u8>,
}

impl Cursor {
    fn open(path: &Path) -> Result<Cursor> {
        let file = std::fs::File::open(path).with_context(|| format!("opening log {}", path.display()))?;
        let inode = file.metadata()?.ino();
        Ok(Cursor { file, inode, pending: Vec::new() })
    }

    /// Reads what has been appended and returns the complete raw lines.
    fn read_lines(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunk = Vec::new();
        self.file.read_to_end(&mut chunk)?;
        self.pending.extend_from_slice(&chunk);
        let Some(last_nl) = self.pending.iter().rposition(|b| *b == b'\n') else { return Ok(Vec::new()) };
        let rest = self.pending.split_off(last_nl + 1);
        let done = std::mem::replace(&mut self.pending, rest);
        Ok(done[..done.len() - 1].split(|b| *b == b'\n').map(<[u8]>::to_vec).collect())
    }

    /// True when `path` no longer names this file (rotated away) or it shrank.
    fn replaced(&mut self, path: &Path) -> bool {
        let pos = self.file.stream_position().unwrap_or(0);
        match std::fs::metadata(path) {
            Ok(m) => m.ino() != self.inode || m.len() < pos,
            Err(_) => false,
        }
    }
}

/// Every file of the log, oldest first: rotated `<log>.<stamp>` files sort by stamp.
fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        rotated_files(path).into_iter().filter(|p| !p.to_string_lossy().ends_with(".gz") && !p.to_string_lossy().ends_with(".tmp")).collect();
    files.sort();
    files.push(path.to_path_buf());
    files
}

/// Streams the log at `path` to `out`. With `follow`, keeps reading new lines
/// until `running` turns false (the container exited) and the file is drained,
/// or the receiver goes away.
pub async fn stream_log(path: PathBuf, opts: LogOptions, out: mpsc::Sender<Bytes>, mut running: watch::Receiver<bool>) -> Result<()> {
    let follow = opts.follow;
    let tail = opts.tail_lines;
    let mut emitter = Emitter { opts, sent: 0, out };
    let mut assembler = Assembler::default();
    let mut kept: VecDeque<Line> = VecDeque::new();
    let files = log_files(&path);
    let mut live = None;
    for (i, file) in files.iter().enumerate() {
        let mut cursor = match Cursor::open(file) {
            Ok(c) => c,
            // A rotated file may be deleted while we list; the live one must exist.
            Err(_) if i + 1 < files.len() => continue,
            Err(e) => return Err(e),
        };
        for raw in cursor.read_lines()? {
            let Some(line) = assembler.push(&raw) else { continue };
            match tail {
                Some(n) => {
                    kept.push_back(line);
                    if kept.len() > n {
                        kept.pop_front();
                    }
                }
                None if !emitter.emit(line).await => return Ok(()),
                None => {}
            }
        }
        live = Some(cursor);
    }
    for line in kept {
        if !emitter.emit(line).await {
            return Ok(());
        }
    }
    let Some(mut cursor) = live else { return Ok(()) };
    if !follow {
        return Ok(());
    }
    loop {
        let still_running = *running.borrow_and_update();
        let mut lines = cursor.read_lines()?;
        if lines.is_empty() && cursor.replaced(&path) {
            // Rotated: finish the old file, then start the new one from its beginning.
            let next = Cursor::open(&path)?;
            lines.extend(std::mem::replace(&mut cursor, next).read_lines()?);
            lines.extend(cursor.read_lines()?);
        }
        let idle = lines.is_empty();
        for raw in lines {
            if let Some(line) = assembler.push(&raw) {
                if !emitter.emit(line).await {
                    return Ok(());
                }
            }
        }
        if idle && !still_running {
            return Ok(());
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = running.changed() => {}
                _ = emitter.out.closed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(secs: i64, stream: &str, tag: &str, text: &str) -> String {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 5).unwrap();
        format!("{} {stream} {tag} {text}\n", t.to_rfc3339_opts(SecondsFormat::Nanos, true))
    }

    async fn collect(path: &Path, opts: LogOptions) -> String {
        let (tx, mut rx) = mpsc::channel(16);
        let (_run_tx, run_rx) = watch::channel(false);
        let task = tokio::spawn(stream_log(path.to_path_buf(), opts, tx, run_rx));
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        task.await.unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn write_log(dir: &Path) -> PathBuf {
        let path = dir.join("0.log");
        let rotated = dir.join("0.log.20240101-000000.000000000");
        let older = dir.join("0.log.20230101-000000.000000000");
        std::fs::write(&older, entry(0, "stdout", "F", "one")).unwrap();
        std::fs::write(&rotated, [entry(1, "stdout", "P", "tw"), entry(2, "stderr", "F", "err"), entry(3, "stdout", "F", "o")].concat()).unwrap();
        std::fs::write(&path, [entry(4, "stdout", "F", "three"), entry(5, "stdout", "F", ""), "garbage line\n".into(), entry(6, "stdout", "F", "four")].concat())
            .unwrap();
        path
    }

    #[tokio::test]
    async fn reads_rotated_files_in_order_and_joins_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path());
        assert_eq!(collect(&path, LogOptions::default()).await, "one\nerr\ntwo\nthree\n\nfour\n");
    }

    #[tokio::test]
    async fn tail_since_limit_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path());
        let tail = LogOptions { tail_lines: Some(2), ..Default::default() };
        assert_eq!(collect(&path, tail).await, "\nfour\n");
        let none = LogOptions { tail_lines: Some(0), ..Default::default() };
        assert_eq!(collect(&path, none).await, "");
        let since = LogOptions { since: DateTime::from_timestamp(1_700_000_003, 0), ..Default::default() };
        assert_eq!(collect(&path, since).await, "three\n\nfour\n", "a joined line carries its first piece's time");
        let limit = LogOptions { limit_bytes: Some(6), ..Default::default() };
        assert_eq!(collect(&path, limit).await, "one\ner");
        let ts = LogOptions { timestamps: true, tail_lines: Some(1), ..Default::default() };
        assert_eq!(collect(&path, ts).await, "2023-11-14T22:13:26.000000005Z four\n");
    }

    async fn next(rx: &mut mpsc::Receiver<Bytes>) -> Bytes {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("line arrives promptly").unwrap()
    }

    #[tokio::test]
    async fn follow_streams_appends_across_rotation_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        std::fs::write(&path, entry(0, "stdout", "F", "first")).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (run_tx, run_rx) = watch::channel(true);
        let opts = LogOptions { follow: true, ..Default::default() };
        let task = tokio::spawn(stream_log(path.clone(), opts, tx, run_rx));
        assert_eq!(next(&mut rx).await, "first\n");

        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        // Half an entry is held back until its newline is written.
        let second = entry(1, "stdout", "F", "second");
        f.write_all(&second.as_bytes()[..10]).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.write_all(&second.as_bytes()[10..]).unwrap();
        assert_eq!(next(&mut rx).await, "second\n");

        // Rotate as the runtime does: rename, then a new live file.
        f.write_all(entry(2, "stdout", "F", "before-rotation").as_bytes()).unwrap();
        std::fs::rename(&path, dir.path().join("1.log.20240101-000000")).unwrap();
        std::fs::write(&path, entry(3, "stdout", "F", "after-rotation")).unwrap();
        assert_eq!(next(&mut rx).await, "before-rotation\n");
        assert_eq!(next(&mut rx).await, "after-rotation\n");

        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(entry(4, "stdout", "F", "last").as_bytes()).unwrap();
        run_tx.send(false).unwrap();
        let mut rest = Vec::new();
        while let Some(b) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap() {
            rest.extend_from_slice(&b);
        }
        assert_eq!(rest, b"last\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_ends_when_the_reader_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "").unwrap();
        let (tx, rx) = mpsc::channel(1);
        let (_run_tx, run_rx) = watch::channel(true);
        let task = tokio::spawn(stream_log(path, LogOptions { follow: true, ..Default::default() }, tx, run_rx));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
    }
}
