//! Sending a stream's bytes as the windows allow.

use super::*;

fn blocked_pair() -> State {
    let mut state = State {
        window: 1 << 20,
        peer_max_frame: frame::DEFAULT_MAX_FRAME,
        ..State::default()
    };
    for id in [1, 3] {
        let slot = Slot {
            unsent: VecDeque::from([Bytes::from(vec![0u8; 100])]),
            unsent_len: 100,
            finish: Finish::Data,
            ..Slot::default()
        };
        state.streams.insert(id, slot);
        state.blocked.push_back(id);
    }
    state
}

#[test]
fn a_stream_short_of_its_own_window_does_not_hold_up_the_next() {
    let mut state = blocked_pair();
    state.streams.get_mut(&3).unwrap().window = 1000; // its WINDOW_UPDATE came, 1's did not
    state.send_blocked(&mut Vec::new());
    assert_eq!(state.blocked, [1]);
    assert_eq!(state.streams[&3].unsent_len, 0);
    assert_eq!(state.streams[&1].unsent_len, 100);
    assert_eq!(state.window, (1 << 20) - 100);
    // 1's call is gone: it leaves the line.
    state.streams.remove(&1);
    state.send_blocked(&mut Vec::new());
    assert!(state.blocked.is_empty());
}

#[test]
fn a_request_goes_in_frames_as_large_as_the_windows_allow() {
    let mut state = blocked_pair();
    state.window = 60;
    state.streams.get_mut(&1).unwrap().window = 1000;
    assert!(
        !state.send_unsent(1),
        "40 bytes left for want of connection window"
    );
    assert_eq!(state.streams[&1].unsent_len, 40);
    let written = state.tail.split();
    let head = frame::Head::parse(&written).unwrap();
    assert_eq!(
        (head.kind, head.len, head.flags, head.stream),
        (frame::DATA, 60, 0, 1)
    );
    state.window = 1000;
    assert!(state.send_unsent(1));
    let head = frame::Head::parse(&state.tail).unwrap();
    assert_eq!((head.len, head.flags), (40, frame::END_STREAM));
}
