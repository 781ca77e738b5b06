//! Property tests (proptest) for everything that parses untrusted text or bytes: the request
//! parser, the frame decoder, user names, the config file and pins. Each property runs 1024
//! cases, so the module takes under a second in a debug build; `fuzz/` runs the same parsers
//! for much longer outside CI.

use bytes::{Bytes, BytesMut};
use chat_svc::config::FileConfig;
use chat_svc::protocol::codec::{encode_json, parse_request, FrameCodec, FrameError};
use chat_svc::protocol::{ErrorCode, Request, Secret, Username};
use chat_svc::tls::Fingerprint;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

/// Cases per property; failures are reported with the shrunk input, not saved to disk.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The request parser.
// ---------------------------------------------------------------------------------------------

/// Field names the protocol uses, so generated objects often collide with real fields.
const FIELDS: &[&str] = &[
    "type",
    "req",
    "version",
    "client",
    "user",
    "password",
    "device",
    "token",
    "to",
    "body",
    "key",
    "upto",
    "peer",
    "before",
    "after",
    "limit",
    "room",
    "private",
    "all",
    "query",
    "in",
    "conversation",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(Request::TYPES).prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELDS).prop_map(str::to_string),
        "[a-z_]{0,8}",
        any::<String>(),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object that looks like a request: usually a known `type`, often a `req`, and some
/// of the protocol's field names with arbitrary values.
fn request_like() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        4 => prop::sample::select(Request::TYPES).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let req = prop_oneof![
        3 => any::<u64>().prop_map(Value::from),
        1 => json_leaf(),
    ];
    (
        prop::option::weighted(0.95, kind),
        prop::option::weighted(0.8, req),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..6),
    )
        .prop_map(|(kind, req, fields)| {
            let mut obj = Map::new();
            for (k, v) in fields {
                obj.insert(k.to_string(), v);
            }
            if let Some(kind) = kind {
                obj.insert("type".into(), kind);
            }
            if let Some(req) = req {
                obj.insert("req".into(), req);
            }
            Value::Object(obj)
        })
}

/// The documented classification of a JSON value that is not a valid request.
fn expected_error(value: &Value) -> (ErrorCode, Option<u64>) {
    let req = value.get("req").and_then(Value::as_u64);
    let Some(obj) = value.as_object() else {
        return (ErrorCode::BadRequest, req);
    };
    match obj.get("type").and_then(Value::as_str) {
        None => (ErrorCode::BadRequest, req),
        Some(t) if !Request::TYPES.contains(&t) => (ErrorCode::UnknownType, req),
        Some(_) => (ErrorCode::BadRequest, req),
    }
}

