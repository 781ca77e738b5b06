//! Framing: each frame is a 4-byte big-endian length followed by that many bytes of UTF-8
//! JSON. [`FrameCodec`] moves raw frames (built on tokio-util's length-delimited codec with
//! an explicit maximum); [`parse_request`] and [`parse_server_frame`] turn a frame into typed
//! values and classify what was wrong with a bad one.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::{ErrorCode, Request, ServerFrame, MAX_FRAME_LEN};

/// Why a frame could not be read off the stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame exceeds the maximum of {max} bytes")]
    TooLarge { max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Length-prefixed frames with an explicit size limit.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// True while the inner codec has consumed a length prefix but not yet its payload:
    /// an end of stream then is a truncated frame, even with no bytes left in the buffer.
    in_frame: bool,
}

impl FrameCodec {
    /// A codec refusing frames longer than [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max(MAX_FRAME_LEN)
    }

    /// A codec refusing frames longer than `max` bytes.
    pub fn with_max(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        FrameCodec {
            inner,
            max,
            in_frame: false,
        }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let before = src.len();
        match self.inner.decode(src).map_err(|e| self.classify(e))? {
            Some(frame) => {
                self.in_frame = false;
                Ok(Some(frame))
            }
            None => {
                if src.len() < before {
                    self.in_frame = true;
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && !self.in_frame => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl FrameCodec {
    fn classify(&self, e: std::io::Error) -> FrameError {
        let too_large = e
            .get_ref()
            .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
        if too_large {
            FrameError::TooLarge { max: self.max }
        } else {
            FrameError::Io(e)
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.inner.encode(item, dst).map_err(|e| self.classify(e))
    }
}

/// Serialises a value to the JSON payload of one frame.
pub fn encode_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising our own protocol types cannot fail: they contain only strings, numbers,
    // booleans, options and vectors, all representable in JSON.
    Bytes::from(serde_json::to_vec(value).expect("protocol types serialise to JSON"))
}

/// What was wrong with a frame that did not parse as a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The request number, when the frame was JSON carrying one.
    pub req: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one frame payload as a client request.
///
/// Invalid UTF-8 and malformed JSON are [`ErrorCode::BadJson`]; a `type` this protocol does not
/// define is [`ErrorCode::UnknownType`]; a known type with missing or mistyped fields is
/// [`ErrorCode::BadRequest`]. Unknown extra fields are ignored, so newer clients can add
/// optional fields.
pub fn parse_request(payload: &[u8]) -> Result<Request, ParseError> {
    // serde also reads a tagged enum from an array (`["ping", 5]`); the protocol only has
    // objects, so anything else is classified below instead.
    let is_object = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if is_object {
        if let Ok(request) = serde_json::from_slice::<Request>(payload) {
            return Ok(request);
        }
    }
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            let message = if payload.is_empty() {
                "empty frame".to_string()
            } else if std::str::from_utf8(payload).is_err() {
                "frame is not valid UTF-8".to_string()
            } else {
                format!("frame is not valid JSON: {}", e)
            };
            return Err(ParseError {
                req: None,
                code: ErrorCode::BadJson,
                message,
            });
        }
    };
    let req = value.get("req").and_then(|r| r.as_u64());
    let Some(obj) = value.as_object() else {
        return Err(ParseError {
            req,
            code: ErrorCode::BadRequest,
            message: "a request must be a JSON object".into(),
        });
    };
    let Some(kind) = obj.get("type").and_then(|t| t.as_str()) else {
        return Err(ParseError {
            req,
            code: ErrorCode::BadRequest,
            message: "a request needs a string field \"type\"".into(),
        });
    };
    if !Request::TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(ParseError {
            req,
            code: ErrorCode::UnknownType,
            message: format!("unknown request type {shown:?}"),
        });
    }
    // Re-run the typed parse to get serde's description of the missing or mistyped field.
    // Serde's messages name fields and expected types; they can quote a value, but only back
    // to the peer that sent it, and they are never logged.
    let kind = kind.to_string();
    let detail = match serde_json::from_slice::<Request>(payload) {
        Err(e) => e.to_string(),
        Ok(_) => "malformed request".to_string(),
    };
    Err(ParseError {
        req,
        code: ErrorCode::BadRequest,
        message: format!("invalid {kind:?} request: {detail}"),
    })
}

/// Parses one frame payload as a server frame (client side).
pub fn parse_server_frame(payload: &[u8]) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(parse_request(b"").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(
            parse_request(b"\xff\xfe").unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_request(b"{nope").unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_request(b"[1,2]").unwrap_err().code,
            ErrorCode::BadRequest
        );
        let e = parse_request(br#"{"type":"teleport","req":9}"#).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::UnknownType, Some(9)));
        let e = parse_request(br#"{"type":"send","req":4,"to":"bob"}"#).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(4)));
        assert!(e.message.contains("body"), "{}", e.message);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = parse_request(br#"{"type":"ping","req":2,"extra":[1]}"#).unwrap();
        assert_eq!(r, Request::Ping { req: 2 });
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut codec = FrameCodec::with_max(8);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 9][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { max: 8 })
        ));
        let mut codec = FrameCodec::with_max(8);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 4, b'{'][..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated)
        ));
        // Only the length prefix arrived: the codec consumed it, the buffer is empty, and
        // the stream still ended inside a frame.
        let mut codec = FrameCodec::with_max(8);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 4][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated)
        ));
    }
}
