//! Which offsets of a partition are new: everything at or past the next expected offset — once
//! the consumer is known to deliver from where the commit log says the lake ends.
//!
//! After recovery the cursor starts at the commit log's resume offset; each admitted message
//! moves it past itself. Messages below it — already durable, a broker's duplicate delivery, or
//! stale prefetch — are skipped. Offsets may have gaps (compaction, transaction markers); a gap
//! is not a loss, since the broker never delivers those offsets.
//!
//! A gap right after a recovery is different: the message that made this member recover the
//! partition may come from where the consumer stood before (an earlier assignment's prefetch,
//! or a committed offset ahead of the log), and so may the next few. Admitting one of those past
//! the resume offset would move the cursor over the messages the seek brings back — they would
//! be skipped as behind it, and lost (seen with four members joining at once). So a recovered
//! cursor that has to seek is *seeking*: it admits the resume offset itself, skips what is
//! below, and answers anything past it with another seek. A message past the resume offset is
//! taken as a real gap only when it is the first one delivered after two seeks in a row — stale
//! prefetch never comes twice, while a broker with nothing at the resume offset delivers its
//! next offset after every seek.

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    next: Option<i64>,
    seeking: Option<Seeking>,
}

/// A seek is issued and the consumer is not yet known to deliver from the resume offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seeking {
    /// The first message past the resume offset delivered since the previous seek.
    first_past: Option<i64>,
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// New: buffer it (the cursor moved past it).
    Admit,
    /// Already admitted, durable, a duplicate or stale.
    Skip,
    /// Seek the partition to this offset (`None`: its beginning); the message is not buffered.
    Seek(Option<i64>),
}

impl Cursor {
    /// A cursor that admits from `resume`, the log's resume offset (`None`: nothing landed yet,
    /// so the partition's beginning), for the message at `offset` that made this member recover
    /// the partition — which it admits when it is exactly there, or else answers with a seek.
    pub fn recovered(resume: Option<i64>, offset: i64) -> (Self, Step) {
        let mut cursor = Self { next: resume, seeking: Some(Seeking::default()) };
        let step = if offset == cursor.start() { cursor.step(offset) } else { Step::Seek(resume) };
        (cursor, step)
    }

    /// A cursor at `resume` that trusts the consumer's position (no seek).
    #[cfg(test)]
    pub fn at(resume: Option<i64>) -> Self {
        Self { next: resume, seeking: None }
    }

    /// The offset a seeking cursor waits for: the resume offset, or 0 for an empty log.
    fn start(&self) -> i64 {
        self.next.unwrap_or(0)
    }

    /// Whether the message at `offset` is new; if so the cursor moves past it.
    pub fn step(&mut self, offset: i64) -> Step {
        if self.next.is_some_and(|next| offset < next) {
            return Step::Skip;
        }
        let start = self.start();
        if let Some(seeking) = &mut self.seeking {
            let confirmed = offset == start || seeking.first_past == Some(offset);
            if !confirmed {
                seeking.first_past = Some(offset);
                return Step::Seek(self.next);
            }
            self.seeking = None;
        }
        self.next = Some(offset + 1);
        Step::Admit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_from_offset_zero_skips_duplicates_and_allows_gaps() {
        let mut c = Cursor::at(None);
        assert_eq!(c.step(0), Step::Admit);
        assert_eq!(c.step(0), Step::Skip, "a duplicate delivery");
        assert_eq!(c.step(1), Step::Admit);
        assert_eq!(c.step(5), Step::Admit, "a gap");
        assert_eq!(c.step(3), Step::Skip, "behind the cursor");
        assert_eq!(c.step(6), Step::Admit);
    }

    #[test]
    fn a_recovery_at_the_resume_offset_admits_it_without_a_seek() {
        let (mut c, step) = Cursor::recovered(Some(100), 100);
        assert_eq!(step, Step::Admit);
        assert_eq!(c.step(42), Step::Skip, "durable already");
        assert_eq!(c.step(100), Step::Skip);
        assert_eq!(c.step(101), Step::Admit);
        assert_eq!(c.step(103), Step::Admit, "a gap once delivering from the resume offset");
    }

    #[test]
    fn stale_prefetch_past_the_resume_offset_never_moves_the_cursor() {
        // The consumer stood at 138_097; the log resumes at 136_419.
        let (mut c, step) = Cursor::recovered(Some(136_419), 138_097);
        assert_eq!(step, Step::Seek(Some(136_419)));
        assert_eq!(c.step(138_098), Step::Seek(Some(136_419)), "stale: seek again");
        assert_eq!(c.step(138_099), Step::Seek(Some(136_419)), "stale again, a different offset");
        assert_eq!(c.step(136_000), Step::Skip, "below the resume offset");
        assert_eq!(c.step(136_419), Step::Admit, "the seek took effect");
        assert_eq!(c.step(136_420), Step::Admit);
        assert_eq!(c.step(136_422), Step::Admit, "gaps are allowed again");
    }

    #[test]
    fn a_real_gap_at_the_resume_offset_is_admitted_after_two_seeks() {
        // Nothing at 50 (a transaction marker): the broker delivers 51 after every seek.
        let (mut c, step) = Cursor::recovered(Some(50), 80);
        assert_eq!(step, Step::Seek(Some(50)));
        assert_eq!(c.step(51), Step::Seek(Some(50)), "first seen once: could be stale");
        assert_eq!(c.step(51), Step::Admit, "the first after two seeks in a row");
        assert_eq!(c.step(52), Step::Admit);
        assert_eq!(c.step(80), Step::Admit);
    }

    #[test]
    fn an_empty_log_seeks_to_the_beginning_unless_at_offset_zero() {
        let (mut c, step) = Cursor::recovered(None, 0);
        assert_eq!(step, Step::Admit);
        assert_eq!(c.step(1), Step::Admit);

        // A prefetched message of an earlier assignment; the topic's retention starts at 7.
        let (mut c, step) = Cursor::recovered(None, 900);
        assert_eq!(step, Step::Seek(None));
        assert_eq!(c.step(7), Step::Seek(None));
        assert_eq!(c.step(7), Step::Admit, "the beginning, delivered after two seeks");
        assert_eq!(c.step(8), Step::Admit);

        let (mut c, _) = Cursor::recovered(None, 900);
        assert_eq!(c.step(0), Step::Admit, "offset 0 is the beginning");
    }
}
