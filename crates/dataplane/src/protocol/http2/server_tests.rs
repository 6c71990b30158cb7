//! The lean server against h2's client over an in-memory pipe.

use std::future::{poll_fn, Future};
use std::time::Duration;

use http::HeaderValue;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, oneshot};

use super::*;

/// What the test server's handlers answer, by the request's path.
async fn handle(
    request: Request<Incoming>,
    mut respond: Respond,
    events: mpsc::UnboundedSender<String>,
) {
    let path = request.uri().path().to_owned();
    let mut body = request.into_body();
    let head = {
        let mut head = HeaderMap::new();
        head.insert("content-type", HeaderValue::from_static("application/grpc"));
        head
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    match path.as_str() {
        "/echo" => {
            let mut received = BytesMut::new();
            while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
                if let Ok(data) = frame.expect("a whole request").into_data() {
                    received.extend_from_slice(&data);
                }
            }
            respond.send_head(200, &head, false).expect("head");
            respond.send_data(received.freeze(), false).expect("data");
            respond.send_trailers(&trailers).expect("trailers");
        }
        "/fail" => {
            trailers.insert("grpc-status", HeaderValue::from_static("5"));
            trailers.insert("content-type", HeaderValue::from_static("application/grpc"));
            respond
                .send_head(200, &trailers, true)
                .expect("trailers-only");
        }
        "/drop" => {
            respond.send_head(200, &head, false).expect("head");
            drop(respond);
        }
        "/wait" => {
            respond.send_head(200, &head, false).expect("head");
            poll_fn(|cx| respond.poll_reset(cx)).await;
            let failed = poll_fn(|cx| body.poll_frame(cx)).await;
            let _ = events.send(format!("reset seen, body {:?}", failed.map(|f| f.is_err())));
        }
        _ => respond.send_reset(frame::REFUSED_STREAM),
    }
}

/// The lean server on one end of a pipe, each request handled in a task of its own; the
/// server's events (and "ended" when its connection ended) come on the channel returned.
fn serve(io: DuplexStream) -> (mpsc::UnboundedReceiver<String>, oneshot::Sender<()>) {
    let (events, seen) = mpsc::unbounded_channel();
    let (shutdown, asked) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut server = Server::new(io);
        if let Err(reason) = poll_fn(|cx| server.poll_ready(cx)).await {
            let _ = events.send(format!("ended before a request: {reason}"));
            return;
        }
        let mut asked = Some(asked);
        loop {
            let accepted = poll_fn(|cx| {
                if let Some(ask) = asked.as_mut() {
                    if std::pin::Pin::new(ask).poll(cx).is_ready() {
                        asked = None;
                        server.graceful_shutdown();
                    }
                }
                server.poll_accept(cx)
            });
            let Some((request, respond)) = accepted.await else {
                break;
            };
            tokio::spawn(handle(request, respond, events.clone()));
        }
        let _ = events.send("ended".into());
    });
    (seen, shutdown)
}

async fn client(io: DuplexStream) -> h2::client::SendRequest<Bytes> {
    let (send, connection) = h2::client::handshake(io).await.expect("handshake");
    tokio::spawn(connection);
    send
}

fn post(path: &str) -> http::Request<()> {
    http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Sends `body` to `path`; the answer's status, data and trailers (or the stream's error).
async fn call(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    body: Bytes,
) -> Result<(u16, HeaderMap, Bytes, Option<HeaderMap>), h2::Error> {
    let mut send = send.clone().ready().await?;
    let (answer, mut stream) = send.send_request(post(path), body.is_empty())?;
    if !body.is_empty() {
        // Sent as the server's windows allow.
        let mut left = body;
        while !left.is_empty() {
            stream.reserve_capacity(left.len());
            let room = poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .expect("open")?;
            let chunk = left.split_to(room.min(left.len()));
            stream.send_data(chunk, left.is_empty())?;
        }
    }
    let (head, mut body) = answer.await?.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    Ok((head.status.as_u16(), head.headers, data.freeze(), trailers))
}

#[tokio::test]
async fn requests_and_answers_of_any_size_go_through_the_windows() {
    let (near, far) = tokio::io::duplex(64 << 10);
    let _events = serve(far);
    let mut send = client(near).await;
    let mut calls = Vec::new();
    for size in [0, 5, 100_000, 3 << 20] {
        let mut send = send.clone();
        let body = Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>());
        calls.push(tokio::spawn(async move {
            let (status, head, data, trailers) = call(&mut send, "/echo", body.clone())
                .await
                .expect("answered");
            assert_eq!(status, 200);
            assert_eq!(head["content-type"], "application/grpc");
            assert!(data == body, "the echo of {} bytes", body.len());
            assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        }));
    }
    for _ in 0..50 {
        let mut send = send.clone();
        calls.push(tokio::spawn(async move {
            let (_, _, data, _) = call(&mut send, "/echo", Bytes::from_static(b"x"))
                .await
                .unwrap();
            assert_eq!(&data[..], b"x");
        }));
    }
    for call in calls {
        call.await.expect("a call");
    }
    let (status, head, data, trailers) = call(&mut send, "/fail", Bytes::new()).await.unwrap();
    assert_eq!(
        (status, &head["grpc-status"], data.len()),
        (200, &HeaderValue::from_static("5"), 0)
    );
    assert!(trailers.is_none(), "trailers-only");
}