/// Checks `parse_request` on the encoding of `value` against the documented classification.
fn check_classification(value: &Value) -> Result<(), TestCaseError> {
    let payload = serde_json::to_vec(value).unwrap();
    match parse_request(&payload) {
        Ok(request) => {
            // Only an object with a known type and a u64 `req` can parse, and `req` is kept.
            let obj = value.as_object().expect("only objects parse as requests");
            let kind = obj["type"].as_str().expect("type is a string");
            prop_assert!(Request::TYPES.contains(&kind));
            prop_assert_eq!(Some(request.req()), obj["req"].as_u64());
        }
        Err(e) => {
            prop_assert_eq!((e.code, e.req), expected_error(value), "{}", e.message);
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn parse_request_never_panics_on_bytes(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = parse_request(&payload) {
            prop_assert!(matches!(
                e.code,
                ErrorCode::BadJson | ErrorCode::BadRequest | ErrorCode::UnknownType
            ));
            if payload.is_empty() || std::str::from_utf8(&payload).is_err() {
                prop_assert_eq!((e.code, e.req), (ErrorCode::BadJson, None));
            }
        }
    }

    #[test]
    fn parse_request_classifies_any_json(value in json_value()) {
        check_classification(&value)?;
    }

    #[test]
    fn parse_request_classifies_request_like_objects(value in request_like()) {
        check_classification(&value)?;
    }

    /// Truncating a valid request anywhere gives `bad_json`, never a panic or a request.
    #[test]
    fn truncated_requests_are_bad_json(request in any_request(), cut in any::<prop::sample::Index>()) {
        let full = encode_json(&request);
        let cut = cut.index(full.len());
        let e = parse_request(&full[..cut]).unwrap_err();
        prop_assert_eq!((e.code, e.req), (ErrorCode::BadJson, None));
    }
}

/// A request is a JSON object (docs/protocol.md §2). serde would also accept an internally
/// tagged enum written as an array, `[type, field, field, …]` in declaration order; the
/// parser must not, so these are `bad_request` like any other non-object.
#[test]
fn array_forms_of_requests_are_bad_request() {
    for payload in [
        r#"["ping",1]"#,
        r#"["subscribe",0]"#,
        r#"["logout",7]"#,
        r#"["hello",1,1]"#,
        r#"["send",2,"bob","sent as an array","k1"]"#,
        r#"["ack",3,99]"#,
    ] {
        match parse_request(payload.as_bytes()) {
            Ok(request) => panic!("{payload} was parsed as {request:?}"),
            Err(e) => assert_eq!((e.code, e.req), (ErrorCode::BadRequest, None), "{payload}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Round trip of every request type.
// ---------------------------------------------------------------------------------------------

/// Any string, including control characters, quotes, backslashes and astral characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\"\\\\/a-z\u{7f}\u{2028}\u{1F600}]{0,16}",
    ]
}

/// Any [`Request`], every variant.
fn any_request() -> impl Strategy<Value = Request> {
    let opt_text = || prop::option::of(text());
    let req = any::<u64>;
    prop_oneof![
        (req(), any::<u32>(), opt_text()).prop_map(|(req, version, client)| Request::Hello {
            req,
            version,
            client,
        }),
        (req(), text(), text(), opt_text(), opt_text()).prop_map(
            |(req, user, password, device, proof)| Request::Login {
                req,
                user,
                password: Secret::new(password),
                device,
                proof: proof.map(Secret::new),
            }
        ),
        (req(), text()).prop_map(|(req, token)| Request::Auth {
            req,
            token: Secret::new(token),
        }),
        (req(), text(), text(), text(), any::<bool>()).prop_map(|(req, to, body, key, action)| {
            Request::Send {
                req,
                to,
                body,
                key,
                action,
            }
        }),
        req().prop_map(|req| Request::Subscribe { req }),
        (req(), any::<i64>()).prop_map(|(req, upto)| Request::Ack { req, upto }),
        (
            req(),
            text(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            any::<Option<u32>>()
        )
            .prop_map(|(req, peer, before, after, limit)| Request::History {
                req,
                peer,
                before,
                after,
                limit,
            }),
        (req(), text(), any::<bool>()).prop_map(|(req, room, private)| Request::RoomCreate {
            req,
            room,
            private,
        }),
        (req(), text(), text()).prop_map(|(req, room, user)| Request::RoomInvite {
            req,
            room,
            user,
        }),
        (req(), text()).prop_map(|(req, room)| Request::RoomJoin { req, room }),
        (req(), text()).prop_map(|(req, room)| Request::RoomLeave { req, room }),
        (req(), text()).prop_map(|(req, room)| Request::RoomDel { req, room }),
        (req(), text(), text()).prop_map(|(req, room, user)| Request::RoomKick { req, room, user }),
        (req(), any::<bool>()).prop_map(|(req, all)| Request::RoomList { req, all }),
        (req(), text()).prop_map(|(req, room)| Request::RoomMembers { req, room }),
        (req(), text(), opt_text(), any::<Option<u32>>()).prop_map(
            |(req, query, within, limit)| Request::Search {
                req,
                query,
                within,
                limit,
            }
        ),
        (req(), text(), any::<Option<i64>>()).prop_map(|(req, conversation, upto)| {
            Request::Read {
                req,
                conversation,
                upto,
            }
        }),
        req().prop_map(|req| Request::Unread { req }),
        req().prop_map(|req| Request::Logout { req }),
        req().prop_map(|req| Request::Ping { req }),
    ]
}

/// The `type` tag of a request and its optional fields (those a client may leave out). The
/// match has no wildcard: a new variant does not compile until it is added here and to
/// [`any_request`].
fn shape(request: &Request) -> (&'static str, &'static [&'static str]) {
    match request {
        Request::Hello { .. } => ("hello", &["client"]),
        Request::Login { .. } => ("login", &["device", "proof"]),
        Request::Auth { .. } => ("auth", &[]),
        Request::Send { .. } => ("send", &["action"]),
        Request::Subscribe { .. } => ("subscribe", &[]),
        Request::Ack { .. } => ("ack", &[]),
        Request::History { .. } => ("history", &["before", "after", "limit"]),
        Request::RoomCreate { .. } => ("room_create", &["private"]),
        Request::RoomInvite { .. } => ("room_invite", &[]),
        Request::RoomJoin { .. } => ("room_join", &[]),
        Request::RoomLeave { .. } => ("room_leave", &[]),
        Request::RoomDel { .. } => ("room_del", &[]),
        Request::RoomKick { .. } => ("room_kick", &[]),
        Request::RoomList { .. } => ("room_list", &["all"]),
        Request::RoomMembers { .. } => ("room_members", &[]),
        Request::Search { .. } => ("search", &["in", "limit"]),
        Request::Read { .. } => ("read", &["upto"]),
        Request::Unread { .. } => ("unread", &[]),
        Request::Logout { .. } => ("logout", &[]),
        Request::Ping { .. } => ("ping", &[]),
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn every_request_round_trips(request in any_request()) {
        let payload = encode_json(&request);
        let value: Value = serde_json::from_slice(&payload).unwrap();
        let (tag, _) = shape(&request);
        prop_assert_eq!(value["type"].as_str(), Some(tag));
        prop_assert!(Request::TYPES.contains(&tag));
        prop_assert_eq!(parse_request(&payload).unwrap(), request);
    }

    /// Unknown fields are ignored (documented), wherever they are in the object.
    #[test]
    fn unknown_fields_are_ignored(
        request in any_request(),
        extra in prop::collection::vec(("x_[a-z]{1,8}", json_value()), 1..4),
    ) {
        let mut value = serde_json::to_value(&request).unwrap();
        let obj = value.as_object_mut().unwrap();
        for (k, v) in extra {
            obj.insert(k, v);
        }
        let payload = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(parse_request(&payload).unwrap(), request);
    }

    /// Removing any field a variant requires gives `bad_request` with the `req` echoed (or no
    /// `req` when `req` itself was removed).
    #[test]
    fn missing_required_fields_are_bad_request(request in any_request(), pick in any::<prop::sample::Index>()) {
        let mut value = serde_json::to_value(&request).unwrap();
        let obj = value.as_object_mut().unwrap();
        let (_, optional) = shape(&request);
        let required: Vec<String> = obj
            .keys()
            .filter(|k| *k != "type" && !optional.contains(&k.as_str()))
            .cloned()
            .collect();
        let field = &required[pick.index(required.len())];
        obj.remove(field);
        let payload = serde_json::to_vec(&value).unwrap();
        let e = parse_request(&payload).unwrap_err();
        let req = (field != "req").then(|| request.req());
        prop_assert_eq!((e.code, e.req), (ErrorCode::BadRequest, req), "{}", e.message);
    }
}

// ---------------------------------------------------------------------------------------------
// The frame decoder.
// ---------------------------------------------------------------------------------------------

/// How a decode ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Every byte was consumed.
    Clean,
    TooLarge,
    Truncated,
}

fn ending(e: FrameError) -> Ending {
    match e {
        FrameError::TooLarge { .. } => Ending::TooLarge,
        FrameError::Truncated => Ending::Truncated,
        FrameError::Io(e) => panic!("decoding from memory cannot fail with i/o: {e}"),
    }
}

/// Decodes a stream that arrives in `chunks`, then ends.
fn decode_chunks(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Ending) {
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
            Ok(None) => return (frames, Ending::Clean),
            Err(e) => return (frames, ending(e)),
        }
    }
}

/// Splits `bytes` at the given fractions (sorted, deduplicated positions).
fn split_at<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points {
        chunks.push(&bytes[start..p]);
        start = p;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// A byte stream: well-formed frames (some over the limit) with arbitrary bytes mixed in.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..80).prop_map(|payload| {
            let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&payload);
            framed
        }),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn frames_do_not_depend_on_how_the_stream_is_split(
        stream in frame_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let max = 64;
        let whole = decode_chunks(max, &[&stream]);
        let split = decode_chunks(max, &split_at(&stream, &cuts));
        prop_assert_eq!(&split, &whole);
        // Byte by byte is the most hostile split of all.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&decode_chunks(max, &bytes), &whole);
        for frame in &whole.0 {
            prop_assert!(frame.len() <= max);
        }
    }

    #[test]
    fn encoded_frames_decode_to_themselves(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut codec = FrameCodec::with_max(256);
        let mut wire = BytesMut::new();
        for p in &payloads {
            codec.encode(Bytes::from(p.clone()), &mut wire).unwrap();
        }
        let (frames, end) = decode_chunks(256, &split_at(&wire, &cuts));
        prop_assert_eq!(end, Ending::Clean);
        prop_assert_eq!(frames, payloads);
    }

    /// A stream that ends inside a frame (in its length prefix or its payload) is
    /// `Truncated`, after every complete frame before it.
    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut codec = FrameCodec::with_max(256);
        let mut wire = BytesMut::new();
        let mut last_start = 0;
        for p in &payloads {
            last_start = wire.len();
            codec.encode(Bytes::from(p.clone()), &mut wire).unwrap();
        }
        // Strictly inside the last frame: at least one byte of it, not all of it.
        let inside = wire.len() - last_start - 1;
        let end = last_start + 1 + cut.index(inside);
        let (frames, ending) = decode_chunks(256, &[&wire[..end]]);
        prop_assert_eq!(&frames[..], &payloads[..payloads.len() - 1]);
        prop_assert_eq!(ending, Ending::Truncated, "stream cut {} bytes into the last frame", end - last_start);
    }

    #[test]
    fn oversized_frames_are_refused_by_the_encoder(len in 257usize..600) {
        let mut codec = FrameCodec::with_max(256);
        let mut wire = BytesMut::new();
        let refused = codec.encode(Bytes::from(vec![b'x'; len]), &mut wire);
        let too_large = matches!(refused, Err(FrameError::TooLarge { max: 256 }));
        prop_assert!(too_large, "{:?}", refused);
    }
}

