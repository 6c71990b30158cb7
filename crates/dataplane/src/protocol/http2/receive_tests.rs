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