#[tokio::test]
async fn resets_go_both_ways() {
    let (near, far) = tokio::io::duplex(64 << 10);
    let (mut events, _shutdown) = serve(far);
    let mut send = client(near).await;
    // An answer dropped before its end: the client sees the stream cancelled.
    let dropped = call(&mut send, "/drop", Bytes::new())
        .await
        .expect_err("reset");
    assert_eq!(dropped.reason(), Some(h2::Reason::CANCEL));
    let refused = call(&mut send, "/nowhere", Bytes::new())
        .await
        .expect_err("reset");
    assert_eq!(refused.reason(), Some(h2::Reason::REFUSED_STREAM));
    // A client that resets its stream: the handler sees it, and its request fail.
    let (answer, mut stream) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(post("/wait"), false)
        .unwrap();
    let _head = answer.await.expect("the head");
    stream.send_reset(h2::Reason::CANCEL);
    let seen = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(
        seen.expect("in time").as_deref(),
        Some("reset seen, body Some(true)")
    );
}

#[tokio::test]
async fn after_goaway_the_calls_under_way_finish_and_the_connection_ends() {
    let (near, far) = tokio::io::duplex(64 << 10);
    let (mut events, shutdown) = serve(far);
    let mut send = client(near).await;
    let (answer, mut stream) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(post("/echo"), false)
        .unwrap();
    stream
        .send_data(Bytes::from_static(b"first"), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    shutdown.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        call(&mut send, "/echo", Bytes::from_static(b"late"))
            .await
            .is_err(),
        "refused"
    );
    stream
        .send_data(Bytes::from_static(b" and last"), true)
        .unwrap();
    let mut body = answer.await.expect("answered").into_body();
    let data = body.data().await.expect("data").unwrap();
    assert_eq!(&data[..], b"first and last");
    let ended = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(ended.expect("in time").as_deref(), Some("ended"));
}

#[tokio::test]
async fn a_client_that_does_not_speak_http2_is_told_so_and_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut near, far) = tokio::io::duplex(64 << 10);
    let (mut events, _shutdown) = serve(far);
    near.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut written = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), near.read_to_end(&mut written)).await;
    read.expect("closed in time").expect("read");
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(head) = frame::Head::parse(&written[at..]) {
        let payload = &written[at + frame::HEAD_LEN..at + frame::HEAD_LEN + head.len];
        frames.push((head.kind, payload.to_vec()));
        at += frame::HEAD_LEN + head.len;
    }
    let kinds: Vec<u8> = frames.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        [frame::SETTINGS, frame::WINDOW_UPDATE, frame::GOAWAY]
    );
    assert_eq!(
        frames[2].1,
        [0, 0, 0, 0, 0, 0, 0, 1],
        "last stream 0, PROTOCOL_ERROR"
    );
    let ended = events.recv().await.expect("an event");
    assert!(ended.contains("not an HTTP/2 preface"), "{ended}");
}

#[tokio::test]
async fn a_client_resetting_streams_as_it_opens_them_is_asked_to_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut near, far) = tokio::io::duplex(1 << 20);
    let (mut events, _shutdown) = serve(far);
    let mut block = BytesMut::from(&[hpack_encode::METHOD_POST, hpack_encode::SCHEME_HTTP][..]);
    hpack_encode::put_field(
        &mut block,
        hpack_encode::Literal::WithoutIndexing,
        hpack_encode::PATH,
        b"",
        b"/wait", // its handler tells when it sees its stream reset: none should run
    );
    let mut flood = BytesMut::from(frame::PREFACE);
    frame::put_settings(&mut flood, &[]);
    for id in (1..2 * RESETS_BEFORE_ACCEPT as u32 + 2).step_by(2) {
        frame::put_headers(&mut flood, id, &block, false, frame::DEFAULT_MAX_FRAME);
        frame::put_rst_stream(&mut flood, id, frame::CANCEL);
    }
    near.write_all(&flood).await.unwrap();
    let mut written = vec![0u8; 1 << 16];
    let mut seen = BytesMut::new();
    let goaway = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = near.read(&mut written).await.expect("read");
            assert!(n > 0, "closed before a GOAWAY");
            seen.extend_from_slice(&written[..n]);
            let mut at = 0;
            while let Some(head) = frame::Head::parse(&seen[at..]) {
                let end = at + frame::HEAD_LEN + head.len;
                if seen.len() < end {
                    break;
                }
                if head.kind == frame::GOAWAY {
                    return seen[at + frame::HEAD_LEN..end].to_vec();
                }
                at = end;
            }
        }
    });
    let payload = goaway.await.expect("a GOAWAY in time");
    assert_eq!(
        &payload[4..],
        ENHANCE_YOUR_CALM.to_be_bytes(),
        "ENHANCE_YOUR_CALM"
    );
    while let Ok(event) = events.try_recv() {
        assert_eq!(event, "ended", "no request was handled");
    }
}
