//! [`ResponseBody`]: the body of every response that leaves the layer.
//!
//! Three shapes: the inner service's own body, untouched (a request the
//! layer passed through); one buffer (a response read whole and stored, a
//! replay, the layer's own problem answers); or a response too large to
//! store: the part the layer read before it knew, then the rest of the
//! handler's body as it streams, never held whole.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use crate::service::BoxError;

pin_project! {
    /// The response body of [`Idempotency`](crate::Idempotency): the inner
    /// service's body (`B`) passed through, a whole buffer, or a response
    /// past the store's `max_response_bytes` streamed on from where the
    /// layer stopped reading. Its data is [`Bytes`] and its error a boxed
    /// error, as axum and hyper expect.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Projected]
    enum Kind<B> {
        // The inner service's body, untouched.
        Inner {
            #[pin]
            body: B,
        },
        // One buffer, sent once.
        Full {
            data: Option<Bytes>,
        },
        // What was read, then the rest of the inner body (boxed: it was
        // read from before, so it must not move, and `B` need not be Unpin).
        Streaming {
            read: VecDeque<Bytes>,
            rest: Pin<Box<B>>,
        },
    }
}

impl<B> ResponseBody<B> {
    /// The inner service's body, passed through.
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// The chunks already read, then whatever `rest` still yields.
    fn streaming(read: VecDeque<Bytes>, rest: Pin<Box<B>>) -> Self {
        ResponseBody {
            kind: Kind::Streaming { read, rest },
        }
    }
}

impl<B> From<Bytes> for ResponseBody<B> {
    fn from(data: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            Projected::Inner { body } => poll_inner(body, cx),
            Projected::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Projected::Streaming { read, rest } => match read.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => poll_inner(rest.as_mut(), cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Streaming { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { read, rest } => {
                let read: u64 = read.iter().map(|c| c.len() as u64).sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(read + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(read + upper);
                }
                hint
            }
        }
    }
}

/// A frame of the inner body, its data as [`Bytes`] (no copy when it
/// already is).
fn poll_inner<B>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    body.poll_frame(cx).map(|frame| {
        frame.map(|frame| {
            frame
                .map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
                .map_err(Into::into)
        })
    })
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Full { .. } => "Full",
            Kind::Streaming { .. } => "Streaming",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

/// A handler's response body, read up to a limit.
pub(crate) enum Read<B> {
    /// The whole body, within the limit, in one buffer.
    Whole(Bytes),
    /// More than `limit` bytes: the body goes to the client as it streams.
    Over(ResponseBody<B>),
}

/// Reads `body` until it ends (`Whole`) or more than `limit` bytes came
/// (`Over`, which sends what was read and then the rest). Memory stays
/// within about `limit` plus one chunk, whatever the body's length.
///
/// # Errors
///
/// The body's own error, if it fails before either.
pub(crate) async fn read_up_to<B>(body: B, limit: usize) -> Result<Read<B>, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    let mut read: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        // Trailers end a body; a stored response keeps none (as before).
        let Ok(mut data) = frame.into_data() else {
            break;
        };
        let chunk = data.copy_to_bytes(data.remaining());
        len += chunk.len();
        read.push_back(chunk);
        if len > limit {
            return Ok(Read::Over(ResponseBody::streaming(read, body)));
        }
    }
    // One chunk is the common case: its buffer, no copy.
    Ok(Read::Whole(match read.len() {
        0 => Bytes::new(),
        1 => read.pop_front().unwrap_or_default(),
        _ => {
            let mut whole = bytes::BytesMut::with_capacity(len);
            for chunk in read {
                whole.extend_from_slice(&chunk);
            }
            whole.freeze()
        }
    }))
}
