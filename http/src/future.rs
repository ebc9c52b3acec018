//! [`ResponseFuture`]: the future of [`Idempotency`](crate::Idempotency).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pin_project! {
    /// The response future of [`Idempotency`](crate::Idempotency): the inner
    /// service's own future for a request the layer passes through (no box,
    /// no extra work), or the layer's handling of one it deduplicates.
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = Projected]
    enum Kind<F>
    where
        F: Future,
    {
        // A request the layer does not apply to.
        Passthrough {
            #[pin]
            inner: F,
        },
        // A request the layer deduplicates.
        Handled {
            inner: Pin<Box<dyn Future<Output = F::Output> + Send>>,
        },
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn passthrough(inner: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { inner },
        }
    }

    pub(crate) fn handled(inner: impl Future<Output = F::Output> + Send + 'static) -> Self {
        ResponseFuture {
            kind: Kind::Handled {
                inner: Box::pin(inner),
            },
        }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().kind.project() {
            Projected::Passthrough { inner } => inner.poll(cx),
            Projected::Handled { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<F: Future> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Handled { .. } => "Handled",
        };
        f.debug_tuple("ResponseFuture").field(&kind).finish()
    }
}
