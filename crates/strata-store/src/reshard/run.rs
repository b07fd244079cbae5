//! The resharder: executes a plan of slot moves (a split, a merge, one range, a pin) while the
//! API servers keep serving.
//!
//! For each move `slots: A → B`:
//! 1. **capture**: A starts logging the keys its writes touch (triggers, in the writes' own
//!    transactions);
//! 2. **copy**: A's rows of the slots are copied to B as they are (versions, hashes, claims);
//! 3. **catch up**: the keys the log names are re-read in A and written (or deleted) in B,
//!    until the backlog is small;
//! 4. **cut over**, chunk by chunk (`chunk_slots` at a time): a fence in A pauses the chunk's
//!    writes (routers wait for the next map); the log is drained for good; both sides'
//!    counts and checksums of the chunk are compared (as Vitess' VDiff does); the next map is
//!    published, and the paused writes go on in B. A mismatch lifts the fence and stops;
//! 5. **clean up**: after a grace period (for listings begun on the old map), A's copies of the
//!    moved rows are deleted and the capture ends.
//!
//! A pin moves one user: fence it in its group, copy its row, verify, publish.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use strata_core::user::UserId;

use super::journal::{self, Journal, PendingCut, Phase, PinState};
pub use super::plan::{Options, Report, Request, plan};
use super::rows::{Changed, GroupRows, RowBatch, UserRow};
use super::scan::{checksum, delete_slot_rows, steps};
use crate::StoreError;
use crate::shard::fence::Fence;
use crate::shard::{ShardGroup, ShardMap, SlotRange, Strategy, slot_of_key};

/// Reads and publishes the shard map (compare-and-set on the version).
#[async_trait]
pub trait MapPublisher: Send + Sync + 'static {
    async fn current(&self) -> Result<ShardMap, StoreError>;
    /// Publishes `map` if the published version is still `expected`.
    async fn publish(&self, expected: u64, map: &ShardMap) -> Result<(), StoreError>;
}

/// Opens a group's database for the resharder.
pub trait RowsOpener: Send + Sync + 'static {
    fn rows(&self, group: &ShardGroup) -> Result<Arc<dyn GroupRows>, StoreError>;
}

/// Where a resharding reports its progress (a bar on a terminal, lines in a log).
pub trait Progress: Send + Sync {
    /// A new phase of `total` units (rows, slots).
    fn phase(&self, what: &str, total: u64);
    fn advance(&self, n: u64);
    fn note(&self, line: &str);
}

/// A progress sink that reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn note(&self, _: &str) {}
}

/// Executes journals.
pub struct Resharder {
    pub publisher: Arc<dyn MapPublisher>,
    pub opener: Arc<dyn RowsOpener>,
    pub journal_path: std::path::PathBuf,
    pub options: Options,
    pub progress: Arc<dyn Progress>,
}

impl Resharder {
    /// Starts `request`, or resumes the resharding in progress if it is the same request.
    pub async fn run(&self, request: &Request) -> Result<Report, StoreError> {
        let journal = match journal::read(&self.journal_path)? {
            Some(j) if j.what == request.describe() => {
                self.progress
                    .note(&format!("resuming the resharding {} ({})", j.id, j.what));
                j
            }
            Some(j) => {
                return Err(StoreError::Unusable(format!(
                    "a resharding is in progress ({}): finish it with `strata reshard --resume`, or roll it back with `strata reshard --abort`",
                    j.what
                )));
            }
            None => {
                let map = self.publisher.current().await?;
                let id = format!("r{}", crate::accounts::now_ms());
                let j = plan(&map, request, id)?;
                // Every group it touches must have a database before anything is written.
                let mut touched: Vec<&ShardGroup> = j.new_groups.iter().collect();
                touched.extend(j.moves.iter().flat_map(|m| [&m.from, &m.to]));
                touched.extend(j.pin.iter().flat_map(|p| [&p.from, &p.to]));
                for g in touched {
                    self.opener.rows(g)?;
                }
                journal::write(&self.journal_path, &j)?;
                j
            }
        };
        self.execute(journal).await
    }

    /// Resumes the resharding in progress.
    pub async fn resume(&self) -> Result<Report, StoreError> {
        match journal::read(&self.journal_path)? {
            Some(j) => self.execute(j).await,
            None => Err(StoreError::Unusable(
                "no resharding is in progress: nothing to resume".into(),
            )),
        }
    }

    fn save(&self, j: &Journal) -> Result<(), StoreError> {
        journal::write(&self.journal_path, j)
    }

