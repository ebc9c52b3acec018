//! Who a request's caller is ([`Callers`], [`Principal`]) and the scope its
//! key is stored under ([`scope_for`]).
//!
//! A key's scope names the caller, never the caller's credential bytes: a
//! client that refreshes its OAuth token, or signs every request afresh
//! (AWS SigV4, HMAC webhooks, HTTP Message Signatures), is still the same
//! caller, and its retry must replay rather than run again.

use std::fmt;
use std::sync::Arc;

use ::http::{Method, request};

use crate::settings::PartsFn;

/// The authenticated caller of a request: an account, a tenant, a client
/// id. The service's authentication layer puts it in the request's
/// extensions after it has verified the credential, and a layer built with
/// [`Callers::by_principal`] scopes keys by it. The authentication layer
/// must therefore run first: in axum, add it with `.layer(..)` *after* the
/// idempotency layer, so that it wraps it.
///
/// The principal is stored in every record's scope, in clear: use a stable
/// identifier (`acct_42`), not a credential, and keep it short (a scope
/// holds at most [`MAX_SCOPE_LEN`](idemkv::MAX_SCOPE_LEN) bytes with the
/// method and path).
///
/// ```
/// let mut request = http::Request::post("/v1/charges").body(())?;
/// request.extensions_mut().insert(idemkv_http::Principal::new("acct_42"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A principal named `id`.
    pub fn new(id: impl Into<Arc<str>>) -> Principal {
        Principal(id.into())
    }

    /// The principal's identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a layer tells its callers apart: a choice every layer is built with
/// ([`IdempotencyLayer::new`](crate::IdempotencyLayer::new)), because the
/// wrong one is either a security hole (two callers share records) or a
/// second charge (one caller lands in a new scope on every retry).
///
/// | choice | scope of a key | when |
/// |---|---|---|
/// | [`by_principal`](Callers::by_principal) | the [`Principal`] extension, method, path | the service authenticates its callers (the usual case) |
/// | [`by`](Callers::by) | what the function names, method, path | the caller is known some other way (a header a trusted gateway sets) |
/// | [`single_tenant`](Callers::single_tenant) | method, path | one caller only: an internal worker, a single partner |
///
/// With `by_principal` or `by`, a keyed request whose caller is unknown is
/// answered 401 and runs nothing (and the layer logs, once, that an
/// authentication layer in front of it may be missing).
#[derive(Clone)]
pub struct Callers(pub(crate) CallerSource);

#[derive(Clone)]
pub(crate) enum CallerSource {
    Principal,
    Function(PartsFn<Option<String>>),
    SingleTenant,
}

impl Callers {
    /// Callers are the [`Principal`] the service's authentication layer puts
    /// in each request's extensions.
    pub fn by_principal() -> Callers {
        Callers(CallerSource::Principal)
    }

    /// Callers are what `f` names from the request (`None`: unknown, the
    /// request is answered 401). `f` must name the caller from something
    /// the service trusts (a header its gateway sets after authenticating),
    /// not from anything a client can choose freely. To name a caller by a
    /// long-lived API key, digest it with [`credential_scope`]; never by a
    /// token that is rotated or a per-request signature.
    pub fn by(f: impl Fn(&request::Parts) -> Option<String> + Send + Sync + 'static) -> Callers {
        Callers(CallerSource::Function(Arc::new(f)))
    }

    /// One caller: every request shares one key space, so anyone who learns
    /// a key can read its stored response. A deliberate choice for services
    /// with a single client, never a default.
    pub fn single_tenant() -> Callers {
        Callers(CallerSource::SingleTenant)
    }

    /// The caller of a request: `Ok(None)` for a single tenant, `Err(())`
    /// when the caller should be known and is not.
    pub(crate) fn of(&self, parts: &request::Parts) -> Result<Option<String>, ()> {
        match &self.0 {
            CallerSource::Principal => parts
                .extensions
                .get::<Principal>()
                .map(|p| Some(p.as_str().to_owned()))
                .ok_or(()),
            CallerSource::Function(f) => f(parts).map(Some).ok_or(()),
            CallerSource::SingleTenant => Ok(None),
        }
    }
}

impl fmt::Debug for Callers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            CallerSource::Principal => "Callers::by_principal()",
            CallerSource::Function(_) => "Callers::by(..)",
            CallerSource::SingleTenant => "Callers::single_tenant()",
        })
    }
}

/// The scope the layer stores a key under: the caller (when the layer tells
/// callers apart), the method and the path, separated by spaces, as in
/// `"acct_42 POST /v1/charges"` or, for a single tenant,
/// `"POST /v1/charges"` (no query string, no host). Method and path never
/// hold a space, so no two (caller, method, path) triples share a scope.
///
/// Build a [`Key`](idemkv::Key) with it to look up or remove a key the
/// layer stored:
///
/// ```
/// use http::Method;
/// let scope = idemkv_http::scope_for(Some("acct_42"), &Method::POST, "/v1/charges");
/// assert_eq!(scope, "acct_42 POST /v1/charges");
/// let key = idemkv::Key::new(&scope, "order-1001")?;
/// # let _ = key;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scope_for(caller: Option<&str>, method: &Method, path: &str) -> String {
    match caller {
        Some(caller) => format!("{caller} {method} {path}"),
        None => format!("{method} {path}"),
    }
}

/// A digest of a credential (a long-lived API key) fit to name a caller
/// ([`Callers::by`], [`Principal`]): 32 hex characters of a keyed blake3
/// hash. The scope is stored in every record, the raw credential never
/// should be. Do not digest a credential that changes while the caller
/// stays the same (an OAuth token, a signature): its retries would land in
/// a new scope and run again.
///
/// ```
/// let alice = idemkv_http::credential_scope(b"sk_test_alice");
/// assert_eq!(alice.len(), 32);
/// assert_ne!(alice, idemkv_http::credential_scope(b"sk_test_bob"));
/// ```
pub fn credential_scope(credential: &[u8]) -> String {
    const CONTEXT: &str = "idemkv-http 2026 credential scope v1";
    let digest = blake3::Hasher::new_derive_key(CONTEXT)
        .update(credential)
        .finalize();
    digest.to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_name_the_scope() -> Result<(), ::http::Error> {
        let (anonymous, ()) = ::http::Request::post("/v1/charges?x=1")
            .body(())?
            .into_parts();
        let mut known = anonymous.clone();
        known.extensions.insert(Principal::new("acct_1"));
        assert_eq!(
            Callers::by_principal().of(&known),
            Ok(Some("acct_1".into()))
        );
        assert_eq!(Callers::by_principal().of(&anonymous), Err(()));
        assert_eq!(Callers::single_tenant().of(&known), Ok(None));
        let by_path = Callers::by(|p| Some(p.uri.path().to_owned()));
        assert_eq!(by_path.of(&anonymous), Ok(Some("/v1/charges".into())));
        assert_eq!(Callers::by(|_| None).of(&known), Err(()));
        assert_eq!(
            scope_for(Some("a b"), &Method::POST, "/x"),
            "a b POST /x",
            "a caller may hold spaces; method and path never do"
        );
        assert_eq!(scope_for(None, &Method::PATCH, "/x"), "PATCH /x");
        Ok(())
    }
}
