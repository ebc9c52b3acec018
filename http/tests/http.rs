//! The tower layer over real HTTP: an axum server on an ephemeral port of
//! 127.0.0.1 and a real HTTP client .

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use idemkv::{Config, Store};
use idemkv_http::{Callers, IdempotencyLayer, Principal};
use reqwest::Client;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How many times the side effect ran, and the hold that `?hold` handlers
/// wait at.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>, Arc<Hold>);

/// Where a `?hold` handler says it started and waits until the test lets
/// it go: a test that needs a handler still running when its retry comes
/// arranges that, instead of counting on a sleep being long enough.
struct Hold {
    started: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            started: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

/// A charge: sleeps `?ms=` milliseconds (default 50), or with `?hold`
/// waits until the test releases it; counts, answers 201 with a body that
/// names the execution, or the status in `?status=`, or a body of
/// `?bytes=` bytes; with `?retry_safe=1` it marks its response
/// [`RetrySafe`](idemkv_http::RetrySafe).
async fn charge(
    State(counter): State<Counter>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if q.contains_key("hold") {
        counter.1.started.notify_one();
        if let Ok(permit) = counter.1.release.acquire().await {
            permit.forget();
        }
    } else {
        let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(50);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let n = counter.0.fetch_add(1, Ordering::SeqCst) + 1;
    if q.contains_key("panic") {
        panic!("the handler crashed after charging");
    }
    let status = q
        .get("status")
        .and_then(|v| v.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::CREATED);
    let mut headers = HeaderMap::new();
    headers.insert("x-charge", n.to_string().parse().expect("header"));
    headers.insert("set-cookie", "session=secret".parse().expect("header"));
    let body = match q.get("bytes").and_then(|v| v.parse().ok()) {
        Some(len) => "x".repeat(len),
        None => format!("charge #{n} for {body}"),
    };
    let mut response = (status, headers, body).into_response();
    if q.contains_key("retry_safe") {
        response.extensions_mut().insert(idemkv_http::RetrySafe);
    }
    response
}

struct Server {
    url: String,
    counter: Counter,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(store: Store, layer: impl Fn(IdempotencyLayer) -> IdempotencyLayer) -> Server {
        let layer = layer(IdempotencyLayer::new(store, Callers::single_tenant()));
        Server::serve(
            Router::new()
                .route("/v1/charges", post(charge))
                .layer(layer),
        )
        .await
    }

    /// Serves `router` (whose handlers count on its state) on an ephemeral
    /// port.
    async fn serve(router: Router<Counter>) -> Server {
        let counter = Counter::default();
        let router = router.with_state(counter.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1/charges", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server { url, counter, task }
    }

    fn executions(&self) -> u64 {
        self.counter.0.load(Ordering::SeqCst)
    }

    /// Until a `?hold` handler has started (its request holds the key).
    async fn handler_started(&self) {
        self.counter.1.started.notified().await;
    }

    /// Lets one held handler finish.
    fn release_handler(&self) {
        self.counter.1.release.add_permits(1);
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Until `done` holds, checked every few milliseconds; an error after a
/// minute (something is broken: the condition is one the test arranged).
async fn wait_for(mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return Err("the awaited condition never held".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn store() -> Store {
    Store::in_memory(Config::default()).expect("store")
}

async fn post_with(client: &Client, url: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = client.post(url).body(body.to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_replays_the_same_bytes_with_the_replay_header() -> TestResult {
    let server = Server::start(store(), |l| l).await;
    let client = Client::new();
    let first = post_with(&client, &server.url, Some("k-1"), r#"{"amount":100}"#).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_charge = first.headers()["x-charge"].clone();
    let first_body = first.bytes().await?;

    let retry = post_with(&client, &server.url, Some("\"k-1\""), r#"{"amount":100}"#).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["x-charge"], first_charge);
    assert!(
        retry.headers().get("set-cookie").is_none(),
        "set-cookie is not replayed"
    );
    assert_eq!(retry.bytes().await?, first_body);
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_different_payload_is_422_and_runs_nothing() -> TestResult {
    let server = Server::start(store(), |l| l).await;
    let client = Client::new();
    assert_eq!(
        post_with(&client, &server.url, Some("k-2"), "a")
            .await
            .status(),
        201
    );
    let other = post_with(&client, &server.url, Some("k-2"), "b").await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = other.json().await?;
    assert_eq!(problem["status"], 422);
    assert!(
        problem["title"]
            .as_str()
            .is_some_and(|t| t.contains("different request"))
    );
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_during_the_first_request_is_409_with_retry_after() -> TestResult {
    let store = Store::in_memory(Config::default().lease(Duration::from_secs(10)))?;
    let server = Server::start(store, |l| l).await;
    let client = Client::new();
    let url = format!("{}?hold", server.url);
    let slow = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { post_with(&client, &url, Some("k-3"), "x").await.status() })
    };
    // The first request holds the key and its handler runs until released.
    server.handler_started().await;
    let busy = post_with(&client, &url, Some("k-3"), "x").await;
    assert_eq!(busy.status(), 409);
    let retry_after: u64 = busy.headers()["retry-after"].to_str()?.parse()?;
    // The lease left, rounded up: 10 s less the time that passed (the
    // range allows a slow machine), never a constant 1.
    assert!((2..=10).contains(&retry_after), "{retry_after}");
    // The detail says what is known (another attempt holds the key), and
    // promises no replay: that attempt may have died.
    let problem: serde_json::Value = busy.json().await?;
    let detail = problem["detail"].as_str().ok_or("no detail")?;
    assert_eq!(
        detail,
        format!("another attempt holds this key; retry after {retry_after} s")
    );
    server.release_handler();
    assert_eq!(slow.await?, 201);
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_and_malformed_keys_are_400() -> TestResult {
    let server = Server::start(store(), |l| l.require_key(true)).await;
    let client = Client::new();
    let missing = post_with(&client, &server.url, None, "x").await;
    assert_eq!(missing.status(), 400);
    let problem: serde_json::Value = missing.json().await?;
    assert!(
        problem["title"]
            .as_str()
            .is_some_and(|t| t.contains("missing"))
    );
    for bad in ["\"unclosed", "has space", &"k".repeat(256)] {
        let response = post_with(&client, &server.url, Some(bad), "x").await;
        assert_eq!(response.status(), 400, "{bad:?}");
    }
    assert_eq!(server.executions(), 0);
    server.stop().await;

    // Not required: a request without a key passes through, every time.
    let server = Server::start(store(), |l| l).await;
    for _ in 0..2 {
        assert_eq!(
            post_with(&client, &server.url, None, "x").await.status(),
            201
        );
    }
    assert_eq!(server.executions(), 2);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_mode_answers_a_concurrent_retry_with_the_first_response() -> TestResult {
    let store = store();
    let server = Server::start(store.clone(), |l| {
        l.wait_for_in_flight(Some(Duration::from_secs(60)))
    })
    .await;
    let client = Client::new();
    let url = format!("{}?hold", server.url);
    let first = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let r = post_with(&client, &url, Some("k-4"), "x").await;
            (r.status(), r.bytes().await.expect("body"))
        })
    };
    server.handler_started().await;
    let retry = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { post_with(&client, &url, Some("k-4"), "x").await })
    };
    // The retry waits on the key (it never reaches the handler); then the
    // first request's handler finishes.
    wait_for(|| store.metrics().waiters == 1).await?;
    server.release_handler();
    let waited = retry.await?;
    assert_eq!(waited.status(), 201);
    assert_eq!(waited.headers()["idempotent-replayed"], "true");
    let waited_body = waited.bytes().await?;
    let (status, body) = first.await?;
    assert_eq!((status, body), (StatusCode::CREATED, waited_body));
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_requests_run_the_side_effect_once() -> TestResult {
    let server = Server::start(store(), |l| {
        l.wait_for_in_flight(Some(Duration::from_secs(30)))
    })
    .await;
    let client = Client::new();
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), server.url.clone());
            tokio::spawn(async move {
                let r = post_with(&client, &url, Some("k-5"), "same").await;
                (r.status(), r.bytes().await.expect("body"))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await?);
    }
    assert_eq!(server.executions(), 1);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every caller got the one response"
    );
    assert_eq!(answers[0].0, StatusCode::CREATED);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_too_large_to_store_is_never_run_twice() -> TestResult {
    let store = Store::in_memory(Config::default().max_response_bytes(1000))?;
    let server = Server::start(store, |l| l).await;
    let client = Client::new();
    let url = format!("{}?bytes=5000", server.url);
    let first = post_with(&client, &url, Some("k-6"), "x").await;
    assert_eq!(first.status(), 201);
    assert_eq!(first.bytes().await?.len(), 5000, "the client gets it whole");
    // The record is completed without the body: the retry is told what
    // happened, with the original status, and the handler does not run.
    let retry = post_with(&client, &url, Some("k-6"), "x").await;
    assert_eq!(retry.status(), 409);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["idempotency-original-status"], "201");
    let problem: serde_json::Value = retry.json().await?;
    let detail = problem["detail"].as_str().ok_or("no detail")?;
    assert!(detail.contains("status 201"), "{detail}");
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

/// A response body fed by the test: each chunk it sends, then an error if
/// it sends one, and the end when it drops its sender.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<Result<bytes::Bytes, std::io::Error>>);

impl http_body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}

/// A server whose one handler counts its runs and answers 201 with the
/// body the test feeds through the sender it returns.
async fn fed_server(
    store: Store,
) -> (
    Server,
    tokio::sync::mpsc::UnboundedSender<Result<bytes::Bytes, std::io::Error>>,
) {
    let (feed, fed) = tokio::sync::mpsc::unbounded_channel();
    let fed = Arc::new(std::sync::Mutex::new(Some(Fed(fed))));
    let handler = move |State(counter): State<Counter>| {
        let fed = fed.lock().ok().and_then(|mut f| f.take());
        async move {
            counter.0.fetch_add(1, Ordering::SeqCst);
            match fed {
                Some(body) => (StatusCode::CREATED, axum::body::Body::new(body)),
                None => (StatusCode::GONE, axum::body::Body::empty()),
            }
        }
    };
    let layer = IdempotencyLayer::new(store, Callers::single_tenant());
    let server = Server::serve(
        Router::new()
            .route("/v1/charges", post(handler))
            .layer(layer),
    )
    .await;
    (server, feed)
}

/// A response larger than the store keeps is never held whole: the client
/// has its status and first bytes, and the record is completed with the
/// not-kept marker, while the handler's body is still streaming (the test
/// has not ended it); then the rest arrives. The retry is told what
/// happened and nothing runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_streamed_response_is_never_held_whole() -> TestResult {
    let store = Store::in_memory(Config::default().max_response_bytes(64 * 1024))?;
    let (server, feed) = fed_server(store.clone()).await;
    let chunk = bytes::Bytes::from(vec![b'x'; 32 * 1024]);
    for _ in 0..3 {
        feed.send(Ok(chunk.clone()))?;
    }
    let client = Client::new();
    let mut response = tokio::time::timeout(
        Duration::from_secs(60),
        post_with(&client, &server.url, Some("big"), "x"),
    )
    .await
    .map_err(|_| "the layer held the response until its body ended")?;
    assert_eq!(response.status(), 201);
    let mut received = response.chunk().await?.map_or(0, |c| c.len());
    // The body has not ended, and the record is already completed.
    let record = store
        .get(&idemkv::Key::new("POST /v1/charges", "big")?)?
        .ok_or("no record")?;
    let idemkv::RecordState::Completed { response: stored } = record.state() else {
        panic!("the record is not completed: {record:?}");
    };
    assert!(stored.body().is_empty(), "the body was not kept");
    feed.send(Ok(chunk.clone()))?;
    drop(feed);
    while let Some(more) = response.chunk().await? {
        received += more.len();
    }
    assert_eq!(received, 4 * chunk.len(), "the client got every byte");
    let retry = post_with(&client, &server.url, Some("big"), "x").await;
    assert_eq!(retry.status(), 409);
    assert_eq!(retry.headers()["idempotency-original-status"], "201");
    let problem: serde_json::Value = retry.json().await?;
    let detail = problem["detail"].as_str().ok_or("no detail")?;
    assert!(detail.contains("more than 65536 bytes"), "{detail}");
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

/// A handler's body that fails midway is an unknown outcome, never an
/// answer: the client gets 502, nothing is stored (not an empty body, not
/// the part that came), the key stays in flight until its lease ends, and
/// the retry is not replayed a truncated response.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_body_that_fails_midway_is_never_stored() -> TestResult {
    let store = store();
    let (server, feed) = fed_server(store.clone()).await;
    feed.send(Ok(bytes::Bytes::from_static(b"{\"charge\":")))?;
    feed.send(Err(std::io::Error::other("the upstream reset")))?;
    let client = Client::new();
    let response = post_with(&client, &server.url, Some("torn"), "x").await;
    assert_eq!(response.status(), 502);
    let record = store
        .get(&idemkv::Key::new("POST /v1/charges", "torn")?)?
        .ok_or("no record")?;
    assert!(
        matches!(record.state(), idemkv::RecordState::InFlight { .. }),
        "the torn answer was stored: {record:?}"
    );
    let retry = post_with(&client, &server.url, Some("torn"), "x").await;
    assert_eq!(retry.status(), 409);
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

/// A 5xx is an answer like any other: the handler may have failed after
/// its side effect, so it is stored and replayed, and the handler does not
/// run again. A handler that knows nothing happened marks its response
/// `RetrySafe`: the key is released and the retry runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_error_is_replayed_unless_the_handler_marks_it_retry_safe() -> TestResult {
    let server = Server::start(store(), |l| l).await;
    let client = Client::new();
    let url = format!("{}?status=500", server.url);
    let first = post_with(&client, &url, Some("k-6"), "x").await;
    assert_eq!(first.status(), 500);
    let replay = post_with(&client, &url, Some("k-6"), "x").await;
    assert_eq!(replay.status(), 500);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(server.executions(), 1);
    // Marked retry-safe: released, and the retry runs the handler again.
    let url = format!("{}?status=503&retry_safe=1", server.url);
    assert_eq!(
        post_with(&client, &url, Some("k-7"), "x").await.status(),
        503
    );
    let retry = post_with(&client, &url, Some("k-7"), "x").await;
    assert_eq!(retry.status(), 503);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(server.executions(), 3);
    // A 4xx is an answer like any other: stored and replayed.
    let url = format!("{}?status=402", server.url);
    assert_eq!(
        post_with(&client, &url, Some("k-8"), "x").await.status(),
        402
    );
    let replay = post_with(&client, &url, Some("k-8"), "x").await;
    assert_eq!(replay.status(), 402);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(server.executions(), 4);
    server.stop().await;
    Ok(())
}

/// The test service's authentication: a bearer token `<who>-token-<n>`
/// (any generation `n`: tokens are rotated) or a per-request signature
/// `Signature: <who>;<nonce>;<mac>` (a fresh nonce every request) names the
/// caller `<who>`, put in the request as its [`Principal`]; anything else is
/// 401 before the idempotency layer runs.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let caller = {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| token.split_once("-token-"))
            .map(|(who, _generation)| who.to_string());
        let signed = header("signature").and_then(|v| {
            let mut fields = v.split(';');
            let (who, nonce, mac) = (fields.next()?, fields.next()?, fields.next()?);
            (mac == signature(who, nonce)).then(|| who.to_string())
        });
        bearer.or(signed)
    };
    match caller {
        Some(who) => {
            request.extensions_mut().insert(Principal::new(who));
            next.run(request).await
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// A request signature: a keyed digest of the caller's secret and a nonce.
fn signature(who: &str, nonce: &str) -> String {
    idemkv_http::credential_scope(format!("{who}-secret;{nonce}").as_bytes())
}

/// A server whose layer keeps keys per authenticated principal, behind
/// [`authenticate`].
async fn authenticated_server(store: Store) -> Server {
    let router = Router::new()
        .route("/v1/charges", post(charge))
        .layer(IdempotencyLayer::new(store, Callers::by_principal()))
        .layer(axum::middleware::from_fn(authenticate));
    Server::serve(router).await
}

/// One principal retrying with a rotated bearer token, then with fresh
/// per-request signatures: one run, every retry replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_token_and_fresh_signatures_replay_for_one_principal() -> TestResult {
    let server = authenticated_server(store()).await;
    let client = Client::new();
    let send = |name: &'static str, value: String| {
        client
            .post(&server.url)
            .header(name, value)
            .header("idempotency-key", "order-1")
            .body("1200 eur")
            .send()
    };
    let first = send("authorization", "Bearer alice-token-1".into()).await?;
    assert_eq!(first.status(), 201);
    let first_body = first.text().await?;
    let mut retries = vec![send("authorization", "Bearer alice-token-2".into()).await?];
    for nonce in ["n1", "n2"] {
        let value = format!("alice;{nonce};{}", signature("alice", nonce));
        retries.push(send("signature", value).await?);
    }
    for retry in retries {
        assert_eq!(retry.status(), 201);
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        assert_eq!(retry.text().await?, first_body);
    }
    assert_eq!(server.executions(), 1, "the side effect ran once");
    server.stop().await;
    Ok(())
}

/// Two principals sending one key and one payload: two runs, and neither
/// ever reads the other's response.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_principals_with_one_key_never_share_a_record() -> TestResult {
    let server = authenticated_server(store()).await;
    let client = Client::new();
    let send = |token: &'static str| {
        client
            .post(&server.url)
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", "leaked-key")
            .body("same payload")
            .send()
    };
    let alice = send("alice-token-1").await?.text().await?;
    let bob = send("bob-token-1").await?;
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_ne!(bob.text().await?, alice, "bob got alice's response");
    assert_eq!(server.executions(), 2);
    let alice_again = send("alice-token-9").await?;
    assert_eq!(alice_again.headers()["idempotent-replayed"], "true");
    assert_eq!(alice_again.text().await?, alice);
    assert_eq!(server.executions(), 2);
    server.stop().await;
    Ok(())
}

/// A layer that keeps keys per principal answers a keyed request without
/// one 401, and runs nothing (here the layer sits outside the
/// authentication, the mistake the 401 and its warning point at).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_request_without_a_known_caller_is_401_and_runs_nothing() -> TestResult {
    let server = Server::start(store(), |_| {
        IdempotencyLayer::new(store(), Callers::by_principal())
    })
    .await;
    let client = Client::new();
    let response = post_with(&client, &server.url, Some("k"), "x").await;
    assert_eq!(response.status(), 401);
    assert_eq!(server.executions(), 0);
    // A request without a key is not the layer's: it passes through.
    let response = post_with(&client, &server.url, None, "x").await;
    assert_eq!(response.status(), 201);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_survives_a_server_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("http.redb");
    let client = Client::new();
    let first_body = {
        let server = Server::start(Store::open(&path, Config::default())?, |l| l).await;
        let first = post_with(&client, &server.url, Some("k-9"), "durable").await;
        assert_eq!(first.status(), 201);
        let body = first.bytes().await?;
        server.stop().await;
        body
    };
    // The router (and with it the store) is gone once the server task ends;
    // the file can be opened again.
    let store = reopen(&path).await?;
    let server = Server::start(store, |l| l).await;
    let retry = post_with(&client, &server.url, Some("k-9"), "durable").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.bytes().await?, first_body);
    assert_eq!(
        server.executions(),
        0,
        "the new process never ran the charge"
    );
    server.stop().await;
    Ok(())
}

