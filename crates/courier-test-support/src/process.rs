//! A child process's output, line by line, to wait on the line that says
//! something happened (subscribed, started, a message arrived).

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The lines a reader (a child's stdout or stderr) gives, read by a thread
/// of their own; each line keeps its `\n`.
pub struct Lines {
    rx: Receiver<Vec<u8>>,
}

impl Lines {
    /// Starts reading `reader` line by line.
    pub fn new(reader: impl Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        let mut reader = BufReader::new(reader);
        std::thread::spawn(move || {
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// The first line from now on that `matches`, within `timeout`; `Err`
    /// says whether the output ended or the time ran out.
    pub fn until(
        &self,
        timeout: Duration,
        mut matches: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no such line within {timeout:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the output ended".into()),
            }
        }
    }

    /// Every line still to come, until the output ends.
    pub fn rest(self) -> Vec<Vec<u8>> {
        self.rx.iter().collect()
    }
}
