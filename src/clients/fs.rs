//! The local file system as the local targets and the loader read it.

use std::fs;
use std::io::Read;
use std::path::Path;

/// A file's bytes, but no more than `limit` and one byte past it (so a caller can tell it
/// was longer), read with one open and reads, no size lookup first: a plan reads tens of
/// thousands of small files (tenant files, and in a refresh the local target's own).
pub fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(1024);
    // `File::read_to_end` asks for the size and position first; through `take` it only reads.
    fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}
