//! [`DiskQuota`]: the scratch directory's ledger. Every name the guest
//! makes (a file, directory or symbolic link, or another name for a file)
//! costs [`ENTRY_BYTES`] and counts against the entry bound; every entry's
//! contents, keyed by its identity (the `metadata-hash` WASI gives it),
//! cost their size. A change is charged before it happens and refused past
//! the quota. The scratch directory starts empty and only the guest changes
//! it, so the ledger is the directory, with two cautious rules: an entry's
//! contents are given back only when its last name goes (its link count
//! was one) *and* no descriptor or stream of the run still has it open, and
//! its charged size only shrinks by `set-size` or a truncating open. So the
//! directory never holds more than the quota, except what one write in
//! flight adds.

use crate::meter::RunMeter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What each file, directory or symbolic link costs beyond its bytes (the
/// block a small file or a directory takes on disk).
pub const ENTRY_BYTES: u64 = 4096;

/// An entry's identity (a WASI metadata hash: device and inode).
pub(crate) type Key = (u64, u64);

#[derive(Debug, Default)]
struct Entry {
    /// Bytes charged for its contents.
    size: u64,
    /// Descriptors and streams of this run that have it open.
    open: u32,
    /// Its last name is gone; give it back when `open` reaches 0.
    orphan: bool,
}

#[derive(Debug, Default)]
struct Ledger {
    used: u64,
    /// Names (entries and extra links).
    names: usize,
    entries: HashMap<Key, Entry>,
    /// The entry behind each open file descriptor (by resource rep).
    descriptors: HashMap<u32, Key>,
}

/// Why a change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// A run's scratch directory quota: bytes and entries.
#[derive(Debug)]
pub struct DiskQuota {
    max_bytes: u64,
    max_entries: usize,
    meter: Arc<RunMeter>,
    ledger: Mutex<Ledger>,
}

impl DiskQuota {
    pub fn new(max_bytes: u64, max_entries: usize, meter: Arc<RunMeter>) -> Self {
        DiskQuota {
            max_bytes,
            max_entries,
            meter,
            ledger: Mutex::default(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `bytes` more, or refuses.
    fn charge(&self, l: &mut Ledger, bytes: u64) -> Result<(), Full> {
        let used = l.used.checked_add(bytes).ok_or(Full)?;
        if used > self.max_bytes {
            return Err(Full);
        }
        l.used = used;
        self.meter.note_disk(used);
        Ok(())
    }

    /// Whether one more entry of `bytes` would fit (checked before the
    /// guest's create reaches the disk).
    pub(crate) fn can_create(&self, bytes: u64) -> Result<(), Full> {
        let l = self.ledger();
        if l.names >= self.max_entries {
            return Err(Full);
        }
        match l.used.checked_add(ENTRY_BYTES + bytes) {
            Some(used) if used <= self.max_bytes => Ok(()),
            _ => Err(Full),
        }
    }

    /// Records a new entry of `bytes` (a symbolic link's target, else 0)
    /// with its first name. Checked by `can_create` first; charged even if
    /// that check raced.
    pub(crate) fn created(&self, key: Key, bytes: u64) {
        let mut l = self.ledger();
        l.names += 1;
        l.used += ENTRY_BYTES;
        if !l.entries.contains_key(&key) {
            l.used += bytes;
            l.entries.insert(
                key,
                Entry {
                    size: bytes,
                    ..Entry::default()
                },
            );
        }
        self.meter.note_disk(l.used);
    }

    /// Records another name for an entry (`link-at`; checked by
    /// `can_create` first).
    pub(crate) fn linked(&self) {
        let mut l = self.ledger();
        l.names += 1;
        l.used += ENTRY_BYTES;
        self.meter.note_disk(l.used);
    }

    /// Records an entry found rather than made (not expected: the
    /// directory starts empty), at its size on disk.
    pub(crate) fn found(&self, key: Key, size: u64) {
        if !self.ledger().entries.contains_key(&key) {
            self.created(key, size);
        }
    }

    /// Charges a write that ends at byte `end` of `key`'s contents.
    pub(crate) fn grow_to(&self, key: Key, end: u64) -> Result<(), Full> {
        let mut l = self.ledger();
        let size = l.entries.get(&key).map_or(0, |e| e.size);
        if end > size {
            self.charge(&mut l, end - size)?;
            l.entries.entry(key).or_default().size = end;
        }
        Ok(())
    }

    /// Charges `n` bytes appended to `key`.
    pub(crate) fn append(&self, key: Key, n: u64) -> Result<(), Full> {
        let mut l = self.ledger();
        self.charge(&mut l, n)?;
        l.entries.entry(key).or_default().size += n;
        Ok(())
    }

    /// `key`'s contents set to `size` bytes (`set-size`, a truncating open).
    pub(crate) fn resize(&self, key: Key, size: u64) -> Result<(), Full> {
        let mut l = self.ledger();
        let old = l.entries.get(&key).map_or(0, |e| e.size);
        if size > old {
            self.charge(&mut l, size - old)?;
        } else {
            l.used -= (old - size).min(l.used);
        }
        l.entries.entry(key).or_default().size = size;
        Ok(())
    }

    /// A descriptor (by rep) or stream of this run opened `key`.
    pub(crate) fn opened(&self, key: Key, descriptor: Option<u32>) {
        let mut l = self.ledger();
        l.entries.entry(key).or_default().open += 1;
        if let Some(rep) = descriptor {
            l.descriptors.insert(rep, key);
        }
    }

    /// The entry behind an open file descriptor.
    pub(crate) fn key_of(&self, descriptor: u32) -> Option<Key> {
        self.ledger().descriptors.get(&descriptor).copied()
    }

    /// A descriptor (by rep) or stream closed `key`.
    pub(crate) fn closed(&self, key: Key, descriptor: Option<u32>) {
        let mut l = self.ledger();
        if let Some(rep) = descriptor {
            l.descriptors.remove(&rep);
        }
        let release = match l.entries.get_mut(&key) {
            Some(e) => {
                e.open = e.open.saturating_sub(1);
                e.open == 0 && e.orphan
            }
            None => false,
        };
        if release {
            Self::release(&mut l, key);
        }
    }

    /// `key` lost a name; it had `links` names before.
    pub(crate) fn removed(&self, key: Key, links: u64) {
        let mut l = self.ledger();
        l.names = l.names.saturating_sub(1);
        l.used -= ENTRY_BYTES.min(l.used);
        if links > 1 {
            return;
        }
        match l.entries.get_mut(&key) {
            Some(e) if e.open > 0 => e.orphan = true,
            Some(_) => Self::release(&mut l, key),
            None => {}
        }
    }

    /// Gives back an entry's contents.
    fn release(l: &mut Ledger, key: Key) {
        if let Some(e) = l.entries.remove(&key) {
            l.used -= e.size.min(l.used);
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.ledger().used
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(bytes: u64, entries: usize) -> DiskQuota {
        DiskQuota::new(bytes, entries, Arc::new(RunMeter::new(Default::default())))
    }

    #[test]
    fn writes_are_charged_by_growth_and_refused_past_the_quota() {
        let q = quota(ENTRY_BYTES + 1000, 10);
        q.can_create(0).unwrap();
        q.created((1, 1), 0);
        q.grow_to((1, 1), 600).unwrap();
        // Rewriting what is there costs nothing; growing costs the growth.
        q.grow_to((1, 1), 300).unwrap();
        q.append((1, 1), 400).unwrap();
        assert_eq!(q.used(), ENTRY_BYTES + 1000);
        assert_eq!(q.grow_to((1, 1), 1001), Err(Full));
        assert_eq!(q.can_create(0), Err(Full));
        // Truncating gives space back.
        q.resize((1, 1), 0).unwrap();
        assert_eq!(q.used(), ENTRY_BYTES);
    }

    #[test]
    fn space_comes_back_only_when_the_last_name_goes_and_nothing_holds_it_open() {
        let q = quota(1 << 20, 10);
        q.created((1, 1), 0);
        q.opened((1, 1), Some(7));
        q.grow_to((1, 1), 5000).unwrap();
        // A second name costs a name; removing one gives back only that.
        q.can_create(0).unwrap();
        q.linked();
        assert_eq!(q.used(), 2 * ENTRY_BYTES + 5000);
        q.removed((1, 1), 2);
        assert_eq!(q.used(), ENTRY_BYTES + 5000);
        // The last name, but still open: its contents stay charged.
        q.removed((1, 1), 1);
        assert_eq!(q.used(), 5000);
        assert_eq!(q.key_of(7), Some((1, 1)));
        q.closed((1, 1), Some(7));
        assert_eq!(q.used(), 0);
        assert_eq!(q.key_of(7), None);
    }

    #[test]
    fn names_are_bounded() {
        let q = quota(1 << 30, 3);
        for i in 0..2 {
            q.can_create(0).unwrap();
            q.created((1, i), 0);
        }
        q.can_create(0).unwrap();
        q.linked();
        assert_eq!(q.can_create(0), Err(Full));
        q.removed((1, 0), 1);
        q.can_create(0).unwrap();
    }
}