/// Opens the store again once the previous server released it.
async fn reopen(path: &std::path::Path) -> Result<Store, idemkv::Error> {
    for _ in 0..200 {
        match Store::open(path, Config::default()) {
            Err(idemkv::Error::AlreadyOpen { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
    Store::open(path, Config::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_methods_pass_through() -> TestResult {
    let counter = Counter::default();
    let router = Router::new()
        .route("/v1/charges", axum::routing::put(charge))
        .layer(IdempotencyLayer::new(store(), Callers::single_tenant()))
        .with_state(counter.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/charges", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = Client::new();
    for _ in 0..2 {
        let response = client
            .put(&url)
            .header("idempotency-key", "k-10")
            .body("x")
            .send()
            .await?;
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        2,
        "PUT is not deduplicated by default"
    );
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_handler_leaves_the_key_in_flight() -> TestResult {
    let server = Server::start(store(), |l| l).await;
    let client = Client::new();
    let url = format!("{}?panic=1", server.url);
    // The connection dies with the handler: no response at all.
    assert!(
        client
            .post(&url)
            .header("idempotency-key", "k-11")
            .body("x")
            .send()
            .await
            .is_err()
    );
    // The charge may have happened: a retry is told to wait, not run again.
    let retry = post_with(&client, &url, Some("k-11"), "x").await;
    assert_eq!(retry.status(), 409);
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_handler_keeps_its_lease_alive() -> TestResult {
    // The store's time is the test's: the lease ends only when the test
    // moves the clock, and only a renewal can move its end.
    let clock = idemkv::ManualClock::default();
    let store = Store::in_memory(
        Config::default()
            .lease(Duration::from_millis(300))
            .clock(clock.clone()),
    )?;
    let server = Server::start(store.clone(), |l| l).await;
    let client = Client::new();
    let url = format!("{}?hold", server.url);
    let slow = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { post_with(&client, &url, Some("k-12"), "x").await.status() })
    };
    server.handler_started().await;
    let key = idemkv::Key::new(
        &idemkv_http::scope_for(None, &axum::http::Method::POST, "/v1/charges"),
        "k-12",
    )?;
    let lease_end = |store: &Store| -> Option<std::time::SystemTime> {
        store
            .get(&key)
            .ok()
            .flatten()
            .and_then(|record| record.lease_until())
    };
    let first_end = lease_end(&store).ok_or("the first request holds the key")?;
    // Two thirds of the lease pass; the layer renews while its handler
    // runs (every third of the lease), which moves the lease's end on.
    clock.advance(Duration::from_millis(200));
    wait_for(|| lease_end(&store).is_some_and(|end| end > first_end)).await?;
    // Past the first lease's end: without the renewal a retry would take
    // the key over now.
    clock.advance(Duration::from_millis(200));
    assert_eq!(
        post_with(&client, &url, Some("k-12"), "x").await.status(),
        409
    );
    server.release_handler();
    assert_eq!(slow.await?, 201);
    assert_eq!(server.executions(), 1);
    server.stop().await;
    Ok(())
}

/// A plain tower service (no axum, no socket) whose call fails: the error
/// passes through unchanged and the key stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_error_passes_through_and_keeps_the_key_in_flight() -> TestResult {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Layer, Service};

    let calls = Arc::new(AtomicU64::new(0));
    let failing = {
        let calls = Arc::clone(&calls);
        tower::service_fn(move |_request: axum::http::Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<axum::http::Response<Full<Bytes>>, &'static str>("the upstream failed") }
        })
    };
    let mut service = IdempotencyLayer::new(store(), Callers::single_tenant()).layer(failing);
    let request = || {
        axum::http::Request::post("/v1/charges")
            .header("idempotency-key", "k-13")
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("request")
    };
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    assert_eq!(
        service.call(request()).await.err(),
        Some("the upstream failed")
    );
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    let retry = service.call(request()).await?;
    assert_eq!(retry.status(), 409);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}

/// Five thousand duplicates wait on one key (wait mode) on a default tokio
/// runtime: no thread is parked per waiter, so requests for other keys are
/// served meanwhile, and every duplicate gets the winner's response.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_waiting_duplicates_starve_nobody() -> TestResult {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};

    const DUPLICATES: usize = 5_000;
    let store = Store::in_memory(Config::default())?;
    let executions = Arc::new(AtomicU64::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let handler = {
        let executions = Arc::clone(&executions);
        tower::service_fn(move |request: axum::http::Request<Full<Bytes>>| {
            let executions = Arc::clone(&executions);
            let mut released = released.clone();
            async move {
                let n = executions.fetch_add(1, Ordering::SeqCst) + 1;
                if request.uri().path() == "/hot" {
                    // The winner holds the key until the test lets it go.
                    let _ = released.wait_for(|go| *go).await;
                }
                let mut response =
                    axum::http::Response::new(Full::new(Bytes::from(format!("execution {n}"))));
                *response.status_mut() = axum::http::StatusCode::CREATED;
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let service = IdempotencyLayer::new(store.clone(), Callers::single_tenant())
        .wait_for_in_flight(Some(Duration::from_secs(120)))
        .layer(handler);
    let request = |path: &str, key: &str| {
        axum::http::Request::post(path)
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from_static(b"{}")))
    };
    let duplicates: Vec<_> = (0..DUPLICATES)
        .map(|_| {
            let (service, request) = (service.clone(), request("/hot", "hot-key"));
            tokio::spawn(async move {
                let request = request.map_err(|e| e.to_string())?;
                service.oneshot(request).await.map_err(|e| e.to_string())
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.metrics().waiters < (DUPLICATES - 1) as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            store.metrics()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every duplicate but the winner is waiting. Other keys are served now.
    for i in 0..50 {
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            service
                .clone()
                .oneshot(request("/cold", &format!("cold-{i}"))?),
        )
        .await??;
        assert_eq!(response.status(), 201);
    }
    release.send(true)?;
    let mut bodies = std::collections::HashSet::new();
    for duplicate in duplicates {
        let response = duplicate.await??;
        assert_eq!(response.status(), 201);
        bodies.insert(response.into_body().collect().await?.to_bytes());
    }
    assert_eq!(bodies.len(), 1, "every duplicate got the one response");
    assert_eq!(
        executions.load(Ordering::SeqCst),
        51,
        "one hot execution, 50 cold"
    );
    assert_eq!(store.metrics().waiters, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_carries_the_right_content_length() -> TestResult {
    let server = Server::start(store(), |l| l).await;
    let client = Client::new();
    let first = post_with(&client, &server.url, Some("k-len"), "some body").await;
    let first_len = first.content_length();
    let first_body = first.bytes().await?;
    let replay = post_with(&client, &server.url, Some("k-len"), "some body").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.content_length(), Some(first_body.len() as u64));
    assert_eq!(replay.content_length(), first_len);
    assert_eq!(replay.bytes().await?, first_body);
    server.stop().await;
    Ok(())
}

/// A request body that streams 1 KiB chunks without end, counting how many
/// were read.
struct Endless(Arc<AtomicU64>);

impl From<bytes::Bytes> for Endless {
    fn from(_: bytes::Bytes) -> Endless {
        Endless(Arc::default())
    }
}

impl http_body::Body for Endless {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(
            vec![b'x'; 1024],
        )))))
    }
}

/// An oversized request body is refused with 413 while it streams in, not
/// after being read whole (this one never ends); a declared length over the
/// limit is refused before any of it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_body_is_413_without_being_read_whole() -> TestResult {
    use http_body_util::Full;
    use tower::{Layer, ServiceExt};

    let handler = tower::service_fn(|_: axum::http::Request<Endless>| async {
        Ok::<_, std::convert::Infallible>(axum::http::Response::new(Full::new(
            bytes::Bytes::from_static(b"ran"),
        )))
    });
    let service = IdempotencyLayer::new(store(), Callers::single_tenant())
        .max_request_bytes(10 * 1024)
        .layer(handler);
    let read = Arc::new(AtomicU64::new(0));
    let request = axum::http::Request::post("/v1/charges")
        .header("idempotency-key", "k-big")
        .body(Endless(Arc::clone(&read)))?;
    let response = service.clone().oneshot(request).await?;
    assert_eq!(response.status(), 413);
    let chunks = read.load(Ordering::SeqCst);
    assert!(chunks <= 12, "{chunks} chunks read for a 10 KiB limit");

    let read = Arc::new(AtomicU64::new(0));
    let request = axum::http::Request::post("/v1/charges")
        .header("idempotency-key", "k-big")
        .header("content-length", "20480")
        .body(Endless(Arc::clone(&read)))?;
    let response = service.oneshot(request).await?;
    assert_eq!(response.status(), 413);
    assert_eq!(read.load(Ordering::SeqCst), 0, "nothing read");
    Ok(())
}

/// A handler finds its claim in the request's extensions: the key, the
/// fencing token and whether it took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_their_claim_in_the_extensions() -> TestResult {
    async fn echo_claim(
        axum::Extension(claim): axum::Extension<idemkv::ClaimInfo>,
    ) -> (StatusCode, String) {
        (
            StatusCode::CREATED,
            format!(
                "{} {} {}",
                claim.key().idempotency_key(),
                claim.token(),
                claim.is_takeover()
            ),
        )
    }
    let router = Router::new()
        .route("/v1/orders", post(echo_claim))
        .layer(IdempotencyLayer::new(store(), Callers::single_tenant()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/orders", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = Client::new();
    let response = post_with(&client, &url, Some("k-ext"), "x").await;
    assert_eq!(response.status(), 201);
    let body = response.text().await?;
    let parts: Vec<&str> = body.split(' ').collect();
    assert_eq!(parts[0], "k-ext");
    assert!(parts[1].parse::<u64>()? > 0);
    assert_eq!(parts[2], "false");
    task.abort();
    Ok(())
}

/// A handler records a recovery point through the `Progress` extension and
/// dies after its first step; the retry after the lease resumes from the
/// point instead of charging again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_resumes_from_the_handlers_recovery_point() -> TestResult {
    #[derive(Clone, Default)]
    struct Effects {
        charges: Arc<AtomicU64>,
        resumed: Arc<AtomicU64>,
        crash: Arc<std::sync::atomic::AtomicBool>,
    }
    async fn charge_in_steps(
        State(effects): State<Effects>,
        axum::Extension(progress): axum::Extension<idemkv_http::Progress>,
    ) -> (StatusCode, String) {
        let charge_id = match progress.recovered() {
            Some(point) if point.phase() == "charge_created" => {
                effects.resumed.fetch_add(1, Ordering::SeqCst);
                String::from_utf8_lossy(point.state()).into_owned()
            }
            _ => {
                let n = effects.charges.fetch_add(1, Ordering::SeqCst) + 1;
                let id = format!("ch_{n}");
                if let Err(err) = progress.record("charge_created", id.clone()).await {
                    return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
                }
                id
            }
        };
        if effects.crash.swap(false, Ordering::SeqCst) {
            panic!("the process dies after the charge");
        }
        (StatusCode::CREATED, format!("receipt for {charge_id}"))
    }
    let clock = idemkv::ManualClock::default();
    let store = Store::in_memory(Config::default().clock(clock.clone()))?;
    let effects = Effects::default();
    effects.crash.store(true, Ordering::SeqCst);
    let router = Router::new()
        .route("/v1/charges", post(charge_in_steps))
        .layer(IdempotencyLayer::new(
            store.clone(),
            Callers::single_tenant(),
        ))
        .with_state(effects.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/charges", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = Client::new();
    let first = client
        .post(&url)
        .header("idempotency-key", "k-steps")
        .body("x")
        .send()
        .await;
    assert!(first.is_err(), "the handler died: no response");
    assert_eq!(
        post_with(&client, &url, Some("k-steps"), "x")
            .await
            .status(),
        409
    );
    clock.advance(Config::default().settings().lease());
    let retry = post_with(&client, &url, Some("k-steps"), "x").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.text().await?, "receipt for ch_1");
    let replay = post_with(&client, &url, Some("k-steps"), "x").await;
    assert_eq!(replay.text().await?, "receipt for ch_1");
    assert_eq!(effects.charges.load(Ordering::SeqCst), 1, "charged once");
    assert_eq!(effects.resumed.load(Ordering::SeqCst), 1);
    let m = store.metrics();
    assert_eq!((m.recovery_points, m.resumed), (1, 1));
    task.abort();
    Ok(())
}

/// Per-route terms: one layer's claims take their own lease and retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_can_give_its_route_its_own_lease_and_retention() -> TestResult {
    // The store keeps claims a minute and answers a day. This route's layer
    // keeps claims 200 ms (the fingerprint ignores the query, so the crash
    // below and its retry are the same request).
    let short_lease = Server::start(store(), |l| {
        l.lease(Duration::from_millis(200))
            .fingerprint_with(|_, body| idemkv::Fingerprint::of(body))
    })
    .await;
    let client = Client::new();
    // A handler that dies after charging leaves its claim in flight: with
    // the route's lease the next attempt takes over after 200 ms, not 60 s.
    let crash = format!("{}?panic", short_lease.url);
    assert!(
        client
            .post(&crash)
            .header("idempotency-key", "k-lease")
            .body("x")
            .send()
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken_over = post_with(&client, &short_lease.url, Some("k-lease"), "x").await;
    assert_eq!(taken_over.status(), 201);
    assert_eq!(short_lease.executions(), 2);
    short_lease.stop().await;

    // This route's layer replays answers for 2 s, not a day (long enough
    // for the replay below to come well within it on a slow machine).
    let short_retention = Server::start(store(), |l| l.retention(Duration::from_secs(2))).await;
    let url = format!("{}?ms=0", short_retention.url);
    assert_eq!(
        post_with(&client, &url, Some("k-keep"), "x").await.status(),
        201
    );
    let replay = post_with(&client, &url, Some("k-keep"), "x").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let again = post_with(&client, &url, Some("k-keep"), "x").await;
    assert!(again.headers().get("idempotent-replayed").is_none());
    assert_eq!(short_retention.executions(), 2);
    short_retention.stop().await;
    Ok(())
}

/// The layer's own events (target `idemkv_http`) at warn and above, as
/// (level, fields) pairs; the store's events are left out.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level <= tracing::Level::WARN
            && event.metadata().target() == "idemkv_http"
            && let Ok(mut seen) = self.0.lock()
        {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            seen.push((level, fields.0));
        }
    }
}

/// Runs `f` on a current-thread runtime with `warnings` capturing.
fn capturing<T>(
    warnings: &Warnings,
    f: impl std::future::Future<Output = T>,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(warnings.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(f)
    }))
}

/// A layer that keeps keys per principal and meets keyed requests without
/// one says so once (per layer, not per request): an authentication layer
/// in front of it may be missing. It never warns when requests carry their
/// principal, nor when the service chose a single tenant.
#[test]
fn a_layer_says_once_that_its_callers_are_unknown() -> TestResult {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Layer, ServiceExt};

    let handler = tower::service_fn(|_: axum::http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(axum::http::Response::new(Full::new(Bytes::new())))
    });
    let request = |key: &str, principal: Option<&str>| {
        let mut request = axum::http::Request::post("/v1/charges")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from_static(b"{}")));
        if let (Ok(request), Some(principal)) = (request.as_mut(), principal) {
            request.extensions_mut().insert(Principal::new(principal));
        }
        request
    };
    // Warnings logged while `layer` serves `requests`, in order.
    let warnings_for =
        |layer: IdempotencyLayer,
         requests: Vec<axum::http::Request<Full<Bytes>>>|
         -> Result<Vec<tracing::Level>, Box<dyn std::error::Error + Send + Sync>> {
            let warnings = Warnings::default();
            capturing(&warnings, async {
                let service = layer.layer(handler);
                for request in requests {
                    service.clone().oneshot(request).await?;
                }
                Ok::<_, std::convert::Infallible>(())
            })??;
            let seen = warnings.0.lock().map_err(|_| "poisoned")?;
            Ok(seen.iter().map(|(level, _)| *level).collect())
        };
    let layer = || {
        Store::in_memory(Config::default())
            .map(|s| IdempotencyLayer::new(s, Callers::by_principal()))
    };

    let anonymous = (0..3)
        .map(|i| request(&format!("k{i}"), None))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        warnings_for(layer()?, anonymous)?,
        vec![tracing::Level::WARN]
    );

    let known = (0..3)
        .map(|i| request(&format!("k{i}"), Some("acct_1")))
        .collect::<Result<_, _>>()?;
    assert!(warnings_for(layer()?, known)?.is_empty());

    let single_tenant = IdempotencyLayer::new(
        Store::in_memory(Config::default())?,
        Callers::single_tenant(),
    );
    let anonymous = vec![request("k", None)?];
    assert!(warnings_for(single_tenant, anonymous)?.is_empty());
    Ok(())
}

