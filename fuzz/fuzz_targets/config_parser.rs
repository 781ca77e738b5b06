//! The config file parser (`FileConfig::parse`) and the merge that follows it (`resolve`) on
//! arbitrary text: neither may panic, whatever the file says.

#![no_main]

use chat_svc::config::{resolve, FileConfig, Overrides};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = FileConfig::parse(text) {
        let _ = resolve(&Overrides::default(), &file);
    }
});
