//! The README's and docs/*.md's Rust code blocks, compiled against the real
//! crates: a block that stops compiling fails the build, and so
//! `cargo test`. The blocks are compiled, never run (what they take as
//! given has no value here).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// What blocks take as given: `given()` stands for any value of any type.
pub mod given {
    /// A value of any type, for declarations a block takes as given. Never
    /// called: the blocks are compiled, not run.
    pub fn given<T>() -> T {
        unreachable!("documentation blocks are compiled, never run")
    }
}

include!(concat!(env!("OUT_DIR"), "/snippets.rs"));
