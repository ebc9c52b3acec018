//! [`ResponseFuture`]: the future of [`Idempotency`](crate::Idempotency).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

/// What the layer's handling of a request resolves to.
type Handled<B, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`Idempotency`](crate::Idempotency): the inner
    /// service's own future for a request the layer passes through (no box,
    /// no extra work but wrapping its body), or the layer's handling of
    /// one it deduplicates. `B` and `E` are the inner service's response
    /// body and error.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = Projected]
    enum Kind<F, B, E> {
        // A request the layer does not apply to.
        Passthrough {
            #[pin]
            inner: F,
        },
        // A request the layer deduplicates.
        Handled {
            inner: Handled<B, E>,
        },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(inner: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { inner },
        }
    }

    pub(crate) fn handled(
        inner: impl Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Handled {
                inner: Box::pin(inner),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            Projected::Passthrough { inner } => inner
                .poll(cx)
                .map(|result| result.map(|response| response.map(ResponseBody::inner))),
            Projected::Handled { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Handled { .. } => "Handled",
        };
        f.debug_tuple("ResponseFuture").field(&kind).finish()
    }
}
