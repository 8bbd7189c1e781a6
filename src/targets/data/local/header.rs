//! A SQLite file's header as committed, read from its bytes.

use std::io::Read;
use std::path::Path;

/// `user_version` and `application_id` from a SQLite file's header, as committed, or `None`
/// if there is no such file.
///
/// Read from the bytes, not through SQLite: a refresh of 10,000 tenants would otherwise open
/// 10,000 databases. A run killed while committing leaves a hot rollback journal, and the
/// file's header may then be the uncommitted one (SQLite rolls it back on the next open); the
/// committed header is then the one the journal keeps.
pub(super) fn read_header(path: &Path) -> Option<(u32, u32)> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 100];
    let file_header = match f.read_exact(&mut header) {
        Ok(()) => Some(header_fields(&header)),
        // A file created but not yet written is an empty database.
        Err(_) => None,
    };
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    match journal_page_one(Path::new(&journal)) {
        Some(JournalPageOne::Kept(fields)) => Some(fields),
        Some(JournalPageOne::NewDatabase) => Some((0, 0)),
        None => Some(file_header.unwrap_or((0, 0))),
    }
}

pub(super) fn header_fields(page: &[u8]) -> (u32, u32) {
    let be = |at: usize| u32::from_be_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
    (be(60), be(68))
}

/// What a hot rollback journal says of the database's first page before the transaction it
/// rolls back.
pub(super) enum JournalPageOne {
    /// Its fields as they were.
    Kept((u32, u32)),
    /// The database was empty: the transaction made it.
    NewDatabase,
}

/// Page one as a hot journal keeps it, or `None` when there is no hot journal or it does
/// not hold page one (the header was not changed). The format is SQLite's rollback journal:
/// an 8-byte magic, then the record count, nonce, initial page count, sector size and page
/// size as 4-byte big-endian numbers; records start at the sector size, each a page number,
/// the page, and a checksum.
pub(super) fn journal_page_one(path: &Path) -> Option<JournalPageOne> {
    const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 28 || bytes[..8] != MAGIC {
        // Missing, empty or zeroed: not hot, the file's header is committed.
        return None;
    }
    let be = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let initial_pages = be(16)?;
    let sector = be(20)? as usize;
    let page = be(24)? as usize;
    if initial_pages == 0 {
        return Some(JournalPageOne::NewDatabase);
    }
    if !(512..=65536).contains(&page) || sector < 28 {
        return None;
    }
    let mut at = sector;
    while at + 4 + page + 4 <= bytes.len() {
        let pgno = be(at)?;
        if pgno == 1 {
            return Some(JournalPageOne::Kept(header_fields(
                &bytes[at + 4..at + 4 + page],
            )));
        }
        at += 4 + page + 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose header says (2, 7) and a hot journal keeping page one as (1, 0): the
    /// committed header is the journal's.
    #[test]
    fn a_hot_journal_holds_the_committed_header() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("t.sqlite");
        let page = |user_version: u32, application_id: u32| {
            let mut p = vec![0u8; 512];
            p[60..64].copy_from_slice(&user_version.to_be_bytes());
            p[68..72].copy_from_slice(&application_id.to_be_bytes());
            p
        };
        std::fs::write(&db, page(2, 7)).unwrap();
        assert_eq!(read_header(&db), Some((2, 7)));
        let mut journal = vec![0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
        for n in [1u32, 0, 1, 512, 512] {
            journal.extend(n.to_be_bytes());
        }
        journal.resize(512, 0);
        journal.extend(1u32.to_be_bytes());
        journal.extend(page(1, 0));
        journal.extend(0u32.to_be_bytes());
        let path = dir.path().join("t.sqlite-journal");
        std::fs::write(&path, &journal).unwrap();
        assert_eq!(read_header(&db), Some((1, 0)));
        // A journal whose header is zeroed (committed, kept by journal_mode=PERSIST) is not hot.
        journal[..8].fill(0);
        std::fs::write(&path, &journal).unwrap();
        assert_eq!(read_header(&db), Some((2, 7)));
    }
}
