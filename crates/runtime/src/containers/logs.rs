//! Container logs in the CRI format the kubelet reads:
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <text>\n`, where `P` marks a
//! piece of a line longer than [`MAX_LINE`] and `F` ends a line. Files are
//! rotated by size (`<log>.<YYYYmmdd-HHMMSS>`, as the kubelet names them),
//! keeping at most `max_files` files including the live one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};

/// Longest piece written as one log line (as containerd's 16 KiB buffer).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Size/count limits, as the kubelet's containerLogMaxSize / containerLogMaxFiles.
#[derive(Clone, Copy, Debug)]
pub struct LogRotation {
    pub max_size: u64,
    pub max_files: usize,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// One parsed log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: DateTime<Utc>,
    pub stream: LogStream,
    /// True for `P` (the line continues in the next entry).
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses one line of a CRI log file (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogLine {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or_default().to_vec(),
    })
}

/// Reads every parseable line of one log file.
pub fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let file = File::open(path).with_context(|| format!("opening log {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        if let Some(parsed) = parse_line(&line?) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// Appends CRI log lines to one container's log file, rotating by size.
pub struct LogWriter {
    path: PathBuf,
    rotation: LogRotation,
    file: File,
    size: u64,
}

impl LogWriter {
    pub fn open(path: &Path, rotation: LogRotation) -> Result<LogWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path: path.to_path_buf(),
            rotation,
            file,
            size,
        })
    }

    pub fn write(&mut self, stream: LogStream, partial: bool, content: &[u8]) -> Result<()> {
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(time.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let stamp = Utc::now().format("%Y%m%d-%H%M%S%.9f");
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        std::fs::rename(&self.path, &rotated)
            .with_context(|| format!("rotating log {}", self.path.display()))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        // Keep the newest max_files - 1 rotated files next to the live one.
        let mut old = rotated_files(&self.path);
        let keep = self.rotation.max_files.saturating_sub(1);
        if old.len() > keep {
            old.sort();
            for path in &old[..old.len() - keep] {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

/// Rotated siblings of a log file (`<log>.<stamp>`), in no particular order.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Copies one stream into the log until EOF: full lines as `F`, pieces of
/// over-long lines as `P`, and a last unterminated line as `F`.
pub fn copy_stream(mut input: impl Read, stream: LogStream, writer: &std::sync::Mutex<LogWriter>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let emit = |content: &[u8], partial: bool| {
        if let Ok(mut w) = writer.lock() {
            if let Err(e) = w.write(stream, partial, content) {
                eprintln!("writing container log: {e:#}");
            }
        }
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            // A line may itself be longer than MAX_LINE when it arrived in one read.
            let mut piece = start;
            while end - piece > MAX_LINE {
                emit(&pending[piece..piece + MAX_LINE], true);
                piece += MAX_LINE;
            }
            emit(&pending[piece..end], false);
            start = end + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            emit(&pending[..MAX_LINE], true);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        emit(&pending, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let writer = std::sync::Mutex::new(LogWriter::open(&path, LogRotation::default()).unwrap());
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"hello\nworld".to_vec();
        input.push(b'\n');
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\ntail");
        copy_stream(&input[..], LogStream::Stderr, &writer);
        let lines = read_log(&path).unwrap();
        let got: Vec<(bool, usize)> = lines.iter().map(|l| (l.partial, l.content.len())).collect();
        assert_eq!(
            got,
            vec![
                (false, 5),
                (false, 5),
                (true, MAX_LINE),
                (false, 10),
                (false, 4)
            ]
        );
        assert!(lines.iter().all(|l| l.stream == LogStream::Stderr));
        assert_eq!(lines[0].content, b"hello");
        assert_eq!(lines[4].content, b"tail");
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(
            &path,
            LogRotation {
                max_size: 200,
                max_files: 3,
            },
        )
        .unwrap();
        for i in 0..100 {
            w.write(LogStream::Stdout, false, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert_eq!(rotated_files(&path).len(), 2);
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        let last = read_log(&path).unwrap();
        assert_eq!(last.last().unwrap().content, b"line 99");
    }
}
