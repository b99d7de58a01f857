//! A reader specialised for the plain shape of an event message: one flat JSON object of known
//! fields whose strings have no escapes, plus `tags`, a flat object of strings.
//!
//! [`scan`] answers `None` as soon as a message strays from that shape — an escape, an unknown or
//! repeated field, an exponent, a negative or long number, anything else — and the caller then
//! parses the message with serde_json, which decides. So this reader never accepts what serde_json
//! would refuse and never reads a value differently: it only has to be right about the messages it
//! accepts, and the differential test in `tests.rs` checks that against serde_json on thousands of
//! mutated messages. It exists because serde's generic visiting was ~70 % of the ingest's decode
//! cost (`benches/benches/decode_to_parquet.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

use super::WireEvent;

/// Reads `text` as a plain event, or `None`: parse it with serde_json instead.
pub(super) fn scan(text: &str) -> Option<WireEvent<'_>> {
    let bytes = text.as_bytes();
    // A compact message has no escape and no control byte anywhere; one vectorised pass says so,
    // and then its strings need not be checked one by one.
    let plain = !bytes.iter().fold(false, |odd, &b| odd | (b == b'\\') | (b < 0x20));
    let mut r = Reader { text, bytes, pos: 0, plain };
    let mut event = WireEvent::default();
    let mut seen = 0u32;
    r.object(|r, key| {
        let (index, slot) = match key {
            "schema_version" => (0, Slot::Integer(&mut event.schema_version)),
            "event_id" => (1, Slot::Text(&mut event.event_id)),
            "repository" => (2, Slot::Text(&mut event.repository)),
            "branch" => (3, Slot::Text(&mut event.branch)),
            "commit_sha" => (4, Slot::Text(&mut event.commit_sha)),
            "run_id" => (5, Slot::Text(&mut event.run_id)),
            "job_id" => (6, Slot::Text(&mut event.job_id)),
            "suite" => (7, Slot::Text(&mut event.suite)),
            "test_id" => (8, Slot::Text(&mut event.test_id)),
            "name" => (9, Slot::Text(&mut event.name)),
            "status" => (10, Slot::Text(&mut event.status)),
            "attempt" => (11, Slot::Integer(&mut event.attempt)),
            "duration_ms" => (12, Slot::Decimal(&mut event.duration_ms)),
            "started_at" => (13, Slot::Text(&mut event.started_at)),
            "finished_at" => (14, Slot::Text(&mut event.finished_at)),
            "ci_provider" => (15, Slot::Text(&mut event.ci_provider)),
            "host" => (16, Slot::Text(&mut event.host)),
            "failure_message" => (17, Slot::Text(&mut event.failure_message)),
            "tags" => (18, Slot::Tags(&mut event.tags)),
            _ => return None,
        };
        // serde refuses a repeated field; let it say so.
        if seen & (1 << index) != 0 {
            return None;
        }
        seen |= 1 << index;
        match slot {
            Slot::Integer(value) => *value = r.integer()?,
            Slot::Text(value) => *value = r.text()?,
            Slot::Decimal(value) => *value = r.decimal()?,
            Slot::Tags(value) => *value = r.tags()?,
        }
        Some(())
    })?;
    r.skip_whitespace();
    (r.pos == r.bytes.len()).then_some(event)
}

/// Where the value of a known field goes, by its type.
enum Slot<'e, 'a> {
    Integer(&'e mut Option<u64>),
    Decimal(&'e mut Option<f64>),
    Text(&'e mut Option<Cow<'a, str>>),
    Tags(&'e mut Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>),
}

/// Powers of ten that are exact in an `f64`.
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The whole message has no backslash and no byte below 0x20.
    plain: bool,
}

impl<'a> Reader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// `null`, consumed, or `false` with nothing consumed.
    fn null(&mut self) -> bool {
        let found = self.peek() == Some(b'n') && self.bytes[self.pos..].starts_with(b"null");
        if found {
            self.pos += 4;
        }
        found
    }

    /// A string without escapes or control characters. It is valid UTF-8: the message is, and it
    /// is cut at ASCII quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.pos;
        let end = start + memchr::memchr(b'"', &self.bytes[start..])?;
        // An escaped quote ends the search early, but then the escape before it is found here.
        let plain = self.plain || self.bytes[start..end].iter().all(|&b| b != b'\\' && b >= 0x20);
        self.pos = end + 1;
        plain.then(|| &self.text[start..end])
    }

