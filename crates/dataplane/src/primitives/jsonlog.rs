//! A JSON-lines file written by a thread of its own, fed through a bounded queue: a request never
//! waits on the disk; when the queue is full the line is dropped and counted. Optionally rotated
//! as Python's RotatingFileHandler does (`PATH.1` … `PATH.N`, the oldest dropped).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError};
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);

use serde::Serialize;

/// Rotation: past `max_bytes` the file becomes `PATH.1`, and so on up to `backups`.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    pub max_bytes: u64,
    pub backups: u32,
}

pub struct JsonLog<T> {
    sender: SyncSender<T>,
    pub dropped: AtomicU64,
}

enum Sink {
    Stdout(std::io::Stdout),
    File {
        path: PathBuf,
        file: BufWriter<File>,
        size: u64,
        rotation: Option<Rotation>,
    },
}

fn open(path: &PathBuf) -> std::io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    Ok((BufWriter::new(file), size))
}

impl Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(line),
            Sink::File {
                path,
                file,
                size,
                rotation,
            } => {
                if let Some(rotation) = rotation {
                    if *size > 0 && *size + line.len() as u64 > rotation.max_bytes {
                        file.flush()?;
                        let numbered = |n: u32| {
                            let mut name = path.clone().into_os_string();
                            name.push(format!(".{n}"));
                            PathBuf::from(name)
                        };
                        if rotation.backups == 0 {
                            std::fs::remove_file(&*path)?;
                        } else {
                            for n in (1..rotation.backups).rev() {
                                let _ = std::fs::rename(numbered(n), numbered(n + 1));
                            }
                            std::fs::rename(&*path, numbered(1))?;
                        }
                        (*file, *size) = open(path)?;
                    }
                }
                *size += line.len() as u64;
                file.write_all(line)
            }
        }
    }

    fn flush(&mut self) {
        let _ = match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File { file, .. } => file.flush(),
        };
    }
}

impl<T: Serialize + Send + 'static> JsonLog<T> {
    /// `target`: a file path, or "-" for standard output.
    pub fn open(
        target: &str,
        rotation: Option<Rotation>,
        capacity: usize,
        name: &str,
    ) -> std::io::Result<JsonLog<T>> {
        let mut sink = if target == "-" {
            Sink::Stdout(std::io::stdout())
        } else {
            let path = PathBuf::from(target);
            let (file, size) = open(&path)?;
            Sink::File {
                path,
                file,
                size,
                rotation,
            }
        };
        let (sender, receiver) = sync_channel::<T>(capacity);
        // The writer wakes on a timer and drains what came meanwhile: a request's `write` never
        // wakes a thread (no futex call per line), and lines go out in batches.
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                let mut ended = false;
                loop {
                    match receiver.try_recv() {
                        Ok(entry) => {
                            if let Ok(mut line) = serde_json::to_vec(&entry) {
                                line.push(b'\n');
                                let _ = sink.write(&line);
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            ended = true;
                            break;
                        }
                    }
                }
                sink.flush();
                if ended {
                    break;
                }
            })?;
        Ok(JsonLog {
            sender,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue a line; never blocks (a full queue drops it, and counts).
    pub fn write(&self, entry: T) {
        if self.sender.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_rotate_into_numbered_backups() {
        let folder = std::env::temp_dir().join(format!("jsonlog-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("log.jsonl");
        let log = JsonLog::open(
            path.to_str().unwrap(),
            Some(Rotation {
                max_bytes: 30,
                backups: 2,
            }),
            64,
            "test-log",
        )
        .unwrap();
        for i in 0..6 {
            log.write(serde_json::json!({"line": i}));
        }
        drop(log); // the writer drains the queue and ends
        std::thread::sleep(Duration::from_millis(300));
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "{\"line\":4}\n{\"line\":5}\n");
        assert_eq!(
            read(folder.join("log.jsonl.1")),
            "{\"line\":2}\n{\"line\":3}\n"
        );
        assert_eq!(
            read(folder.join("log.jsonl.2")),
            "{\"line\":0}\n{\"line\":1}\n"
        );
        assert!(!folder.join("log.jsonl.3").exists());
        let _ = std::fs::remove_dir_all(folder);
    }
}
