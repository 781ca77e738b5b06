//! The frame decoder (`FrameCodec`) on an arbitrary byte stream, delivered in chunks of an
//! input-chosen size: it must never panic, must give the same frames and the same ending
//! however the stream is split, must never return a frame over its limit, and may end
//! cleanly only when the frames account for every byte of the stream (anything left over is
//! a truncated frame). Every frame is then handed to the request parser, as the server does.
//!
//! Input layout: byte 0 picks the limit (small limits reach `TooLarge` often), byte 1 the
//! chunk size, the rest is the stream.

#![no_main]

use bytes::BytesMut;
use chat_svc::protocol::codec::{parse_request, FrameCodec, FrameError};
use chat_svc::protocol::MAX_FRAME_LEN;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, stream @ ..] = data else {
        return;
    };
    let max = match limit {
        0 => MAX_FRAME_LEN,
        n => usize::from(*n),
    };
    let chunk = usize::from(*chunk).max(1);
    let whole = decode(max, &[stream]);
    let split: Vec<&[u8]> = stream.chunks(chunk).collect();
    assert_eq!(decode(max, &split), whole, "the split changed the result");
    let mut consumed = 0;
    for frame in &whole.0 {
        assert!(frame.len() <= max, "a frame over the limit was returned");
        consumed += 4 + frame.len();
        let _ = parse_request(frame);
    }
    if whole.1 == "clean" {
        assert_eq!(
            consumed,
            stream.len(),
            "a clean end left bytes of a frame unread"
        );
    }
});

/// Frames decoded from a stream arriving in `chunks`, and how the stream ended.
fn decode(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, &'static str) {
    let mut codec = FrameCodec::with_max(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(e) => return (frames, ending(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame.to_vec()),
            Ok(None) => return (frames, "clean"),
            Err(e) => return (frames, ending(e)),
        }
    }
}

fn ending(e: FrameError) -> &'static str {
    match e {
        FrameError::TooLarge { .. } => "too large",
        FrameError::Truncated => "truncated",
        FrameError::Io(_) => panic!("decoding from memory failed with an i/o error"),
    }
}
