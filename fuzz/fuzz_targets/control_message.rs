//! `Control::decode` on arbitrary bytes, and the same bytes as the payload of a control
//! frame through `messages::recv`.
//!
//! Checks: no panic; an accepted message re-encodes to JSON that decodes to the same
//! message; `recv` agrees with `decode` on the same payload.

#![no_main]

use dwcp_agent::protocol::{
    frame::{FrameReader, FrameType, FrameWriter},
    messages::{self, Control, MAX_CONTROL_LEN},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Control::decode(data);
    if let Ok(msg) = &decoded {
        let again = Control::decode(&msg.encode()).expect("re-encoded message must decode");
        assert_eq!(&again, msg, "message does not round-trip");
    }
    let mut writer = FrameWriter::new(Vec::new());
    if writer.write_frame(FrameType::Control, 0, 0, data).is_err() {
        return;
    }
    let wire = writer.get_ref();
    let received = messages::recv(&mut FrameReader::new(&wire[..], MAX_CONTROL_LEN));
    match (&decoded, &received) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("recv and decode disagree: {decoded:?} vs {received:?}"),
    }
});
