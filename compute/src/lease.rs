//! Leases through the object store's create-only puts, so that several compute processes never
//! recompute the same partition at once.
//!
//! A lease on `key` is a sequence of generations, `_leases/compute/<key>/<generation:010>.json`,
//! each holding its owner and expiry. The newest generation decides: held while it is neither
//! released nor expired. To take a free lease a process creates the next generation with a
//! create-only put; of two processes racing, exactly one creation succeeds (the other gets
//! "already exists" and skips the work). Releasing rewrites one's own generation as released.
//!
//! A holder slower than the TTL (a pause, clock skew) may find its lease taken over while it
//! still works. Its write is fenced: the generation goes into the file it writes, and a file
//! written under a later generation is never replaced (`crate::schedule::fence`). The TTL
//! (default 5 minutes) is far above any single recompute seen here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use testlake_schemas::Lake;
use testlake_schemas::files::{Created, put_create, put_overwrite};
use testlake_schemas::paths::LeasePath;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    owner: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    released: bool,
}

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub generation: u64,
}

#[derive(Debug, Clone)]
pub struct Leases {
    lake: Lake,
    owner: String,
    ttl: Duration,
}

fn path(key: &str, generation: u64) -> String {
    LeasePath { key: key.to_owned(), generation }.to_string()
}

impl Leases {
    /// Leases held as `owner` (unique per process) for at most `ttl`.
    pub fn new(lake: Lake, owner: impl Into<String>, ttl: Duration) -> Self {
        Self { lake, owner: owner.into(), ttl }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes the lease on `key` if nobody else holds it; `None` when someone does.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<Lease>> {
        self.try_acquire_from(key, 0).await
    }

    /// As [`Self::try_acquire`], with a generation of at least `floor`: the generation a computed
    /// file was last written under, so that generations keep growing past it even if `_leases/`
    /// was emptied (a file's fence, `crate::schedule::fence`, would otherwise refuse every
    /// later holder). While the lease's history is there its newest generation is at least the
    /// floor already, and every contender creates the same next generation.
    pub async fn try_acquire_from(&self, key: &str, floor: u64) -> Result<Option<Lease>> {
        let prefix = self.lake.path(&LeasePath::dir(key));
        let listed: Vec<_> =
            self.lake.store().list(Some(&prefix)).try_collect().await.map_err(|e| Error::Store(Box::new(e)))?;
        let newest = listed
            .iter()
            .filter_map(|o| self.lake.relative(&o.location)?.parse::<LeasePath>().ok())
            .filter(|lease| lease.key == key)
            .map(|lease| lease.generation)
            .max();
        if let Some(generation) = newest {
            let record: Record =
                match testlake_schemas::log_reader::read_entry(&self.lake, &path(key, generation)).await {
                    Ok(record) => record,
                    // Superseded and cleaned up since the listing: someone else moved on.
                    Err(testlake_schemas::log_reader::LogReadError::Store { source, .. })
                        if matches!(*source, object_store::Error::NotFound { .. }) =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                };
            let now = Utc::now();
            if !record.released && record.expires_at > now && record.owner != self.owner {
                return Ok(None);
            }
        }
        let generation = newest.map_or(0, |g| g + 1).max(floor);
        let now = Utc::now();
        let record = Record {
            owner: self.owner.clone(),
            acquired_at: now,
            expires_at: now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::minutes(5)),
            released: false,
        };
        let bytes = serde_json::to_vec(&record).expect("a lease serializes");
        match put_create(&self.lake, &path(key, generation), bytes.into()).await? {
            Created::Written => {
                // Older generations are history: drop them (best effort).
                for object in listed {
                    let _ = self.lake.store().delete(&object.location).await;
                }
                Ok(Some(Lease { key: key.to_owned(), generation }))
            }
            Created::AlreadyExisted => Ok(None),
        }
    }

    /// Gives the lease back, so others need not wait for it to expire.
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        let now = Utc::now();
        let record = Record { owner: self.owner.clone(), acquired_at: now, expires_at: now, released: true };
        let bytes = serde_json::to_vec(&record).expect("a lease serializes");
        put_overwrite(&self.lake, &path(&lease.key, lease.generation), bytes.into()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_until_released_or_expired() {
        let lake = Lake::in_memory();
        let a = Leases::new(lake.clone(), "a", Duration::from_secs(60));
        let b = Leases::new(lake.clone(), "b", Duration::from_secs(60));
        let held = a.try_acquire("trends/2026-11-27").await.unwrap().expect("free");
        assert_eq!(b.try_acquire("trends/2026-11-27").await.unwrap(), None, "held by a");
        assert!(b.try_acquire("trends/2026-11-28").await.unwrap().is_some(), "another key is free");
        a.release(&held).await.unwrap();
        let taken = b.try_acquire("trends/2026-11-27").await.unwrap().expect("released");
        assert_eq!(taken.generation, held.generation + 1);

        let short = Leases::new(lake.clone(), "c", Duration::from_millis(1));
        let c = short.try_acquire("flaky").await.unwrap().expect("free");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(a.try_acquire("flaky").await.unwrap().is_some(), "expired after its TTL");
        assert_eq!(c.generation, 0);
    }

    /// With `_leases/` emptied, generations still grow past the floor (a computed file's).
    #[tokio::test]
    async fn generations_start_from_the_floor_and_grow_from_the_newest() {
        let lake = Lake::in_memory();
        let a = Leases::new(lake.clone(), "a", Duration::from_secs(60));
        let held = a.try_acquire_from("trends/x", 7).await.unwrap().expect("free");
        assert_eq!(held.generation, 7);
        a.release(&held).await.unwrap();
        assert_eq!(a.try_acquire_from("trends/x", 3).await.unwrap().map(|l| l.generation), Some(8));
    }

    #[tokio::test]
    async fn of_two_racing_for_a_free_lease_exactly_one_wins() {
        let lake = Lake::in_memory();
        for round in 0..20 {
            let key = format!("k{round}");
            let contenders: Vec<_> =
                (0..4).map(|i| Leases::new(lake.clone(), format!("p{i}"), Duration::from_secs(60))).collect();
            let attempts = futures::future::join_all(contenders.iter().map(|l| l.try_acquire(&key))).await;
            let winners = attempts.into_iter().filter(|r| matches!(r, Ok(Some(_)))).count();
            assert_eq!(winners, 1, "round {round}");
        }
    }
}
