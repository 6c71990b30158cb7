//! HTTP/2 bodies of gRPC calls: one for answers the core builds itself, and a wrapper that
//! forwards an upstream answer frame by frame while it reads `grpc-status` from the trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn boxed<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pub fn empty() -> BoxBody {
    boxed(http_body_util::Empty::<Bytes>::new())
}

/// One message, then the trailers.
pub struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Unary {
    pub fn new(message: &[u8], trailers: HeaderMap) -> Unary {
        Unary {
            data: Some(grpc::frame(message)),
            trailers: Some(trailers),
        }
    }
}

impl Body for Unary {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// One gRPC message as a request body. A large one goes as its 5-byte prefix and then the
/// caller's bytes (two DATA frames, no copy); a small one as one buffer (one frame).
pub fn message(payload: &Bytes) -> BoxBody {
    if payload.len() < 16 << 10 {
        return boxed(http_body_util::Full::new(grpc::frame(payload)));
    }
    boxed(Chunks(vec![payload.clone(), grpc::prefix(payload.len())]))
}

/// Data frames popped from the end of the list, then the end of the stream.
struct Chunks(Vec<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}

/// Told once how a forwarded call ended: its status (UNKNOWN when the stream broke off), and the
/// bytes that went through. Dropping the body unfinished (the caller left) reports CANCELLED.
pub trait OnEnd: Send + 'static {
    /// Each data frame as it goes through (a view, not a copy).
    fn data(&mut self, _chunk: &Bytes) {}
    fn ended(self: Box<Self>, code: Code, bytes: u64);
}

/// An upstream body passed through; `extra` joins the trailers (`x-gateway-variant`).
pub struct Observed<B> {
    inner: B,
    extra: Vec<(HeaderName, HeaderValue)>,
    bytes: u64,
    on_end: Option<Box<dyn OnEnd>>,
}

impl<B> Observed<B> {
    pub fn new(inner: B, extra: Vec<(HeaderName, HeaderValue)>, on_end: Box<dyn OnEnd>) -> Self {
        Observed {
            inner,
            extra,
            bytes: 0,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, code: Code) {
        if let Some(on_end) = self.on_end.take() {
            on_end.ended(code, self.bytes);
        }
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // No trailers: the stream ended without a status.
                this.finish(Code::Unknown);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.finish(Code::Unknown);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    let code = trailers
                        .get(&grpc::GRPC_STATUS)
                        .map_or(Code::Unknown, |v| Code::parse(v.as_bytes()));
                    for (name, value) in this.extra.drain(..) {
                        trailers.insert(name, value);
                    }
                    this.finish(code);
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => {
                    if let Some(data) = frame.data_ref() {
                        this.bytes += data.len() as u64;
                        if let Some(on_end) = this.on_end.as_mut() {
                            on_end.data(data);
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body fed by a task: data frames, then (once) the trailers. Bounded: the feeding task waits
/// when the reader is slow, and learns that the reader left when `send` fails.
pub struct Channel {
    receiver: tokio::sync::mpsc::Receiver<Frame<Bytes>>,
}

pub type ChannelSender = tokio::sync::mpsc::Sender<Frame<Bytes>>;

pub fn channel(capacity: usize) -> (ChannelSender, Channel) {
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
    (sender, Channel { receiver })
}

impl Body for Channel {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.receiver.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// The trailers of a call that ended with `code`.
pub fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(grpc::GRPC_STATUS, code.header_value());
    if !message.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&grpc::encode_message(message)) {
            trailers.insert(grpc::GRPC_MESSAGE, value);
        }
    }
    trailers
}

/// A body that keeps `T` alive until it is dropped: an admission slot, held until the answer
/// has been sent.
pub struct Holding<B, T> {
    inner: B,
    _held: T,
}

impl<B, T> Holding<B, T> {
    pub fn new(inner: B, held: T) -> Holding<B, T> {
        Holding { inner, _held: held }
    }
}

impl<B: Body + Unpin, T: Unpin> Body for Holding<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The one message of a unary request's body, within `limit` bytes. A message that came in one
/// DATA frame (any small one) is that frame's bytes, not a copy.
pub async fn read_unary<B>(body: B, limit: usize) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut read = Read::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::Unavailable(format!("the request broke off: {}", e.into()))
        })?;
        if let Ok(data) = frame.into_data() {
            read.push(data, limit.saturating_add(5)).map_err(|()| {
                GatewayError::TooLarge(format!("received message larger than max ({limit} bytes)"))
            })?;
        }
    }
    grpc::unary_message(read.bytes()).map_err(|e| crate::protocol::error::frame_error(e, limit))
}

