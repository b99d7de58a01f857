//! Which offsets of a partition are new: everything at or past the next expected offset.
//!
//! After recovery the cursor starts at the commit log's resume offset; each admitted message
//! moves it past itself. Messages below it — already durable, a broker's duplicate delivery, or
//! stale prefetch from before a seek — are skipped. Offsets may have gaps (compaction,
//! transaction markers); a gap is not a loss, since the broker never delivers those offsets.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    next: Option<i64>,
}

impl Cursor {
    /// A cursor at `resume` (`None`: no durable offset yet, admit whatever comes first).
    pub fn at(resume: Option<i64>) -> Self {
        Self { next: resume }
    }

    /// Whether the message at `offset` is new; if so the cursor moves past it.
    pub fn admit(&mut self, offset: i64) -> bool {
        if self.next.is_some_and(|next| offset < next) {
            return false;
        }
        self.next = Some(offset + 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_from_offset_zero_skips_duplicates_and_allows_gaps() {
        let mut c = Cursor::at(None);
        assert!(c.admit(0));
        assert!(!c.admit(0), "a duplicate delivery");
        assert!(c.admit(1));
        assert!(c.admit(5), "a gap");
        assert!(!c.admit(3), "behind the cursor");
        assert!(c.admit(6));
    }

    #[test]
    fn starts_at_the_resume_offset() {
        let mut c = Cursor::at(Some(100));
        assert!(!c.admit(42), "durable already");
        assert!(!c.admit(99));
        assert!(c.admit(100));
        assert!(!c.admit(100));
    }
}