// ---------------------------------------------------------------------------------------------
// User names.
// ---------------------------------------------------------------------------------------------

/// The documented syntax, written out without the parser's code: 1-32 characters from
/// `a-z 0-9 _ - .` after folding ASCII upper case, the first a letter or digit.
fn reference_username(input: &str) -> Option<String> {
    let folded: String = input
        .chars()
        .map(|c| match c {
            'A'..='Z' => char::from(c as u8 + 32),
            other => other,
        })
        .collect();
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-' | '.');
    let starts_well = matches!(folded.chars().next(), Some('a'..='z' | '0'..='9'));
    let length = folded.chars().count();
    ((1..=32).contains(&length) && starts_well && folded.chars().all(allowed)).then_some(folded)
}

/// Names drawn mostly from the allowed alphabet plus look-alikes and hostile characters.
fn name_like() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => prop::sample::select(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
                .chars()
                .collect::<Vec<_>>()
        ),
        1 => prop::sample::select(vec![
            ' ', '\t', '\n', '\0', '\u{7f}', '/', '@', '#', ':', '\u{200b}', '\u{feff}',
            '\u{430}', // Cyrillic а
            '\u{3bf}', // Greek ο
            '\u{212a}', // Kelvin sign K
            '\u{131}', // dotless ı
            '\u{130}', // İ
            '\u{ff41}', // fullwidth ａ
            'é', 'ß',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..40).prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn usernames_follow_the_documented_syntax(input in name_like()) {
        let parsed = Username::parse(&input).ok().map(|n| n.as_str().to_string());
        prop_assert_eq!(&parsed, &reference_username(&input));
        if let Some(name) = parsed {
            // Idempotent: a parsed name parses to itself.
            let again = Username::parse(&name).unwrap();
            prop_assert_eq!(again.as_str(), name.as_str());
            prop_assert!(name.is_ascii());
        }
    }

    #[test]
    fn usernames_never_panic_on_any_string(input in any::<String>()) {
        let parsed = Username::parse(&input).ok().map(|n| n.as_str().to_string());
        prop_assert_eq!(parsed, reference_username(&input));
    }
}

