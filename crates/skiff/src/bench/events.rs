//! Reading a watch response: newline-delimited JSON events, each frame
//! stamped when it arrived (before parsing) so latencies exclude our parsing.

use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;

pub struct EventLines {
    body: Incoming,
    buf: Vec<u8>,
}

pub enum Next {
    /// Whole event lines that arrived together, and when.
    Lines(Instant, Vec<Vec<u8>>),
    /// The server ended the stream.
    End,
    Failed(String),
}

impl EventLines {
    pub fn new(body: Incoming) -> Self {
        EventLines { body, buf: Vec::new() }
    }

    pub async fn next(&mut self) -> Next {
        loop {
            let data = match self.body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers
                },
                Some(Err(e)) => return Next::Failed(format!("watch stream failed: {e}")),
                None => return Next::End,
            };
            let now = Instant::now();
            self.buf.extend_from_slice(&data);
            // A frame may hold several events or part of one.
            let mut lines = Vec::new();
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line);
                }
            }
            if !lines.is_empty() {
                return Next::Lines(now, lines);
            }
        }
    }
}
