//! The filesystem operations of PROTOCOL.md section 8. Each runs on the thread that calls
//! it (a confined worker, see [`super::workers`]); every object is reached through
//! [`locate`] and checked against the [`Guard`] by its real path before it is touched, and
//! then touched relative to the directory fd that was checked.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::FsError;
use super::guard::{Guard, Need};
use super::procfs;
use super::walk::{Located, kind, locate};
use crate::protocol::fs::{DirEntry, Metadata, READ_FILE_LIMIT};

fn require(guard: &Guard, need: Need, real: &Path, shown: &Path) -> Result<(), FsError> {
    if guard.allows(need, real) {
        Ok(())
    } else {
        Err(FsError::Denied {
            need,
            path: shown.to_path_buf(),
        })
    }
}

fn open_in(dir: impl AsFd, name: &OsStr, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::from_bits_truncate(mode),
    )
}

/// Opens the located object itself (for `/`, the root directory).
fn open_located(loc: &Located, flags: OFlag) -> Result<OwnedFd, Errno> {
    match &loc.name {
        Some(n) => open_in(&loc.dir, n, flags, 0),
        None => open_in(&loc.dir, OsStr::new("."), flags, 0),
    }
}

/// `fs/readFile`: the result object as JSON text (`{"dataBase64":"..."}`), built in one
/// buffer while reading so that a large file is held once, as base64, plus one chunk.
/// `headroom` bytes of spare capacity are left for the response envelope.
pub fn read_file(guard: &Guard, path: &Path, headroom: usize) -> Result<String, FsError> {
    let loc = locate(path, true, guard, Need::Read)?;
    let (_, st) = loc.existing()?;
    require(guard, Need::Read, &loc.real(), path)?;
    let k = kind(st);
    if k == SFlag::S_IFDIR || k == SFlag::S_IFIFO || k == SFlag::S_IFSOCK {
        return Err(FsError::Invalid(format!(
            "path `{}` is not a file",
            path.display()
        )));
    }
    let too_large = || {
        FsError::Invalid(format!(
            "file is too large to read: limit is {READ_FILE_LIMIT} bytes"
        ))
    };
    // Non-blocking, so that a character device with nothing to read ends the read instead
    // of holding a worker thread (regular files ignore the flag).
    let mut file = File::from(open_located(&loc, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?);
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > READ_FILE_LIMIT {
        return Err(too_large());
    }
    let prefix = "{\"dataBase64\":\"";
    let mut out =
        String::with_capacity(prefix.len() + (size as usize).div_ceil(3) * 4 + 2 + headroom);
    out.push_str(prefix);
    // Chunks are a multiple of 3 bytes so that their base64 concatenates.
    let mut buf = vec![0u8; 3 * 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(FsError::from_io(e)),
            }
        }
        total += filled as u64;
        if total > READ_FILE_LIMIT {
            return Err(too_large());
        }
        base64_simd::STANDARD.encode_append(&buf[..filled], &mut out);
        if filled < buf.len() {
            break;
        }
    }
    out.push_str("\"}");
    Ok(out)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &OsStr) -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut t = OsString::from(".");
    // Keep the temporary name short enough for NAME_MAX whatever the final name is.
    let bytes = name.as_bytes();
    t.push(OsStr::from_bytes(&bytes[..bytes.len().min(200)]));
    t.push(format!(".stockade-{}-{n}.tmp", std::process::id()));
    t
}

fn write_all(fd: OwnedFd, data: &[u8]) -> Result<(), FsError> {
    let mut f = File::from(fd);
    f.write_all(data).map_err(FsError::from_io)?;
    clear_set_id(f.as_fd())
}

/// The set-user-ID and set-group-ID bits.
const SET_ID: u32 = 0o6000;

/// Removes set-user-ID and set-group-ID bits from a file just written: content written
/// through the fs API never runs with another identity. (The kernel already clears them when
/// the writer lacks CAP_FSETID, as a confined worker does; an unconfined call may hold it, and
/// an empty write clears nothing.)
fn clear_set_id(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), FsError> {
    let st = fstat(fd)?;
    if kind(&st) == SFlag::S_IFREG && st.st_mode & SET_ID != 0 {
        fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777 & !SET_ID))?;
    }
    Ok(())
}