/// A body's DATA frames gathered: the first as it came, the rest appended to a copy of it.
#[derive(Default)]
struct Read {
    first: Bytes,
    more: Option<bytes::BytesMut>,
}

impl Read {
    /// Err when all of it would be over `max` bytes.
    fn push(&mut self, data: Bytes, max: usize) -> Result<(), ()> {
        let had = self
            .more
            .as_ref()
            .map_or(self.first.len(), |more| more.len());
        if had.saturating_add(data.len()) > max {
            return Err(());
        }
        match &mut self.more {
            Some(more) => more.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                // Sized once for the whole message its prefix announces (within `max`): a
                // large one is copied once, not again at every doubling of its buffer.
                let announced = match self.first.len() >= 5 {
                    true => 5 + grpc::announced_len(&self.first),
                    false => 0,
                };
                let capacity = announced.min(max).max(self.first.len() + data.len());
                let mut more = bytes::BytesMut::with_capacity(capacity);
                more.extend_from_slice(&self.first);
                more.extend_from_slice(&data);
                self.more = Some(more);
            }
        }
        Ok(())
    }

    fn bytes(self) -> Bytes {
        self.more.map_or(self.first, bytes::BytesMut::freeze)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request body that arrives as these DATA frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    fn frames(parts: &[&[u8]]) -> Frames {
        Frames(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect())
    }

    #[tokio::test]
    async fn a_unary_message_is_read_whole_from_its_frames_within_the_limit() {
        let framed = grpc::frame(b"hello world");
        let whole = frames(&[&framed]);
        let first = whole.0[0].clone();
        let read = read_unary(whole, 11).await.unwrap();
        assert_eq!(read, &b"hello world"[..]);
        assert_eq!(
            read.as_ptr(),
            first[5..].as_ptr(),
            "one frame: its own bytes"
        );
        let split = frames(&[&framed[..3], &framed[3..8], &framed[8..]]);
        assert_eq!(read_unary(split, 11).await.unwrap(), &b"hello world"[..]);
        let mut read = Read::default();
        for part in [&framed[..8], &framed[8..12], &framed[12..]] {
            read.push(Bytes::copy_from_slice(part), 100).unwrap();
        }
        assert_eq!(
            read.more.as_ref().map(bytes::BytesMut::capacity),
            Some(framed.len()),
            "sized once"
        );
        assert_eq!(read.bytes(), framed);
        let over = frames(&[&framed[..8], &framed[8..]]);
        let error = read_unary(over, 10).await.unwrap_err();
        assert!(matches!(error, GatewayError::TooLarge(_)), "{error:?}");
        let empty = read_unary(frames(&[]), 10).await.unwrap_err();
        assert!(
            matches!(empty, GatewayError::InvalidRequest(_)),
            "{empty:?}"
        );
    }

    #[tokio::test]
    async fn a_large_message_goes_as_its_prefix_then_the_callers_bytes() {
        for size in [0usize, 100, 64 << 10] {
            let payload = Bytes::from(vec![7u8; size]);
            let collected = message(&payload).collect().await.unwrap().to_bytes();
            assert_eq!(collected, grpc::frame(&payload), "{size}");
        }
    }
}
