//! Fuzzes the msgpack decoder, batched splitting included: any input must decode or fail with
//! an error, never panic; whatever decodes must re-encode, and re-encoding is stable (bytes
//! compared, so NaN payloads count as equal).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::wire::{Codec, Serializer};

fuzz_target!(|data: &[u8]| {
    let serializer = Serializer::MsgPack;
    if let Ok(msg) = serializer.decode(data) {
        let first = serializer.encode(&msg).expect("a decoded message re-encodes");
        let again = serializer.decode(&first).expect("re-encoded bytes decode");
        let second = serializer.encode(&again).expect("and re-encode");
        assert_eq!(first, second);
    }
    let batched = Codec { batched: true, ..Codec::plain(serializer) };
    if let Ok(parts) = batched.split_frame(data) {
        for part in parts {
            let _ = serializer.decode(part);
        }
    }
});
