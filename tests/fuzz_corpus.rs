//! Replays the fuzz targets' committed corpora on the stable toolchain, so
//! every input the fuzzers found interesting stays covered by `cargo test`.

use std::path::Path;

#[path = "support/targets.rs"]
mod targets;

use idemkv::{Key, StoredResponse, fuzzing};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn decode_record_corpus() {
    let inputs = corpus("decode_record");
    assert!(!inputs.is_empty(), "the seed corpus is committed");
    for (_, bytes) in &inputs {
        targets::decode_record(bytes);
    }
    let valid = inputs
        .iter()
        .filter(|(_, bytes)| fuzzing::decode_record(bytes).is_ok())
        .count();
    assert!(valid > 0, "the seeds include well-formed records");
}

#[test]
fn key_validation_corpus() {
    let inputs = corpus("key_validation");
    assert!(!inputs.is_empty(), "the seed corpus is committed");
    for (_, bytes) in &inputs {
        targets::key_validation(bytes);
    }
}

#[test]
fn operations_corpus() {
    let inputs = corpus("operations");
    assert!(!inputs.is_empty(), "the seed corpus is committed");
    for (_, bytes) in &inputs {
        targets::operations(bytes);
    }
}

/// Regenerates the well-formed seeds: `cargo test --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes files; run by hand to refresh the seed corpus"]
fn write_decode_record_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_record");
    let key = Key::new("acct_42 POST /v1/charges", "charge-0001").expect("key");
    let seeds = [
        ("seed-inflight", fuzzing::encode_sample_record(&key, None)),
        (
            "seed-completed",
            fuzzing::encode_sample_record(
                &key,
                Some(
                    StoredResponse::new(201, r#"{"id":"ch_1"}"#)
                        .with_header("content-type", "application/json"),
                ),
            ),
        ),
        (
            "seed-empty-scope",
            fuzzing::encode_sample_record(&Key::new("", "k").expect("key"), None),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes.expect("encode")).expect("write seed");
    }
    std::fs::write(
        dir.join("seed-garbage"),
        b"\x01not a record\x00\x00\x00\x00",
    )
    .expect("write");
}
