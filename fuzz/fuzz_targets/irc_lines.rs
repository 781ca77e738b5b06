//! The IRC gateway's input path on an arbitrary byte stream: the line codec (`IrcCodec`),
//! delivered in chunks of an input-chosen size, then the message parser on every line. It
//! must never panic, must give the same lines however the stream is split, never a text line
//! over the limit or with a line end or NUL in it, and every parsed message must read back
//! to itself once written.
//!
//! Input layout: byte 0 picks the limit (0: the real one), byte 1 the chunk size, the rest
//! is the stream.

#![no_main]

use bytes::BytesMut;
use chat_svc::irc::codec::{IrcCodec, Line, MAX_CLIENT_LINE};
use chat_svc::irc::message::IrcMessage;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, stream @ ..] = data else {
        return;
    };
    let max = match limit {
        0 => MAX_CLIENT_LINE,
        n => usize::from(*n),
    };
    let chunk = usize::from(*chunk).max(1);
    let whole = decode(max, &[stream]);
    let split: Vec<&[u8]> = stream.chunks(chunk).collect();
    assert_eq!(decode(max, &split), whole, "the split changed the lines");
    for line in &whole {
        let text = match line {
            Line::Text(t) => {
                assert!(t.len() <= max, "a line over the limit was returned");
                assert!(!t.contains(['\r', '\n', '\0']), "a line end or NUL inside a line");
                t
            }
            Line::NotUtf8(t) => t,
            Line::TooLong => continue,
        };
        if let Some(m) = IrcMessage::parse(text) {
            assert_eq!(IrcMessage::parse(&m.to_line()).as_ref(), Some(&m));
        }
    }
});

fn decode(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
    let mut codec = IrcCodec::new(max);
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(line) = codec.decode(&mut buf).expect("decoding never fails") {
            lines.push(line);
        }
    }
    while let Some(line) = codec.decode_eof(&mut buf).expect("decoding never fails") {
        lines.push(line);
    }
    lines
}
