//! Per-request CPU work outside the store: key validation, fingerprinting,
//! and the record codec.
//!
//! `cargo bench --bench codec`

use criterion::{Criterion, criterion_group, criterion_main};
use idemkv::{Fingerprint, Key, StoredResponse, fuzzing};

fn key_and_fingerprint(c: &mut Criterion) {
    let body = br#"{"amount":1200,"currency":"eur","customer":"cus_9s6XKzkNRiz8i3"}"#;
    c.bench_function("key_new_and_fingerprint", |b| {
        b.iter(|| {
            let key = Key::new(
                "acct_42 POST /v1/charges",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            )
            .expect("valid");
            let fp = Fingerprint::builder()
                .part(b"POST")
                .part(b"/v1/charges")
                .part(body)
                .finish();
            (key, fp)
        })
    });
}

fn codec(c: &mut Criterion) {
    let key = Key::new("acct_42 POST /v1/charges", "8e03978e-40d5").expect("valid");
    let response =
        StoredResponse::new(201, vec![b'x'; 256]).with_header("content-type", "application/json");
    c.bench_function("record_encode_256b", |b| {
        b.iter(|| fuzzing::encode_sample_record(&key, Some(response.clone())).expect("encode"))
    });
    let bytes = fuzzing::encode_sample_record(&key, Some(response.clone())).expect("encode");
    c.bench_function("record_decode_256b", |b| {
        b.iter(|| fuzzing::decode_record(&bytes).expect("decode"))
    });
}

criterion_group!(benches, key_and_fingerprint, codec);
criterion_main!(benches);
