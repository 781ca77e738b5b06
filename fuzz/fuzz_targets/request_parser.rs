//! The request parser (`parse_request`) on arbitrary frame payloads: it must never panic;
//! every error must be one of the three frame-level codes, with `bad_json` for anything that
//! is not JSON; it may accept only a JSON object (docs/protocol.md §2); and anything it
//! accepts must encode and parse back to the same request.

#![no_main]

use chat_svc::protocol::codec::{encode_json, parse_request};
use chat_svc::protocol::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            let value: serde_json::Value =
                serde_json::from_slice(data).expect("an accepted request is JSON");
            assert!(
                value.is_object(),
                "a request that is not a JSON object was accepted"
            );
            let again =
                parse_request(&encode_json(&request)).expect("re-parse an accepted request");
            assert_eq!(again, request, "a request changed on a round trip");
        }
        Err(e) => {
            let is_json = serde_json::from_slice::<serde_json::Value>(data).is_ok();
            match e.code {
                ErrorCode::BadJson => assert!(!is_json, "valid JSON classified as bad_json"),
                ErrorCode::BadRequest | ErrorCode::UnknownType => {
                    assert!(is_json, "invalid JSON classified as {}", e.code)
                }
                other => panic!("parse_request returned {other}"),
            }
            assert!(!e.message.is_empty());
        }
    }
});
