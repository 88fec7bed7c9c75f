//! `wasi:filesystem/types` with the scratch quota: [`QuotaFs`] wraps
//! wasmtime-wasi's own implementation and charges every call that can make
//! the directory hold more (`write`, `set-size`, `open-at` with create or
//! truncate, `create-directory-at`, `symlink-at`, writes through
//! `write-via-stream` and `append-via-stream`) to the run's [`DiskQuota`]
//! before it happens; removals give space back by the quota's rules.
//! Everything else is passed through unchanged. A refused change fails
//! with `insufficient-space` (ENOSPC), which the guest can handle.

use super::quota::{DiskQuota, Key};
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError,
    StreamResult,
};

/// The filesystem view of one host call, with the run's quota.
pub struct QuotaFs<'a> {
    pub(crate) inner: WasiFilesystemCtxView<'a>,
    pub(crate) quota: Arc<DiskQuota>,
}

/// `HasData` for [`QuotaFs`].
pub struct QuotaFsData;

impl HasData for QuotaFsData {
    type Data<'a> = QuotaFs<'a>;
}

fn full() -> FsError {
    ErrorCode::InsufficientSpace.into()
}

fn key(hash: types::MetadataHashValue) -> Key {
    (hash.lower, hash.upper)
}

/// Path flags that do not follow a final symbolic link.
fn no_follow() -> types::PathFlags {
    types::PathFlags::empty()
}

impl QuotaFs<'_> {
    /// The entry an open file descriptor refers to.
    async fn key_of(&mut self, fd: &Resource<types::Descriptor>) -> FsResult<Key> {
        match self.quota.key_of(fd.rep()) {
            Some(key) => Ok(key),
            None => Ok(key(self
                .inner
                .metadata_hash(Resource::new_borrow(fd.rep()))
                .await?)),
        }
    }

    /// Replaces the stream `stream` with one that charges its writes.
    fn wrap(
        &mut self,
        stream: Resource<DynOutputStream>,
        key: Key,
        position: Option<u64>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner = self.inner.table.delete(stream)?;
        self.quota.opened(key, None);
        let wrapped: DynOutputStream = Box::new(QuotaStream {
            inner,
            key,
            position,
            quota: self.quota.clone(),
        });
        Ok(self.inner.table.push(wrapped)?)
    }
}

impl types::Host for QuotaFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        self.inner.convert_error_code(err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        self.inner.filesystem_error_code(err)
    }
}

