//! What a server's connection reads, handled without I/O.

use super::*;
use crate::protocol::http2::shared::Finish;

#[test]
fn a_reset_after_the_handles_are_gone_forgets_the_stream_and_sends_nothing_more() {
    let mut state = State::opening(true);
    state.tail.clear();
    // An answer whose handler is done: its data and trailers wait for the client's window.
    let mut slot = state.new_slot();
    slot.unsent.push_back(Bytes::from(vec![0u8; 100]));
    slot.unsent_len = 100;
    slot.finish = Finish::Trailers(Bytes::from_static(&[0x88]));
    slot.ended = true;
    state.streams.insert(1, slot);
    state.blocked.push_back(1);
    let mut read = BytesMut::from(frame::PREFACE);
    frame::put_rst_stream(&mut read, 1, frame::CANCEL);
    frame::put_window_update(&mut read, 1, 1000);
    frame::put_window_update(&mut read, 0, 1000);
    let mut receiver = Receiver::new(true);
    receiver.frames(&mut read, &mut state).expect("well formed");
    assert!(state.streams.is_empty(), "forgotten");
    assert!(state.tail.is_empty(), "nothing sent on the reset stream");
}

#[test]
fn a_request_head_with_a_connection_specific_field_is_refused() {
    let head = |extra: &[(&str, &str)]| {
        let mut block = Block {
            method: Some(Bytes::from_static(b"POST")),
            scheme: Some(Bytes::from_static(b"http")),
            path: Some(Bytes::from_static(b"/a.B/C")),
            ..Block::default()
        };
        for (name, value) in extra {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            block.headers.insert(name, value.parse().unwrap());
        }
        request(block, &mut None)
    };
    assert!(head(&[("te", "trailers"), ("user-agent", "grpc")]).is_some());
    for field in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(head(&[(field, "x")]).is_none(), "{field}");
    }
    assert!(head(&[("te", "gzip")]).is_none());
}