/// Bodies are buffered once: the buffer the handler answers with is the one
/// the client gets, the one the store keeps, and the one a replay sends (no
/// copy on the way; the pointers are the same).
#[tokio::test]
async fn a_response_body_is_sent_stored_and_replayed_from_one_buffer() -> TestResult {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};

    let answer = Bytes::from(vec![b'r'; 64 * 1024]);
    let handler = {
        let answer = answer.clone();
        tower::service_fn(move |_: axum::http::Request<Full<Bytes>>| {
            let answer = answer.clone();
            async move {
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(Full::new(answer)))
            }
        })
    };
    let store = Store::in_memory(Config::default())?;
    let service = IdempotencyLayer::new(store.clone(), Callers::single_tenant()).layer(handler);
    let request = || {
        axum::http::Request::post("/v1/reports")
            .header("idempotency-key", "report-1")
            .header("authorization", "Bearer alice")
            .body(Full::new(Bytes::from_static(b"{}")))
    };
    let first = service.clone().oneshot(request()?).await?;
    let first = first.into_body().collect().await?.to_bytes();
    assert_eq!(first.as_ptr(), answer.as_ptr(), "sent without a copy");

    let replay = service.oneshot(request()?).await?;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay = replay.into_body().collect().await?.to_bytes();
    assert_eq!(replay, answer);
    assert_eq!(
        replay.as_ptr(),
        answer.as_ptr(),
        "stored and replayed (from the replay cache) without a copy"
    );
    Ok(())
}

