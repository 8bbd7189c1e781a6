//! Files and folders the tool writes are its operator's alone: files 0600, folders 0700.
//! The state names every tenant's owner, the local target's databases and exports hold the
//! tenants' own data, and a rendered file or a saved plan says as much; none of it is for
//! the other users of the machine. Everything the tool writes goes through here, and what
//! it finds made by an older version with looser modes is narrowed when it opens it again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `path` and the folders above it that are missing, each readable by its owner
/// only. Folders that exist are left as they are: the one above may be the operator's.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(path)
}

/// A folder that is the tool's own (the local target's, an export's): created as
/// [`create_dir_all`] does, and narrowed to its owner if it was made more open.
pub fn own_dir(path: &Path) -> io::Result<()> {
    create_dir_all(path)?;
    tighten(path)
}

/// Options that create a file readable by its owner only; the caller says how to open it.
pub fn options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    opts.mode(0o600);
    opts
}

/// Creates or truncates `path` for writing, private (an existing file is narrowed too).
pub fn create(path: &Path) -> io::Result<File> {
    let file = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    narrow(&file)?;
    Ok(file)
}

/// Writes `bytes` to `path`, private.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create(path)?.write_all(bytes)
}

/// Makes an empty private file at `path` unless one is there, which is narrowed instead:
/// SQLite then opens it, and gives its journal and write-ahead log the database file's own
/// mode. A file that is there is never opened here: closing a descriptor of a database would
/// drop the locks SQLite holds on it in this process.
pub fn touch(path: &Path) -> io::Result<()> {
    match options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path),
        Err(e) => Err(e),
    }
}

/// Narrows an existing file or folder to its owner; one that is missing is no error.
pub fn tighten(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Narrows an open file to its owner (a file made before, or by an older version).
pub fn narrow(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & !0o077))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_folders_are_the_owners_alone_and_looser_ones_are_narrowed() {
        let root = tempfile::TempDir::new().unwrap();
        let dir = root.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        write(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&file, b"y").unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755, "an existing folder is left as it is");
        own_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}

/// Writes through a temporary file and a rename, so a reader (or a kill) never sees half;
/// the file is private, as everything the tool writes is.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = create(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}
