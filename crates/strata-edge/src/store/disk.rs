//! The disk store: one file per object under `DIR/objects/`, named by the SHA-256 of its
//! variant key, bounded by bytes, evicting the least recently used.
//!
//! Its index (key → file, size, URL, surrogate keys, recency) lives in memory and is rebuilt
//! at start by reading the metadata at the head of every file — so the store survives a
//! restart, and a file that does not decode (cut short by a crash, another version) is
//! removed. Files are written under a temporary name and renamed into place. Every method
//! does blocking file I/O: call it from a blocking thread.
//!
//! A write that fails (disk full, the directory gone) is counted and given up: the object
//! stays in memory, the index forgets it, and the edge serves on.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::object::{MAGIC, MAX_META, Meta, Object};
use crate::purge::Selector;

struct Entry {
    url: String,
    /// The request headers that select this variant.
    vary: Vec<String>,
    host: String,
    path: String,
    keys: Vec<String>,
    bytes: u64,
    tick: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    by_url: HashMap<String, Vec<String>>,
    /// Recency: tick → variant key; the first is the least recently used.
    lru: BTreeMap<u64, String>,
    tick: u64,
    bytes: u64,
}

impl Index {
    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, key.to_string());
        }
    }

    fn add(&mut self, key: String, meta: &Meta, bytes: u64) {
        self.remove(&key);
        self.tick += 1;
        self.lru.insert(self.tick, key.clone());
        self.by_url
            .entry(meta.url.clone())
            .or_default()
            .push(key.clone());
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                url: meta.url.clone(),
                vary: meta.vary.clone(),
                host: meta.host.clone(),
                path: meta.path.clone(),
                keys: meta.surrogate_keys.clone(),
                bytes,
                tick: self.tick,
            },
        );
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.lru.remove(&e.tick);
        self.bytes -= e.bytes;
        if let Some(keys) = self.by_url.get_mut(&e.url) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_url.remove(&e.url);
            }
        }
        Some(e)
    }
}

/// The disk store.
pub struct Disk {
    objects: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("objects", &self.objects)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn file_name(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the metadata at the head of an object file, without its body.
fn read_meta(path: &Path) -> Option<Meta> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; MAGIC.len() + 4];
    file.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes(head[MAGIC.len()..].try_into().ok()?) as usize;
    if head[..MAGIC.len()] != *MAGIC || len > MAX_META {
        return None;
    }
    let mut meta = vec![0u8; len];
    file.read_exact(&mut meta).ok()?;
    head.extend_from_slice(&meta);
    Object::decode_meta(&head).map(|(m, _)| m)
}

impl Disk {
    /// Opens (creating) the store in `dir` and rebuilds its index from the files there;
    /// removes temporary files, files that do not decode, and the least recently written
    /// files past `capacity`.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<Self> {
        let objects = dir.join("objects");
        std::fs::create_dir_all(&objects)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&objects)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            let valid = name.len() == 64 && !name.contains('.');
            match (valid, read_meta(&path)) {
                (true, Some(m)) if file_name(&m.key) == name => {
                    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((modified, m, meta.len()));
                }
                _ => {
                    tracing::info!(file = %path.display(), "removing a file that is not a whole object");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Oldest first, so the most recently written are the most recently used.
        found.sort_by_key(|(modified, _, _)| *modified);
        let mut index = Index::default();
        for (_, meta, bytes) in found {
            index.add(meta.key.clone(), &meta, bytes);
        }
        let disk = Self {
            objects,
            capacity,
            index: Mutex::new(index),
        };
        for victim in disk.make_room(0) {
            let _ = std::fs::remove_file(disk.objects.join(victim));
        }
        Ok(disk)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops least recently used entries until `incoming` more bytes fit; the files to remove.
    fn make_room(&self, incoming: u64) -> Vec<String> {
        let mut index = self.index();
        let mut victims = Vec::new();
        while index.bytes + incoming > self.capacity {
            let Some((_, key)) = index.lru.first_key_value().map(|(t, k)| (*t, k.clone())) else {
                break;
            };
            if index.remove(&key).is_none() {
                // An order entry without its object: drop it and go on.
                index.lru.pop_first();
                continue;
            }
            victims.push(file_name(&key));
        }
        victims
    }

    /// Objects and bytes held.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.index();
        (index.entries.len() as u64, index.bytes)
    }

    /// Writes an object (replacing the one with its key), evicting to make room. An object
    /// larger than the whole store is not written.
    pub fn write(&self, object: &Object) -> std::io::Result<()> {
        let bytes = object.encode().map_err(std::io::Error::other)?;
        let size = bytes.len() as u64;
        let key = &object.meta.key;
        if size > self.capacity {
            self.remove(key);
            return Ok(());
        }
        self.index().remove(key);
        for victim in self.make_room(size) {
            let _ = std::fs::remove_file(self.objects.join(victim));
        }
        let name = file_name(key);
        let tmp = self.objects.join(format!("{name}.tmp"));
        let result = std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, self.objects.join(&name)));
        match result {
            Ok(()) => {
                self.index().add(key.clone(), &object.meta, size);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The stored variant of a URL that a request with `headers` selects, marked as just
    /// used. Only that variant's file is read, however many the URL has.
    pub fn load_variant(&self, url: &str, headers: &HeaderMap) -> Option<Object> {
        let key = {
            let index = self.index();
            index.by_url.get(url)?.iter().find_map(|key| {
                let entry = index.entries.get(key)?;
                (crate::key::variant(url, &entry.vary, headers) == *key).then(|| key.clone())
            })?
        };
        let object = self.load(&key);
        if object.is_none() {
            self.remove(&key);
        }
        object
    }

    /// One object, marked as just used.
    pub fn load(&self, key: &str) -> Option<Object> {
        let bytes = std::fs::read(self.objects.join(file_name(key))).ok()?;
        let object = Object::decode(bytes).filter(|o| o.meta.key == key)?;
        self.index().touch(key);
        Some(object)
    }

    /// Removes an object; true if it was there.
    pub fn remove(&self, key: &str) -> bool {
        let had = self.index().remove(key).is_some();
        let _ = std::fs::remove_file(self.objects.join(file_name(key)));
        had
    }

    /// The variant keys of a URL.
    pub fn keys_of_url(&self, url: &str) -> Vec<String> {
        self.index().by_url.get(url).cloned().unwrap_or_default()
    }

    /// The variant keys a purge selects.
    pub fn select(&self, selector: &Selector) -> Vec<String> {
        self.index()
            .entries
            .iter()
            .filter(|(_, e)| selector.matches(&e.host, &e.path, &e.keys))
            .map(|(k, _)| k.clone())
            .collect()
    }
}