/// `fs/writeFile`: creates or replaces the file. An existing regular file is replaced
/// atomically (written to a temporary file in the same directory, then renamed over it,
/// keeping its permission bits but never a setuid or setgid bit), so a failed write never
/// leaves it truncated. It is rewritten in place instead when the replacement could not keep
/// its owner and group (the file is another user's: the worker holds no capability to give
/// it away, and must not take it over), or when the directory itself is not writable but the
/// file is. Other file types (FIFOs, devices) are written in place.
pub fn write_file(guard: &Guard, path: &Path, data: &[u8]) -> Result<(), FsError> {
    let loc = locate(path, true, guard, Need::Write)?;
    let name = loc.name()?.to_os_string();
    require(guard, Need::Write, &loc.real(), path)?;
    let existing = loc.leaf.as_ref().map(|(_, st)| *st);
    let in_place = || -> Result<(), FsError> {
        let fd = open_in(&loc.dir, &name, OFlag::O_WRONLY | OFlag::O_TRUNC, 0)?;
        write_all(fd, data)
    };
    match existing.map(|st| kind(&st)) {
        Some(SFlag::S_IFDIR) => return Err(Errno::EISDIR.into()),
        Some(SFlag::S_IFREG) | None => {}
        Some(_) => {
            // Non-blocking: a FIFO without a reader (or a device that would block) must fail
            // at once rather than hold a worker thread forever.
            let flags = OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NONBLOCK;
            let fd = open_in(&loc.dir, &name, flags, 0)?;
            return write_all(fd, data);
        }
    }
    if let Some(st) = &existing {
        // The same permission check a process's `open(O_WRONLY)` would get (DAC and
        // Landlock); replacing by rename must not succeed where writing would fail.
        drop(open_in(&loc.dir, &name, OFlag::O_WRONLY, 0)?);
        if st.st_uid != nix::unistd::geteuid().as_raw() {
            return in_place();
        }
    }
    let tmp = temp_name(&name);
    let created = open_in(
        &loc.dir,
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        0o666,
    );
    let fd = match created {
        Ok(fd) => fd,
        Err(Errno::EACCES | Errno::EPERM | Errno::EROFS) if existing.is_some() => {
            return in_place();
        }
        Err(e) => return Err(e.into()),
    };
    let unlink_tmp = || {
        let _ = unlinkat(&loc.dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    };
    if let Some(st) = &existing {
        let tmp_st = fstat(&fd)?;
        if tmp_st.st_gid != st.st_gid
            && std::os::unix::fs::fchown(&fd, None, Some(st.st_gid)).is_err()
        {
            // A group the server's user cannot give the file: keep the file's own.
            unlink_tmp();
            return in_place();
        }
    }
    let finish = || -> Result<(), FsError> {
        if let Some(st) = &existing {
            fchmod(&fd, Mode::from_bits_truncate(st.st_mode & 0o777))?;
        }
        let mut f = File::from(fd.try_clone().map_err(FsError::from_io)?);
        f.write_all(data).map_err(FsError::from_io)?;
        renameat(&loc.dir, tmp.as_os_str(), &loc.dir, name.as_os_str())?;
        Ok(())
    };
    let r = finish();
    if r.is_err() {
        unlink_tmp();
    }
    r
}

/// `path` without trailing slashes (`/` stays `/`). For the methods that act on a name
/// rather than open it (`mkdir`, remove): `dir/` names `dir`, and `link/` the link itself.
fn without_trailing_slash(path: &Path) -> &Path {
    let b = path.as_os_str().as_bytes();
    let end = b
        .iter()
        .rposition(|c| *c != b'/')
        .map_or(1.min(b.len()), |i| i + 1);
    Path::new(OsStr::from_bytes(&b[..end]))
}

/// `fs/createDirectory`. A trailing `/` is allowed, as for `mkdir`.
pub fn create_directory(guard: &Guard, path: &Path, recursive: bool) -> Result<(), FsError> {
    let path = without_trailing_slash(path);
    let loc = match locate(path, false, guard, Need::Write) {
        Err(FsError::Io(Errno::ENOENT)) if recursive => {
            // A missing parent: create it first, then this one.
            match path.parent() {
                Some(parent) if parent != path => create_directory(guard, parent, true)?,
                _ => return Err(Errno::ENOENT.into()),
            }
            locate(path, false, guard, Need::Write)?
        }
        other => other?,
    };
    require(guard, Need::Write, &loc.real(), path)?;
    if let Some((_, st)) = &loc.leaf {
        let is_dir = kind(st) == SFlag::S_IFDIR
            || (kind(st) == SFlag::S_IFLNK
                && locate(path, true, guard, Need::Write)
                    .ok()
                    .and_then(|l| l.leaf.map(|(_, s)| kind(&s) == SFlag::S_IFDIR))
                    .unwrap_or(false));
        return if recursive && is_dir {
            Ok(())
        } else {
            Err(Errno::EEXIST.into())
        };
    }
    mkdirat(&loc.dir, loc.name()?, Mode::from_bits_truncate(0o777))?;
    Ok(())
}

/// `fs/remove`: never follows a final symlink (not even written as `link/`).
pub fn remove(guard: &Guard, path: &Path, recursive: bool, force: bool) -> Result<(), FsError> {
    let path = without_trailing_slash(path);
    let loc = match locate(path, false, guard, Need::Write) {
        Err(FsError::Io(Errno::ENOENT)) if force => return Ok(()),
        other => other?,
    };
    require(guard, Need::Write, &loc.real(), path)?;
    let name = loc.name()?;
    let Some((_, st)) = &loc.leaf else {
        return if force {
            Ok(())
        } else {
            Err(Errno::ENOENT.into())
        };
    };
    if kind(st) == SFlag::S_IFDIR {
        if recursive {
            remove_tree(guard, &loc.dir, name, &loc.real())
        } else {
            Ok(unlinkat(&loc.dir, name, UnlinkatFlags::RemoveDir)?)
        }
    } else {
        Ok(unlinkat(&loc.dir, name, UnlinkatFlags::NoRemoveDir)?)
    }
}

fn list_names(dir: OwnedFd) -> Result<Vec<OsString>, FsError> {
    let mut d = Dir::from_fd(dir)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

fn remove_tree(guard: &Guard, parent: &OwnedFd, name: &OsStr, real: &Path) -> Result<(), FsError> {
    let dir = open_in(parent, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let dir_st = fstat(&dir)?;
    let names = list_names(dir.try_clone().map_err(FsError::from_io)?)?;
    for n in names {
        let child = real.join(&n);
        require(guard, Need::Write, &child, &child)?;
        let st = match fstatat(&dir, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if procfs::is_servers(dir.as_fd(), &dir_st, &n, None, &st) {
            return Err(FsError::Denied {
                need: Need::Write,
                path: child,
            });
        }
        if kind(&st) == SFlag::S_IFDIR {
            remove_tree(guard, &dir, &n, &child)?;
        } else {
            match unlinkat(&dir, n.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(unlinkat(parent, name, UnlinkatFlags::RemoveDir)?)
}

/// `fs/copy`.
pub fn copy(
    guard: &Guard,
    source: &Path,
    destination: &Path,
    recursive: bool,
) -> Result<(), FsError> {
    let src = locate(source, false, guard, Need::Read)?;
    let (_, sst) = src.existing()?;
    let sreal = src.real();
    require(guard, Need::Read, &sreal, source)?;
    match kind(sst) {
        SFlag::S_IFLNK => {
            let target = readlinkat(&src.dir, src.name()?)?;
            let dst = locate(destination, false, guard, Need::Write)?;
            require(guard, Need::Write, &dst.real(), destination)?;
            symlinkat(target.as_os_str(), &dst.dir, dst.name()?)?;
            Ok(())
        }
        SFlag::S_IFDIR => {
            if !recursive {
                return Err(FsError::Invalid(
                    "fs/copy requires recursive: true when sourcePath is a directory".into(),
                ));
            }
            let dst = locate(destination, true, guard, Need::Write)?;
            let dreal = dst.real();
            if dreal.starts_with(&sreal) {
                return Err(FsError::Invalid(
                    "fs/copy cannot copy a directory to itself or one of its descendants".into(),
                ));
            }
            require(guard, Need::Write, &dreal, destination)?;
            let sdir = open_located(&src, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            copy_dir(
                guard,
                sdir,
                &sreal,
                &dst.dir,
                dst.name()?,
                &dreal,
                sst.st_mode,
            )
        }
        SFlag::S_IFREG => {
            let dst = locate(destination, true, guard, Need::Write)?;
            require(guard, Need::Write, &dst.real(), destination)?;
            if let Some((_, dst_st)) = &dst.leaf
                && dst_st.st_dev == sst.st_dev
                && dst_st.st_ino == sst.st_ino
            {
                // Copying a file onto itself: truncating it first would destroy it.
                return Ok(());
            }
            let from = open_located(&src, OFlag::O_RDONLY)?;
            copy_file(from, &dst.dir, dst.name()?, sst.st_mode)
        }
        _ => Err(FsError::Invalid(
            "fs/copy only supports regular files, directories, and symlinks".into(),
        )),
    }
}

fn copy_file(from: OwnedFd, dir: &OwnedFd, name: &OsStr, mode: u32) -> Result<(), FsError> {
    // A destination with other names (hard links) is replaced, not written through: one of
    // them may be outside what the policy lets this call write (the other names keep the old
    // content, as with fs/writeFile).
    if let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        && SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
        && st.st_nlink > 1
    {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    let to = open_in(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
        mode & 0o777,
    )?;
    let (mut from, mut to) = (File::from(from), File::from(to));
    std::io::copy(&mut from, &mut to).map_err(FsError::from_io)?;
    // An existing destination keeps its mode, but never a set-id bit.
    clear_set_id(to.as_fd())
}

fn copy_dir(
    guard: &Guard,
    src: OwnedFd,
    sreal: &Path,
    dparent: &OwnedFd,
    dname: &OsStr,
    dreal: &Path,
    mode: u32,
) -> Result<(), FsError> {
    match mkdirat(dparent, dname, Mode::from_bits_truncate(mode & 0o777)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let dst = open_in(dparent, dname, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
    let src_st = fstat(&src)?;
    for n in list_names(src.try_clone().map_err(FsError::from_io)?)? {
        let (s, d) = (sreal.join(&n), dreal.join(&n));
        require(guard, Need::Read, &s, &s)?;
        require(guard, Need::Write, &d, &d)?;
        let st = match fstatat(&src, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if procfs::is_servers(src.as_fd(), &src_st, &n, None, &st) {
            return Err(FsError::Denied {
                need: Need::Read,
                path: s,
            });
        }
        match kind(&st) {
            SFlag::S_IFDIR => {
                let child = open_in(&src, &n, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
                copy_dir(guard, child, &s, &dst, &n, &d, st.st_mode)?;
            }
            SFlag::S_IFREG => {
                let from = open_in(&src, &n, OFlag::O_RDONLY, 0)?;
                copy_file(from, &dst, &n, st.st_mode)?;
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(&src, n.as_os_str())?;
                symlinkat(target.as_os_str(), &dst, n.as_os_str())?;
            }
            // Sockets, FIFOs and devices are skipped inside a recursive copy.
            _ => {}
        }
    }
    Ok(())
}

fn millis(t: std::io::Result<std::time::SystemTime>) -> u64 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// `fs/getMetadata`: follows symlinks except for `isSymlink`.
pub fn get_metadata(guard: &Guard, path: &Path) -> Result<Metadata, FsError> {
    let own = locate(path, false, guard, Need::Read)?;
    let (_, own_st) = own.existing()?;
    let is_symlink = kind(own_st) == SFlag::S_IFLNK;
    let target = if is_symlink {
        locate(path, true, guard, Need::Read)?
    } else {
        own
    };
    let (fd, _) = target.existing()?;
    require(guard, Need::Read, &target.real(), path)?;
    let m = File::from(fd.try_clone().map_err(FsError::from_io)?)
        .metadata()
        .map_err(FsError::from_io)?;
    Ok(Metadata {
        is_directory: m.is_dir(),
        is_file: m.is_file(),
        is_symlink,
        size: m.size(),
        created_at_ms: millis(m.created()),
        modified_at_ms: millis(m.modified()),
    })
}

/// `fs/readDirectory`: entries sorted by name; an entry whose target cannot be inspected
/// (a dangling symlink) is listed with both flags false.
pub fn read_directory(guard: &Guard, path: &Path) -> Result<Vec<DirEntry>, FsError> {
    let loc = locate(path, true, guard, Need::Read)?;
    let (_, st) = loc.existing()?;
    require(guard, Need::Read, &loc.real(), path)?;
    if kind(st) != SFlag::S_IFDIR {
        return Err(Errno::ENOTDIR.into());
    }
    let dir = open_located(&loc, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut names = list_names(dir.try_clone().map_err(FsError::from_io)?)?;
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| {
            let st: Option<FileStat> = fstatat(&dir, n.as_os_str(), AtFlags::empty()).ok();
            let k = st.map(|s| kind(&s));
            DirEntry {
                file_name: n.to_string_lossy().into_owned(),
                is_directory: k == Some(SFlag::S_IFDIR),
                is_file: k == Some(SFlag::S_IFREG),
            }
        })
        .collect())
}

/// `fs/canonicalize`: the real path.
pub fn canonicalize(guard: &Guard, path: &Path) -> Result<PathBuf, FsError> {
    let loc = locate(path, true, guard, Need::Read)?;
    loc.existing()?;
    let real = loc.real();
    require(guard, Need::Read, &real, path)?;
    Ok(real)
}