// ---------------------------------------------------------------------------------------------
// The config file.
// ---------------------------------------------------------------------------------------------

/// One `key = value` line: known keys with values of the right and wrong types.
fn config_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "listen",
        "db",
        "cert_dir",
        "tls_cert",
        "tls_key",
        "tls_names",
        "durability",
        "max_body_bytes",
        "max_connections",
        "max_connections_per_address",
        "send_rate_per_second",
        "send_burst",
        "idle_timeout_secs",
        "auth_timeout_secs",
        "colour",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| format!("{s:?}")),
        Just("\"normal\"".to_string()),
        Just("[\"a\", 1]".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("1e400".to_string()),
        Just("true".to_string()),
        any::<String>(),
    ];
    (key, value).prop_map(|(k, v)| format!("{k} = {v}"))
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn config_parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = FileConfig::parse(&text);
    }

    #[test]
    fn config_parse_never_panics_on_config_like_text(
        lines in prop::collection::vec(config_line(), 0..6),
    ) {
        let _ = FileConfig::parse(&lines.join("\n"));
    }

    #[test]
    fn config_numbers_are_kept_exactly(conns in any::<u32>(), idle in any::<u32>()) {
        let text = format!("max_connections = {conns}\nidle_timeout_secs = {idle}\n");
        let parsed = FileConfig::parse(&text).unwrap();
        prop_assert_eq!(parsed.max_connections, Some(conns as usize));
        prop_assert_eq!(parsed.idle_timeout_secs, Some(u64::from(idle)));
    }
}

