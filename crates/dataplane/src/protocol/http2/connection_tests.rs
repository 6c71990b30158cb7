//! The lean connection against h2's server over an in-memory pipe.

use bytes::BytesMut;

use super::*;
use crate::protocol::http2::hpack_encode::{put_field, Literal, CONTENT_TYPE, METHOD_POST, PATH};

/// A server of h2's on one end of an in-memory pipe: answers each request with its body's
/// length as the message, then `grpc-status: 0`; `reset` answers instead with RST_STREAM.
fn serve(io: tokio::io::DuplexStream, reset: bool) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut connection = h2::server::handshake(io).await.expect("handshake");
        let mut seen = Vec::new();
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            seen.push(request.uri().path().to_owned());
            let mut body = request.into_body();
            tokio::spawn(async move {
                if reset {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    return;
                }
                let mut len = 0;
                while let Some(Ok(data)) = body.data().await {
                    len += data.len();
                    let _ = body.flow_control().release_capacity(data.len());
                }
                reply(respond, Bytes::from(len.to_string()));
            });
        }
        seen
    })
}

fn block() -> Vec<u8> {
    let mut block = BytesMut::new();
    block.extend_from_slice(&[METHOD_POST, 0x86]);
    put_field(&mut block, Literal::WithoutIndexing, PATH, b"", b"/x.Y/Z");
    put_field(&mut block, Literal::WithoutIndexing, 1, b"", b"localhost");
    put_field(
        &mut block,
        Literal::WithoutIndexing,
        CONTENT_TYPE,
        b"",
        b"application/grpc",
    );
    block.to_vec()
}

async fn answer(mut stream: Stream) -> Result<(u16, String, String), Failure> {
    let (status, _) = poll_fn(|cx| stream.poll_head(cx)).await?;
    let (mut data, mut trailers) = (String::new(), String::new());
    while let Some(frame) = poll_fn(|cx| stream.poll_frame(cx)).await {
        match frame?.into_data() {
            Ok(bytes) => data.push_str(std::str::from_utf8(&bytes).unwrap()),
            Err(frame) => {
                let t = frame.into_trailers().unwrap();
                trailers = t["grpc-status"].to_str().unwrap().to_owned();
            }
        }
    }
    Ok((status, data, trailers))
}

#[tokio::test]
async fn calls_large_and_many_are_answered_on_one_connection() {
    let (client, server) = tokio::io::duplex(64 << 10);
    let served = serve(server, false);
    let connection = connected(client);
    // 3 MiB: more than h2's server grants at first (64 KiB), so it waits for windows.
    let large = Bytes::from(vec![7u8; 3 << 20]);
    let stream = connection
        .start(&block(), &[Bytes::from_static(b"abcde"), large])
        .await;
    let (status, data, trailers) = answer(stream.expect("started")).await.expect("answered");
    assert_eq!(
        (status, data.as_str(), trailers.as_str()),
        (200, "3145733", "0")
    );
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let connection = connection.clone();
            tokio::spawn(async move {
                let message = Bytes::from(vec![1u8; i * 100]);
                let stream = connection
                    .start(&block(), &[message])
                    .await
                    .expect("started");
                answer(stream).await.expect("answered").1
            })
        })
        .collect();
    let mut lengths = Vec::new();
    for call in calls {
        lengths.push(call.await.expect("no panic"));
    }
    assert_eq!(
        lengths,
        (0..50).map(|i| (i * 100).to_string()).collect::<Vec<_>>()
    );
    assert!(connection.pinger().ping().await.is_ok());
    drop(connection);
    let seen = served.await.expect("served");
    assert_eq!(seen.len(), 51);
    assert!(seen.iter().all(|path| path == "/x.Y/Z"));
}

#[tokio::test]
async fn the_connection_ends_once_nothing_holds_it() {
    let (client, server) = tokio::io::duplex(64 << 10);
    let _served = serve(server, false);
    let (connection, driver) = Connection::new(client);
    let task = tokio::spawn(driver);
    let stream = connection
        .start(&block(), &[Bytes::from_static(b"x")])
        .await;
    drop(connection);
    // The call's stream still holds it: answered.
    let (status, data, _) = answer(stream.expect("started")).await.expect("answered");
    assert_eq!((status, data.as_str()), (200, "1"));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    assert_eq!(
        ended.expect("ended").expect("no panic"),
        "the connection is no longer used"
    );
}

#[tokio::test]
async fn a_reset_fails_its_call_and_a_lost_connection_all_calls() {
    let (client, server) = tokio::io::duplex(64 << 10);
    let served = serve(server, true);
    let connection = connected(client);
    let stream = connection
        .start(&block(), &[Bytes::from_static(b"x")])
        .await;
    match answer(stream.expect("started")).await {
        Err(Failure::Reset(code)) => assert_eq!(code, 0x7), // REFUSED_STREAM
        other => panic!("{other:?}"),
    }
    served.abort();
    let _ = served.await;
    let stream = connection
        .start(&block(), &[Bytes::from_static(b"x")])
        .await;
    if let Ok(stream) = stream {
        assert!(matches!(answer(stream).await, Err(Failure::Lost(_))));
    }
    assert!(connection.is_closed());
    assert!(connection.start(&block(), &[]).await.is_err());
}

/// Answers `respond` with `message` and `grpc-status: 0`.
fn reply(mut respond: h2::server::SendResponse<Bytes>, message: Bytes) {
    let head = http::Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(head, false).expect("head");
    send.send_data(message, false).expect("data");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    send.send_trailers(trailers).expect("trailers");
}

/// The lean connection over `client`, its task running.
fn connected(client: tokio::io::DuplexStream) -> Connection {
    let (connection, driver) = Connection::new(client);
    tokio::spawn(driver);
    connection
}

#[tokio::test]
async fn a_call_dropped_before_its_answer_is_cancelled_upstream() {
    let (client, server) = tokio::io::duplex(64 << 10);
    let (accepted, was_accepted) = tokio::sync::oneshot::channel();
    let (reset, was_reset) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connection = h2::server::handshake(server).await.expect("handshake");
        let (_, mut respond) = connection.accept().await.unwrap().unwrap();
        let _ = accepted.send(());
        tokio::spawn(async move {
            let reason = poll_fn(|cx| respond.poll_reset(cx)).await;
            let _ = reset.send(reason.ok());
        });
        while connection.accept().await.is_some() {}
    });
    let connection = connected(client);
    let stream = connection
        .start(&block(), &[Bytes::from_static(b"x")])
        .await;
    was_accepted.await.expect("accepted");
    drop(stream);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), was_reset).await;
    assert_eq!(
        seen.expect("in time").expect("seen"),
        Some(h2::Reason::CANCEL)
    );
}

#[tokio::test]
async fn after_goaway_calls_under_way_finish_and_new_ones_start_elsewhere() {
    let (client, server) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let mut connection = h2::server::handshake(server).await.expect("handshake");
        let (_, respond) = connection.accept().await.unwrap().unwrap();
        connection.graceful_shutdown();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            reply(respond, Bytes::from_static(b"done"));
        });
        while connection.accept().await.is_some() {}
    });
    let connection = connected(client);
    let under_way = connection
        .start(&block(), &[Bytes::from_static(b"x")])
        .await;
    for _ in 0..200 {
        if connection.is_closed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(connection.is_closed(), "GOAWAY seen");
    assert!(
        connection.start(&block(), &[]).await.is_err(),
        "no new call on it"
    );
    let (status, data, trailers) = answer(under_way.expect("started")).await.expect("answered");
    assert_eq!(
        (status, data.as_str(), trailers.as_str()),
        (200, "done", "0")
    );
}
