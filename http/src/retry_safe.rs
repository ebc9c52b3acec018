//! [`RetrySafe`]: how a handler says that its failure did nothing.

/// A response extension by which a handler says that nothing happened and a
/// retry may run it again: the layer then releases the key instead of
/// storing the response. Every other response, a 5xx included, is stored and
/// replayed (as Stripe does): a handler that fails after its side effect must
/// not have it repeated by the retry.
///
/// ```
/// use http::{Response, StatusCode};
/// use idemkv_http::RetrySafe;
///
/// // The payment provider was unreachable before anything was charged.
/// let mut response = Response::new("the payment provider is unreachable; retry");
/// *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
/// response.extensions_mut().insert(RetrySafe);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetrySafe;
