//! Splits a child's output into lines as they arrive: `\n` (or `\r\n`) ends a line,
//! a lone `\r` ends a progress update (shown as status, not logged).

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Longest line kept whole; longer output is split into lines of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// One piece of output.
#[derive(Debug, PartialEq)]
pub struct Chunk {
    pub stream: Stream,
    pub text: String,
    /// Ended by a lone `\r`: a progress update.
    pub progress: bool,
}

/// Reads `r` to its end, sending each line to `tx`.
pub async fn split<R: AsyncRead + Unpin>(mut r: R, stream: Stream, tx: mpsc::Sender<Chunk>) {
    let mut line: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending_cr = false;
    let send = |line: &mut Vec<u8>, progress: bool| {
        let text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        Chunk {
            stream,
            text,
            progress,
        }
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if pending_cr {
                pending_cr = false;
                if b == b'\n' {
                    if tx.send(send(&mut line, false)).await.is_err() {
                        return;
                    }
                    continue;
                }
                if tx.send(send(&mut line, true)).await.is_err() {
                    return;
                }
            }
            match b {
                b'\n' => {
                    if tx.send(send(&mut line, false)).await.is_err() {
                        return;
                    }
                }
                b'\r' => pending_cr = true,
                _ => {
                    line.push(b);
                    if line.len() >= MAX_LINE && tx.send(send(&mut line, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    if pending_cr {
        let _ = tx.send(send(&mut line, true)).await;
    } else if !line.is_empty() {
        let _ = tx.send(send(&mut line, false)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn chunks(input: &[u8]) -> Vec<(String, bool)> {
        let (tx, mut rx) = mpsc::channel(100);
        split(input, Stream::Out, tx).await;
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.push((c.text, c.progress));
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_progress_and_crlf() {
        let got = chunks(b"a\n10%\r20%\r\r\nb\r\nlast").await;
        let want = vec![
            ("a".to_string(), false),
            ("10%".to_string(), true),
            ("20%".to_string(), true),
            ("".to_string(), false),
            ("b".to_string(), false),
            ("last".to_string(), false),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_fatal() {
        let got = chunks(b"ok \xff\xfe\n").await;
        assert_eq!(got.len(), 1);
        assert!(got[0].0.starts_with("ok "));
    }
}