    async fn execute(&self, mut j: Journal) -> Result<Report, StoreError> {
        let started = Instant::now();
        let mut map = self.publisher.current().await?;
        // New groups first, holding nothing.
        let missing: Vec<ShardGroup> = j
            .new_groups
            .iter()
            .filter(|g| !map.groups().contains(g))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let mut next = map.clone();
            for g in missing {
                next = next
                    .add_group(g)
                    .map_err(|e| StoreError::Unusable(e.to_string()))?;
            }
            // `add_group` bumps the version once per group; publish one version up.
            let next = ShardMap::new(
                map.version() + 1,
                next.strategy(),
                next.groups().to_vec(),
                next.assignments()
                    .into_iter()
                    .map(|(r, g)| (r, g.clone()))
                    .collect(),
                next.pins().clone(),
            )
            .map_err(|e| StoreError::Unusable(e.to_string()))?;
            self.publisher.publish(map.version(), &next).await?;
            map = next;
        }
        if let Some(pin) = j.pin.clone() {
            self.pin(&mut j, &pin, &mut map).await?;
        } else {
            self.move_slots(&mut j, &mut map).await?;
        }
        if let Some(keep) = j.keep_groups
            && map.groups().len() > keep
        {
            let next = map
                .drop_groups_from(keep)
                .map_err(|e| StoreError::Unusable(e.to_string()))?;
            self.publisher.publish(map.version(), &next).await?;
            map = next;
        }
        let stopped_early = self
            .options
            .stop_after_cuts
            .is_some_and(|n| j.pauses_ms.len() >= n)
            && j.moves.iter().any(|m| m.uncut().is_some());
        if !stopped_early {
            journal::remove(&self.journal_path)?;
        }
        let (verified_users, verified_emails) = j
            .verified
            .iter()
            .fold((0, 0), |(u, e), (_, vu, ve)| (u + vu, e + ve));
        Ok(Report {
            what: j.what.clone(),
            finished: !stopped_early,
            map_version: map.version(),
            groups: map.groups().len(),
            slots_moved: j.moves.iter().map(|m| m.slots.len()).sum(),
            rows_copied: j.rows_copied,
            cut_overs: j.pauses_ms.len(),
            pauses_ms: j.pauses_ms.clone(),
            pause_parts_ms: j.pause_parts_ms.clone(),
            verified_users,
            verified_emails,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn move_slots(&self, j: &mut Journal, map: &mut ShardMap) -> Result<(), StoreError> {
        let strategy = map.strategy();
        let pinned: BTreeSet<i64> = map.pins().keys().map(|u| u.0 as i64).collect();
        // 1. Capture in every source group.
        let sources: BTreeSet<ShardGroup> = j.moves.iter().map(|m| m.from.clone()).collect();
        for g in &sources {
            let rows = self.opener.rows(g)?;
            let at = rows.start_capture(&j.id).await?;
            j.capture.entry(g.to_string()).or_insert(at);
        }
        self.save(j)?;
        // 2. Bulk copy.
        if j.phase == Phase::Copying {
            let total: u64 = j
                .moves
                .iter()
                .filter(|m| m.copied_to != Some(m.slots.last().get()))
                .map(|m| m.slots.len() as u64)
                .sum();
            self.progress.phase("copying slots", total);
            for i in 0..j.moves.len() {
                self.copy_move(j, i, strategy, &pinned).await?;
            }
            j.phase = Phase::CuttingOver;
            self.save(j)?;
        }
        // 3. Catch up until little is left.
        for g in &sources {
            for _ in 0..20 {
                if self.catch_up(j, g, strategy, &pinned).await? < 200 {
                    break;
                }
            }
        }
        // 4. Cut over, chunk by chunk. A cut-over a stopped resharder began: if its map was
        // published it is done; if not, its fence is lifted and it is redone (whatever the
        // chunk size now).
        if let Some(p) = j.pending.clone() {
            let m = j.moves.get(p.move_index).cloned().ok_or_else(|| {
                StoreError::Unusable("the journal's pending cut-over names no move".into())
            })?;
            if map.version() >= p.map_version {
                self.finish_cut(j, p.move_index, p.slots, None)?;
            } else {
                self.opener
                    .rows(&m.from)?
                    .unfence(m.to.as_str(), p.map_version)
                    .await?;
                j.pending = None;
                self.save(j)?;
            }
        }
        if j.phase == Phase::CuttingOver {
            let total: u64 = j
                .moves
                .iter()
                .filter_map(|m| m.uncut())
                .map(|r| r.len() as u64)
                .sum();
            self.progress.phase("cutting over", total);
            for i in 0..j.moves.len() {
                while let Some(uncut) = j.moves[i].uncut() {
                    if self
                        .options
                        .stop_after_cuts
                        .is_some_and(|n| j.pauses_ms.len() >= n)
                    {
                        return Ok(());
                    }
                    let last = uncut
                        .first()
                        .get()
                        .saturating_add(self.options.chunk_slots.max(1) - 1)
                        .min(uncut.last().get());
                    let chunk = SlotRange::new(uncut.first().get(), last)
                        .ok_or_else(|| StoreError::Unavailable("an empty chunk (a bug)".into()))?;
                    self.cut_over(j, i, chunk, map, &pinned).await?;
                    self.progress.advance(chunk.len() as u64);
                }
            }
            j.phase = Phase::CleaningUp;
            self.save(j)?;
        }
        // 5. Clean up the old copies.
        tokio::time::sleep(self.options.cleanup_grace).await;
        self.progress.phase("cleaning up", j.moves.len() as u64);
        for m in j.moves.clone() {
            let rows = self.opener.rows(&m.from)?;
            delete_slot_rows(
                rows.as_ref(),
                strategy,
                m.slots,
                &pinned,
                self.options.batch,
            )
            .await?;
            self.progress.advance(1);
        }
        for g in &sources {
            let rows = self.opener.rows(g)?;
            rows.stop_capture(&j.id).await?;
            rows.compact_fences().await?;
        }
        Ok(())
    }

    async fn copy_move(
        &self,
        j: &mut Journal,
        i: usize,
        strategy: Strategy,
        pinned: &BTreeSet<i64>,
    ) -> Result<(), StoreError> {
        let m = j.moves[i].clone();
        let (src, dst) = (self.opener.rows(&m.from)?, self.opener.rows(&m.to)?);
        let first = match m.copied_to {
            Some(last) if last >= m.slots.last().get() => return Ok(()),
            Some(last) => last + 1,
            None => m.slots.first().get(),
        };
        let remaining = SlotRange::new(first, m.slots.last().get())
            .ok_or_else(|| StoreError::Unavailable("an empty copy range (a bug)".into()))?;
        let mut last_saved = Instant::now();
        for step in steps(strategy, remaining) {
            let mut after = i64::MIN;
            loop {
                let rows = src
                    .user_rows(strategy, step, after, self.options.batch)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.id;
                let n = rows.len();
                let users: Vec<UserRow> = rows
                    .into_iter()
                    .filter(|r| !pinned.contains(&r.id))
                    .collect();
                j.rows_copied += users.len() as u64;
                dst.apply(RowBatch {
                    users,
                    ..RowBatch::default()
                })
                .await?;
                if n < self.options.batch as usize {
                    break;
                }
            }
            for slot in step.first().get()..=step.last().get() {
                let mut after = String::new();
                loop {
                    let emails = src
                        .email_rows(i64::from(slot), after.clone(), self.options.batch)
                        .await?;
                    let Some(last) = emails.last() else { break };
                    after = last.email.clone();
                    let n = emails.len();
                    j.rows_copied += n as u64;
                    dst.apply(RowBatch {
                        emails,
                        ..RowBatch::default()
                    })
                    .await?;
                    if n < self.options.batch as usize {
                        break;
                    }
                }
            }
            j.moves[i].copied_to = Some(step.last().get());
            self.progress.advance(step.len() as u64);
            // The journal is synced to disk a few times a second, not per slot: a resumed copy
            // redoes at most that much (copies are upserts).
            if last_saved.elapsed() >= Duration::from_millis(500) {
                self.save(j)?;
                last_saved = Instant::now();
            }
        }
        self.save(j)
    }

    /// Applies the source's logged changes to the destinations of its uncut slots; how many
    /// changes it read.
    async fn catch_up(
        &self,
        j: &mut Journal,
        source: &ShardGroup,
        strategy: Strategy,
        pinned: &BTreeSet<i64>,
    ) -> Result<usize, StoreError> {
        let src = self.opener.rows(source)?;
        let mut seen = 0;
        loop {
            let at = j.capture.get(source.as_str()).copied().unwrap_or(0);
            let changes = src.changes_since(at, 2000).await?;
            let Some((last, _)) = changes.last() else {
                return Ok(seen);
            };
            let last = *last;
            seen += changes.len();
            // Keys of slots still moving from this source, by destination.
            let uncut: Vec<(SlotRange, ShardGroup)> = j
                .moves
                .iter()
                .filter(|m| m.from == *source)
                .filter_map(|m| m.uncut().map(|r| (r, m.to.clone())))
                .collect();
            let dest_of = |slot: u16| {
                uncut
                    .iter()
                    .find(|(r, _)| r.first().get() <= slot && slot <= r.last().get())
                    .map(|(_, g)| g.clone())
            };
            let mut users: BTreeMap<ShardGroup, BTreeSet<i64>> = BTreeMap::new();
            let mut emails: BTreeMap<ShardGroup, BTreeSet<String>> = BTreeMap::new();
            for (_, c) in changes {
                match c {
                    Changed::User(id) if !pinned.contains(&id) => {
                        let slot = strategy.slot_of(UserId(id as u64)).get();
                        if let Some(g) = dest_of(slot) {
                            users.entry(g).or_default().insert(id);
                        }
                    }
                    Changed::User(_) => {}
                    Changed::Email(e) => {
                        if let Some(g) = dest_of(slot_of_key(e.as_bytes()).get()) {
                            emails.entry(g).or_default().insert(e);
                        }
                    }
                }
            }
            let groups: BTreeSet<ShardGroup> = users.keys().chain(emails.keys()).cloned().collect();
            for g in groups {
                let ids: Vec<i64> = users.remove(&g).unwrap_or_default().into_iter().collect();
                let keys: Vec<String> = emails.remove(&g).unwrap_or_default().into_iter().collect();
                let found = src.user_rows_by_id(ids.clone()).await?;
                let found_emails = src.email_rows_by_key(keys.clone()).await?;
                let present: BTreeSet<i64> = found.iter().map(|r| r.id).collect();
                let present_emails: BTreeSet<&str> =
                    found_emails.iter().map(|r| r.email.as_str()).collect();
                let batch = RowBatch {
                    deleted_users: ids.into_iter().filter(|id| !present.contains(id)).collect(),
                    deleted_emails: keys
                        .into_iter()
                        .filter(|k| !present_emails.contains(k.as_str()))
                        .collect(),
                    users: found,
                    emails: found_emails,
                };
                j.rows_copied += (batch.users.len() + batch.emails.len()) as u64;
                self.opener.rows(&g)?.apply(batch).await?;
            }
            j.capture.insert(source.to_string(), last);
            self.save(j)?;
        }
    }

    async fn cut_over(
        &self,
        j: &mut Journal,
        i: usize,
        chunk: SlotRange,
        map: &mut ShardMap,
        pinned: &BTreeSet<i64>,
    ) -> Result<(), StoreError> {
        let m = j.moves[i].clone();
        let (src, dst) = (self.opener.rows(&m.from)?, self.opener.rows(&m.to)?);
        let next = map
            .move_slots(chunk, &m.to)
            .map_err(|e| StoreError::Unusable(e.to_string()))?
            .map;
        j.pending = Some(PendingCut {
            move_index: i,
            slots: chunk,
            map_version: next.version(),
        });
        self.save(j)?;
        let fence = Fence {
            slots: chunk,
            strategy: map.strategy(),
            user: None,
            except: map.pins().keys().copied().collect(),
            moved_to: m.to.clone(),
            map_version: next.version(),
        };
        // The pause starts when the fence commits.
        src.fence(fence).await?;
        let paused = Instant::now();
        let ms = |since: Instant| since.elapsed().as_secs_f64() * 1000.0;
        let mut parts = [0.0; 3];
        let result = async {
            self.catch_up(j, &m.from, map.strategy(), pinned).await?;
            parts[0] = ms(paused);
            let verifying = Instant::now();
            let (a, b) = (
                checksum(src.as_ref(), map.strategy(), chunk, pinned).await?,
                checksum(dst.as_ref(), map.strategy(), chunk, pinned).await?,
            );
            if a != b {
                return Err(StoreError::Unavailable(format!(
                    "verification of slots {chunk} failed: {} has {} users and {} emails, {} has {} users and {} emails (checksums {:x} and {:x}); nothing was switched",
                    m.from, a.users, a.emails, m.to, b.users, b.emails, a.sum, b.sum
                )));
            }
            j.verified.push((chunk, a.users, a.emails));
            parts[1] = ms(verifying);
            let publishing = Instant::now();
            dst.unfence_slots(chunk).await?;
            self.publisher.publish(map.version(), &next).await?;
            parts[2] = ms(publishing);
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                let pause = ms(paused);
                j.pause_parts_ms.push(parts);
                *map = next;
                self.finish_cut(j, i, chunk, Some(pause))
            }
            Err(e) => {
                // Lift the pause: the old map still holds, and A still owns the rows.
                let _ = src
                    .unfence(
                        m.to.as_str(),
                        j.pending.as_ref().map_or(0, |p| p.map_version),
                    )
                    .await;
                j.pending = None;
                let _ = self.save(j);
                Err(e)
            }
        }
    }

    fn finish_cut(
        &self,
        j: &mut Journal,
        i: usize,
        chunk: SlotRange,
        pause_ms: Option<f64>,
    ) -> Result<(), StoreError> {
        j.moves[i].cut_to = Some(chunk.last().get());
        j.pending = None;
        j.cut_any = true;
        if let Some(p) = pause_ms {
            j.pauses_ms.push(p);
        }
        self.save(j)
    }

    async fn pin(
        &self,
        j: &mut Journal,
        pin: &PinState,
        map: &mut ShardMap,
    ) -> Result<(), StoreError> {
        let (src, dst) = (self.opener.rows(&pin.from)?, self.opener.rows(&pin.to)?);
        let published = if pin.unpin {
            !map.pins().contains_key(&pin.user)
        } else {
            map.pins().get(&pin.user) == Some(&pin.to)
        };
        if published {
            return Ok(()); // published before a stop
        }
        let next = if pin.unpin {
            map.unpin(pin.user)
        } else {
            map.pin(pin.user, pin.to.clone())
        }
        .map_err(|e| StoreError::Unusable(e.to_string()))?;
        let slot = map.slot_of(pin.user);
        let range = SlotRange::new(slot.get(), slot.get())
            .ok_or_else(|| StoreError::Unavailable("no slot (a bug)".into()))?;
        src.fence(Fence {
            slots: range,
            strategy: map.strategy(),
            user: Some(pin.user),
            except: Vec::new(),
            moved_to: pin.to.clone(),
            map_version: next.version(),
        })
        .await?;
        let paused = Instant::now();
        let id = pin.user.0 as i64;
        let result = async {
            let rows = src.user_rows_by_id(vec![id]).await?;
            dst.unfence_slots(range).await?;
            if pin.unpin {
                dst.unfence_user(pin.user).await?;
            }
            dst.apply(RowBatch {
                deleted_users: if rows.is_empty() {
                    vec![id]
                } else {
                    Vec::new()
                },
                users: rows.clone(),
                ..RowBatch::default()
            })
            .await?;
            let copied = dst.user_rows_by_id(vec![id]).await?;
            if copied != rows {
                return Err(StoreError::Unavailable(format!(
                    "verification of user {} failed: the copy in {} differs; nothing was switched",
                    pin.user, pin.to
                )));
            }
            j.rows_copied += rows.len() as u64;
            self.publisher.publish(map.version(), &next).await
        }
        .await;
        match result {
            Ok(()) => {
                j.pauses_ms.push(paused.elapsed().as_secs_f64() * 1000.0);
                *map = next;
                tokio::time::sleep(self.options.cleanup_grace).await;
                src.apply(RowBatch {
                    deleted_users: vec![id],
                    ..RowBatch::default()
                })
                .await
            }
            Err(e) => {
                let _ = src.unfence(pin.to.as_str(), next.version()).await;
                Err(e)
            }
        }
    }

    /// Rolls back the resharding in progress, if no cut-over has been published: lifts
    /// fences, deletes the copies, ends the captures, drops the groups it added.
    pub async fn abort(&self) -> Result<String, StoreError> {
        let Some(j) = journal::read(&self.journal_path)? else {
            return Err(StoreError::Unusable(
                "no resharding is in progress: nothing to abort".into(),
            ));
        };
        if j.cut_any {
            return Err(StoreError::Unusable(format!(
                "the resharding {} ({}) has cut over slots already and cannot be rolled back: finish it with `strata reshard --resume` (then reshard back if you must)",
                j.id, j.what
            )));
        }
        let map = self.publisher.current().await?;
        let pinned: BTreeSet<i64> = map.pins().keys().map(|u| u.0 as i64).collect();
        for m in &j.moves {
            let src = self.opener.rows(&m.from)?;
            if let Some(p) = &j.pending {
                src.unfence(m.to.as_str(), p.map_version).await?;
            }
            let dst = self.opener.rows(&m.to)?;
            delete_slot_rows(
                dst.as_ref(),
                map.strategy(),
                m.slots,
                &pinned,
                self.options.batch,
            )
            .await?;
            src.stop_capture(&j.id).await?;
        }
        let added: Vec<&ShardGroup> = j
            .new_groups
            .iter()
            .filter(|g| map.groups().contains(g))
            .collect();
        if !added.is_empty() {
            let keep = map.groups().len() - added.len();
            let next = map
                .drop_groups_from(keep)
                .map_err(|e| StoreError::Unusable(e.to_string()))?;
            self.publisher.publish(map.version(), &next).await?;
        }
        journal::remove(&self.journal_path)?;
        Ok(format!(
            "rolled back the resharding {} ({}): nothing moved",
            j.id, j.what
        ))
    }
}