/// A completion that fails after the response went out (here: an operator
/// removed the key while the handler ran) is nobody's error to return: the
/// client has its response. The layer logs it, with the key and token.
#[test]
fn a_completion_that_fails_after_the_response_is_logged() -> TestResult {
    use bytes::Bytes;
    use http_body_util::Full;
    use idemkv::ClaimInfo;
    use tower::{Layer, ServiceExt};

    let store = Store::in_memory(Config::default())?;
    let handler = {
        let store = store.clone();
        tower::service_fn(move |request: axum::http::Request<Full<Bytes>>| {
            let store = store.clone();
            async move {
                if let Some(info) = request.extensions().get::<ClaimInfo>() {
                    let _ = store.remove(info.key());
                }
                let mut response = axum::http::Response::new(Full::new(Bytes::from("made")));
                *response.status_mut() = axum::http::StatusCode::CREATED;
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let layer = IdempotencyLayer::new(store, Callers::single_tenant());
    let service = layer.layer(handler);
    let request = axum::http::Request::post("/v1/orders")
        .header("idempotency-key", "revoked-1")
        .header("authorization", "Bearer alice")
        .body(Full::new(Bytes::from_static(b"{}")))?;
    let warnings = Warnings::default();
    let response = capturing(&warnings, service.oneshot(request))??;
    assert_eq!(response.status(), 201, "the client still gets its response");
    let seen = warnings.0.lock().map_err(|_| "poisoned")?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (level, fields) = &seen[0];
    assert_eq!(*level, tracing::Level::ERROR);
    assert!(
        fields.contains("revoked-1") && fields.contains("storing the response failed"),
        "{fields}"
    );
    assert_eq!(layer.unsettled(), 1, "the give-up is counted");
    Ok(())
}

/// The Grafana dashboard in docs/ loads (it is a dashboard's JSON model:
/// panels with titles, types and targets on the Prometheus datasource
/// variable), and every metric it queries is one the store or the
/// PostgreSQL backend publishes, and it shows them all.
#[test]
fn the_grafana_dashboard_queries_only_published_metrics() -> TestResult {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/idemkv.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().ok_or("no panels")?;
    assert!(!panels.is_empty());
    // The store's metrics, and the PostgreSQL backend's own.
    let all = || {
        idemkv::PUBLISHED_METRICS
            .iter()
            .chain(idemkv_postgres::PUBLISHED_METRICS)
    };
    let published: std::collections::HashMap<&str, &str> =
        all().map(|m| (m.name, m.kind.as_str())).collect();
    let mut queried = std::collections::BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().ok_or("a panel without a title")?;
        assert!(panel["type"].is_string(), "{title}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"]
            .as_array()
            .ok_or("a panel without targets")?;
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().ok_or("a target without expr")?;
            for name in metric_names(expr) {
                // Histograms render as summaries: NAME{quantile=..}, NAME_sum, NAME_count.
                let base = ["_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| published.get(base) == Some(&"histogram"))
                    .unwrap_or(&name);
                assert!(
                    published.contains_key(base),
                    "panel {title:?} queries {name}, which idemkv does not publish"
                );
                queried.insert(base.to_string());
            }
        }
    }
    // And it shows every one of them.
    for name in all().map(|m| m.name) {
        assert!(queried.contains(name), "the dashboard does not show {name}");
    }
    Ok(())
}

/// The `idemkv_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(offset) = expr[i..].find("idemkv_") {
        let start = i + offset;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

/// What the hang-up test's handler shares with the test: a signal when it
/// started, the gate it waits at, and how often it ran to the end.
#[derive(Clone, Default)]
struct Gate {
    started: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Notify>,
    runs: Counter,
}

async fn gated_charge(State(gate): State<Gate>) -> (StatusCode, String) {
    gate.started.notify_one();
    gate.go.notified().await;
    let n = gate.runs.0.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, format!("charge #{n}"))
}

/// A client that hangs up while its claimed handler runs (a timeout, which
/// is exactly when it will retry) does not cancel the handler: it runs to
/// the end in a task of its own, its answer is stored, and the retry
/// replays it; the side effect ran once. `drain` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_hangs_up_never_cancels_its_handler() -> TestResult {
    let gate = Gate::default();
    let layer = IdempotencyLayer::new(store(), Callers::single_tenant());
    let router = Router::new()
        .route("/v1/charges", post(gated_charge))
        .layer(layer.clone())
        .with_state(gate.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/charges", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = Client::new();
    // A client on a raw socket, so that hanging up closes the connection
    // for sure (a pooled HTTP client may keep it open).
    let mut socket = tokio::net::TcpStream::connect(
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .ok_or("addr")?,
    )
    .await?;
    tokio::io::AsyncWriteExt::write_all(
        &mut socket,
        b"POST /v1/charges HTTP/1.1\r\nhost: test\r\nidempotency-key: hang-up-1\r\ncontent-length: 1\r\n\r\nx",
    )
    .await?;
    // The handler has started (the key is claimed): the client hangs up,
    // with a reset, as a client's timeout does.
    gate.started.notified().await;
    socket.set_zero_linger()?;
    drop(socket);
    // Time for the server to see the reset (without the layer's own task,
    // hyper would drop the handler at its gate then). Nothing below depends
    // on whether it did: the outcome must be the same either way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(layer.handlers_running(), 1);
    // The handler goes on and finishes.
    gate.go.notify_one();
    tokio::time::timeout(Duration::from_secs(60), layer.drain()).await?;
    assert_eq!(layer.handlers_running(), 0);
    assert_eq!(gate.runs.0.load(Ordering::SeqCst), 1);
    // The retry gets the stored answer, and nothing runs again.
    let retry = post_with(&client, &url, Some("hang-up-1"), "x").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(retry.text().await?, "charge #1");
    assert_eq!(gate.runs.0.load(Ordering::SeqCst), 1);
    server.abort();
    Ok(())
}

/// The same at the service's level, where a hang-up is exactly what hyper
/// makes of it: the request's future dropped while the handler waits.
/// Deterministic: the future is dropped after the handler started and
/// before it may finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_future_never_cancels_its_handler() -> TestResult {
    use tower::{Service, ServiceExt};
    let gate = Gate::default();
    let layer = IdempotencyLayer::new(store(), Callers::single_tenant());
    let mut service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn({
            let gate = gate.clone();
            move |_request: axum::http::Request<axum::body::Body>| {
                let gate = gate.clone();
                async move {
                    let (status, body) = gated_charge(State(gate)).await;
                    let mut response = axum::http::Response::new(axum::body::Body::from(body));
                    *response.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(response)
                }
            }
        }));
    let request = || {
        axum::http::Request::post("/v1/charges")
            .header("idempotency-key", "dropped-1")
            .body(axum::body::Body::from("x"))
    };
    let call = service.ready().await?.call(request()?);
    let first = tokio::spawn(call);
    gate.started.notified().await;
    // The connection is gone: its future is dropped mid-handler.
    first.abort();
    assert!(first.await.is_err_and(|err| err.is_cancelled()));
    gate.go.notify_one();
    tokio::time::timeout(Duration::from_secs(60), layer.drain()).await?;
    assert_eq!(
        gate.runs.0.load(Ordering::SeqCst),
        1,
        "the handler ran to its end once"
    );
    let retry = service.ready().await?.call(request()?).await?;
    assert_eq!(retry.status(), 201);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(gate.runs.0.load(Ordering::SeqCst), 1);
    Ok(())
}
