//! The commands, grouped by what they do to the file: read it
//! ([`inspect`]), change it on an operator's word ([`admin`]), or move its
//! records out and in ([`transfer`]).

pub mod admin;
pub mod inspect;
pub mod transfer;

use idemkv::Key;

use crate::args::KeyArgs;
use crate::open::Failure;

/// The key named on the command line.
fn key_of(args: &KeyArgs) -> Result<Key, Failure> {
    Ok(Key::new(&args.scope, &args.key)?)
}