// ---------------------------------------------------------------------------------------------
// Pins.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn fingerprints_print_and_parse_back(bytes in any::<[u8; 32]>(), upper in any::<bool>()) {
        let printed = format!("sha256:{}", hex::encode(bytes));
        let fp: Fingerprint = printed.parse().unwrap();
        prop_assert_eq!(fp.to_string(), printed.clone());
        prop_assert_eq!(format!("{fp:?}"), printed.clone());
        // Upper-case hex and surrounding whitespace are accepted (documented), same pin.
        let hex_part = if upper { hex::encode_upper(bytes) } else { hex::encode(bytes) };
        let loose: Fingerprint = format!("  sha256:{hex_part}\n").parse().unwrap();
        prop_assert_eq!(loose, fp);
    }

    #[test]
    fn fingerprints_refuse_anything_else(input in any::<String>()) {
        if let Ok(fp) = input.parse::<Fingerprint>() {
            // Only a well-formed pin parses, and it prints in the canonical form.
            prop_assert_eq!(fp.to_string(), input.trim().to_ascii_lowercase());
        }
    }

    #[test]
    fn fingerprints_of_the_wrong_length_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let parsed = format!("sha256:{}", hex::encode(&bytes)).parse::<Fingerprint>();
        prop_assert_eq!(parsed.is_ok(), bytes.len() == 32);
    }
}