    fn text(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() {
            return Some(None);
        }
        self.string().map(|s| Some(Cow::Borrowed(s)))
    }

    /// Digits as JSON writes an integer (`0` or no leading zero), at most 15 of them, so the value
    /// is exact in both a `u64` and an `f64`; and how many there were.
    fn digits(&mut self) -> Option<(u64, usize)> {
        self.skip_whitespace();
        let start = self.pos;
        let mut value = 0u64;
        while let Some(&b) = self.bytes.get(self.pos).filter(|b| b.is_ascii_digit()) {
            value = value * 10 + u64::from(b - b'0');
            self.pos += 1;
            if self.pos - start > 15 {
                return None;
            }
        }
        let count = self.pos - start;
        let leading_zero = count > 1 && self.bytes[start] == b'0';
        (count > 0 && !leading_zero).then_some((value, count))
    }

    /// A non-negative integer without fraction or exponent.
    fn integer(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        let (value, _) = self.digits()?;
        match self.bytes.get(self.pos) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(Some(value)),
        }
    }

    /// A non-negative number without exponent and with at most 15 digits in all. Its value is the
    /// digits as an integer divided by a power of ten, both exact in an `f64`, so the one rounding
    /// is the division's: the correctly rounded value, as serde_json reads it.
    fn decimal(&mut self) -> Option<Option<f64>> {
        if self.null() {
            return Some(None);
        }
        let (whole, whole_digits) = self.digits()?;
        let (mut value, mut scale) = (whole, 0);
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            while let Some(&b) = self.bytes.get(self.pos).filter(|b| b.is_ascii_digit()) {
                value = value * 10 + u64::from(b - b'0');
                scale += 1;
                self.pos += 1;
                if whole_digits + scale > 15 {
                    return None;
                }
            }
            if scale == 0 {
                return None;
            }
        }
        match self.bytes.get(self.pos) {
            Some(b'e' | b'E') => None,
            _ => Some(Some(value as f64 / POW10[scale])),
        }
    }

    /// A flat object of strings, each key once.
    fn tags(&mut self) -> Option<Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>> {
        if self.null() {
            return Some(None);
        }
        let mut tags = BTreeMap::new();
        self.object(|r, key| {
            let value = r.string()?;
            // serde keeps the last of a repeated key; rare enough to leave to it.
            tags.insert(Cow::Borrowed(key), Cow::Borrowed(value)).is_none().then_some(())
        })?;
        Some(Some(tags))
    }

    /// An object: `member` reads the value of each key, after its colon.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Reads a timestamp written the plain way, `YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or
/// `±HH:MM`, or `None`: chrono's RFC 3339 parser then decides (lowercase or space separators,
/// leap seconds, more than nine fraction digits, anything odd). The differential test in
/// `tests.rs` checks it against chrono.
pub(super) fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|&(i, c)| b.get(i) == Some(&c)) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let mut at = 19;
    let mut nanos = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = number(at + 1..at + 1 + digits)? * 10u32.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset_seconds = match b.get(at..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(at + 1..at + 3)?, number(at + 4..at + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = (hours * 3600 + minutes * 60) as i32;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    // `and_hms_nano_opt` refuses hour 24, minute 60 and second 60 (a leap second: chrono's).
    let local = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    let utc = local.checked_sub_offset(FixedOffset::east_opt(offset_seconds)?)?;
    Some(utc.and_utc())
}
