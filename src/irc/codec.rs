//! Line framing for IRC: lines ended by CRLF, LF or CR, with a maximum length.
//!
//! Unlike `tokio_util::codec::LinesCodec`, a bad line is not an error that ends the stream:
//! an over-long line is discarded up to its end and reported as [`Line::TooLong`], a line that
//! is not UTF-8 is reported as [`Line::NotUtf8`] with a lossy copy (so the session can name
//! the command in its answer), and the connection goes on.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Longest line accepted from a client, in bytes without the line ending: 8191 bytes of tags
/// and 512 of message (the IRCv3 message-tags limits).
pub const MAX_CLIENT_LINE: usize = 8191 + 512;

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A UTF-8 line without its line ending.
    Text(String),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
    /// A line that is not valid UTF-8 (or contains NUL); a lossy copy.
    NotUtf8(String),
}

/// The IRC line codec.
#[derive(Debug)]
pub struct IrcCodec {
    max: usize,
    /// Set while discarding the rest of an over-long line.
    discarding: bool,
    /// How far the buffer was already searched for a line end.
    scanned: usize,
}

impl IrcCodec {
    /// A codec accepting lines up to `max` bytes.
    pub fn new(max: usize) -> Self {
        IrcCodec {
            max,
            discarding: false,
            scanned: 0,
        }
    }
}

impl Decoder for IrcCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        loop {
            // CR, LF and CRLF all end a line (empty lines are skipped below).
            let newline = src[self.scanned..]
                .iter()
                .position(|b| matches!(b, b'\n' | b'\r'));
            let Some(offset) = newline else {
                if src.len() > self.max + 1 {
                    // No line end within the limit: drop what is here and keep discarding.
                    src.clear();
                    self.scanned = 0;
                    self.discarding = true;
                } else {
                    self.scanned = src.len();
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            let line = src.split_to(end + 1);
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) {
                return Ok(Some(Line::TooLong));
            }
            let text = &line[..end];
            if text.len() > self.max {
                return Ok(Some(Line::TooLong));
            }
            if text.is_empty() {
                // Empty lines are ignored, as every IRC server does.
                continue;
            }
            return Ok(Some(match std::str::from_utf8(text) {
                Ok(s) if !s.contains('\0') => Line::Text(s.to_string()),
                _ => Line::NotUtf8(String::from_utf8_lossy(text).replace('\0', "\u{FFFD}")),
            }));
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        match self.decode(src)? {
            Some(line) => Ok(Some(line)),
            None => {
                // A last line without its ending is dropped with the connection.
                src.advance(src.len());
                Ok(None)
            }
        }
    }
}

impl Encoder<String> for IrcCodec {
    type Error = std::io::Error;

    fn encode(&mut self, line: String, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.reserve(line.len() + 2);
        dst.extend_from_slice(line.as_bytes());
        dst.extend_from_slice(b"\r\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut IrcCodec, input: &[u8]) -> Vec<Line> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(l) = codec.decode(&mut buf).unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn splits_lines_and_recovers_from_bad_ones() {
        let mut c = IrcCodec::new(10);
        let got = decode_all(
            &mut c,
            b"NICK a\r\n\r\nUSER b\nPRIVMSG #averylongline\r\nPING \xff\r\nX\n",
        );
        assert_eq!(
            got,
            [
                Line::Text("NICK a".into()),
                Line::Text("USER b".into()),
                Line::TooLong,
                Line::NotUtf8("PING \u{FFFD}".into()),
                Line::Text("X".into()),
            ]
        );
    }

    #[test]
    fn discards_a_long_line_arriving_in_pieces() {
        let mut c = IrcCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"ijk\r\nok\r\n");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Line::TooLong));
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Line::Text("ok".into())));
        assert_eq!(c.decode(&mut buf).unwrap(), None);
    }
}