impl HostDescriptor for QuotaFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.inner.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.inner.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.inner.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        let key = self.key_of(&fd).await?;
        self.quota.resize(key, size).map_err(|_| full())?;
        self.inner.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.inner.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let key = self.key_of(&fd).await?;
        let end = offset.checked_add(buf.len() as u64).ok_or_else(full)?;
        self.quota.grow_to(key, end).map_err(|_| full())?;
        self.inner.write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.inner.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.quota.can_create(0).map_err(|_| full())?;
        let dir = fd.rep();
        self.inner.create_directory_at(fd, path.clone()).await?;
        let made = self
            .inner
            .metadata_hash_at(Resource::new_borrow(dir), no_follow(), path)
            .await?;
        self.quota.created(key(made), 0);
        Ok(())
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.inner.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.inner.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner
            .set_times_at(fd, path_flags, path, atim, mtim)
            .await
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // A second name for the same entry costs a name, no new contents;
        // the contents are given back only when the last name goes.
        self.quota.can_create(0).map_err(|_| full())?;
        self.inner
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await?;
        self.quota.linked();
        Ok(())
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let dir = fd.rep();
        let before = self
            .inner
            .stat_at(Resource::new_borrow(dir), path_flags, path.clone())
            .await
            .ok();
        if before.is_none() && oflags.contains(types::OpenFlags::CREATE) {
            self.quota.can_create(0).map_err(|_| full())?;
        }
        let opened = self
            .inner
            .open_at(fd, path_flags, path, oflags, flags)
            .await?;
        let hash = match self
            .inner
            .metadata_hash(Resource::new_borrow(opened.rep()))
            .await
        {
            Ok(hash) => key(hash),
            Err(e) => {
                let _ = HostDescriptor::drop(&mut self.inner, opened);
                return Err(e);
            }
        };
        match &before {
            None => self.quota.created(hash, 0),
            Some(stat) if stat.type_ == types::DescriptorType::RegularFile => {
                self.quota.found(hash, stat.size)
            }
            Some(_) => {}
        }
        if oflags.contains(types::OpenFlags::TRUNCATE) {
            // Shrinking cannot be refused.
            let _ = self.quota.resize(hash, 0);
        }
        let is_file = match before {
            Some(stat) => stat.type_ == types::DescriptorType::RegularFile,
            None => !oflags.contains(types::OpenFlags::DIRECTORY),
        };
        if is_file {
            self.quota.opened(hash, Some(opened.rep()));
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        if let Some(key) = self.quota.key_of(fd.rep()) {
            self.quota.closed(key, Some(fd.rep()));
        }
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        self.inner.readlink_at(fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let gone = self
            .inner
            .metadata_hash_at(Resource::new_borrow(fd.rep()), no_follow(), path.clone())
            .await
            .ok();
        self.inner.remove_directory_at(fd, path).await?;
        if let Some(hash) = gone {
            self.quota.removed(key(hash), 1);
        }
        Ok(())
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // An entry already at the new name loses that name.
        let new_dir = new_fd.rep();
        let replaced = self.named(new_dir, &new_path).await;
        let moved = self.named(fd.rep(), &old_path).await;
        self.inner.rename_at(fd, old_path, new_fd, new_path).await?;
        if let Some((hash, links)) = replaced
            && moved.map(|(h, _)| h) != Some(hash)
        {
            self.quota.removed(hash, links);
        }
        Ok(())
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let bytes = src_path.len() as u64;
        self.quota.can_create(bytes).map_err(|_| full())?;
        let dir = fd.rep();
        self.inner
            .symlink_at(fd, src_path, dest_path.clone())
            .await?;
        if let Ok(hash) = self
            .inner
            .metadata_hash_at(Resource::new_borrow(dir), no_follow(), dest_path)
            .await
        {
            self.quota.created(key(hash), bytes);
        }
        Ok(())
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let gone = self.named(fd.rep(), &path).await;
        self.inner.unlink_file_at(fd, path).await?;
        if let Some((hash, links)) = gone {
            self.quota.removed(hash, links);
        }
        Ok(())
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.inner.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        // Every writable file descriptor came from `open_at`, which keyed it.
        let key = self.quota.key_of(fd.rep()).ok_or_else(full)?;
        let stream = self.inner.write_via_stream(fd, offset)?;
        self.wrap(stream, key, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let key = self.quota.key_of(fd.rep()).ok_or_else(full)?;
        let stream = self.inner.append_via_stream(fd)?;
        self.wrap(stream, key, None)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.inner.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash_at(fd, path_flags, path).await
    }
}

impl QuotaFs<'_> {
    /// The entry named `path` in directory `dir` (not following a final
    /// symbolic link) and its number of names, if there is one.
    async fn named(&mut self, dir: u32, path: &str) -> Option<(Key, u64)> {
        let stat = self
            .inner
            .stat_at(Resource::new_borrow(dir), no_follow(), path.to_string())
            .await
            .ok()?;
        let hash = self
            .inner
            .metadata_hash_at(Resource::new_borrow(dir), no_follow(), path.to_string())
            .await
            .ok()?;
        Some((key(hash), stat.link_count))
    }
}

impl HostDirectoryEntryStream for QuotaFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.inner.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

/// A file output stream whose writes are charged to the quota first.
struct QuotaStream {
    inner: DynOutputStream,
    key: Key,
    /// Where the next write lands; `None` when appending.
    position: Option<u64>,
    quota: Arc<DiskQuota>,
}

impl QuotaStream {
    fn charge(&mut self, n: u64) -> StreamResult<()> {
        let charged = match self.position {
            Some(at) => at
                .checked_add(n)
                .ok_or(super::quota::Full)
                .and_then(|end| self.quota.grow_to(self.key, end).map(|()| end)),
            None => self.quota.append(self.key, n).map(|()| 0),
        };
        match charged {
            Ok(end) => {
                if self.position.is_some() {
                    self.position = Some(end);
                }
                Ok(())
            }
            // ENOSPC: the guest sees `insufficient-space`.
            Err(_) => Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(28).into(),
            )),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len() as u64)?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }
}

impl Drop for QuotaStream {
    fn drop(&mut self) {
        self.quota.closed(self.key, None);
    }
}
