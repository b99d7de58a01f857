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
    r.object(|r| {
        // Producers write the fields in one order, so the first field not yet seen is tried first.
        let index = r.field(seen.trailing_ones() as usize)?;
        // serde refuses a repeated field; let it say so.
        if seen & (1 << index) != 0 {
            return None;
        }
        seen |= 1 << index;
        r.expect(b':')?;
        (FIELDS[index].1)(r, &mut event)
    })?;
    r.skip_whitespace();
    (r.pos == r.bytes.len()).then_some(event)
}

/// Reads one field's value into the event, or `None`: not the plain shape.
type ReadField = for<'a> fn(&mut Reader<'a>, &mut WireEvent<'a>) -> Option<()>;

/// Every field of an event with how its value is read, in the order producers write them (which
/// the reader tries first). A field's name and its reader sit on one line; the names are checked
/// against the `results` columns in `tests.rs`.
const FIELDS: [(&str, ReadField); 19] = [
    ("schema_version", |r, e| r.integer().map(|v| e.schema_version = v)),
    ("event_id", |r, e| r.text().map(|v| e.event_id = v)),
    ("repository", |r, e| r.text().map(|v| e.repository = v)),
    ("branch", |r, e| r.text().map(|v| e.branch = v)),
    ("commit_sha", |r, e| r.text().map(|v| e.commit_sha = v)),
    ("run_id", |r, e| r.text().map(|v| e.run_id = v)),
    ("job_id", |r, e| r.text().map(|v| e.job_id = v)),
    ("suite", |r, e| r.text().map(|v| e.suite = v)),
    ("test_id", |r, e| r.text().map(|v| e.test_id = v)),
    ("name", |r, e| r.text().map(|v| e.name = v)),
    ("status", |r, e| r.text().map(|v| e.status = v)),
    ("attempt", |r, e| r.integer().map(|v| e.attempt = v)),
    ("duration_ms", |r, e| r.decimal().map(|v| e.duration_ms = v)),
    ("started_at", |r, e| r.text().map(|v| e.started_at = v)),
    ("finished_at", |r, e| r.text().map(|v| e.finished_at = v)),
    ("ci_provider", |r, e| r.text().map(|v| e.ci_provider = v)),
    ("host", |r, e| r.text().map(|v| e.host = v)),
    ("failure_message", |r, e| r.text().map(|v| e.failure_message = v)),
    ("tags", |r, e| r.tags().map(|v| e.tags = v)),
];

/// The field names the reader knows, for the tests.
#[cfg(test)]
pub(super) fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(name, _)| *name)
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
        self.object(|r| {
            let key = r.string()?;
            r.expect(b':')?;
            let value = r.string()?;
            // serde keeps the last of a repeated key; rare enough to leave to it.
            tags.insert(Cow::Borrowed(key), Cow::Borrowed(value)).is_none().then_some(())
        })?;
        Some(Some(tags))
    }

    /// The index in [`FIELDS`] of the key at the reader, or `None` for an unknown key. `expected`
    /// is compared first, in place, without searching for the closing quote.
    fn field(&mut self, expected: usize) -> Option<usize> {
        self.skip_whitespace();
        if let Some(name) = FIELDS.get(expected).map(|(name, _)| name.as_bytes()) {
            let rest = &self.bytes[self.pos..];
            if rest.len() > name.len() + 1
                && rest[0] == b'"'
                && &rest[1..=name.len()] == name
                && rest[name.len() + 1] == b'"'
            {
                self.pos += name.len() + 2;
                return Some(expected);
            }
        }
        let key = self.string()?;
        FIELDS.iter().position(|&(field, _)| field == key)
    }

    /// An object: `member` reads each member, key, colon and value.
    fn object(&mut self, mut member: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            member(self)?;
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
/// `tests.rs` checks it against chrono. The fixed places are checked without early exits, so the
/// check compiles to straight-line code: two timestamps were ~1,100 of a decode's ~8,700
/// instructions (callgrind) with a loop that stopped at the first non-digit.
pub(super) fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let head: &[u8; 20] = b.get(..20)?.try_into().ok()?;
    let digit = |i: usize| u32::from(head[i].wrapping_sub(b'0'));
    // No early exit, so the check unrolls into straight-line code.
    let places = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let not_digits = places.iter().fold(false, |bad, &i| bad | (digit(i) > 9));
    let separators = head[4] == b'-' && head[7] == b'-' && head[10] == b'T' && head[13] == b':' && head[16] == b':';
    if !separators || not_digits {
        return None;
    }
    let two = |i: usize| digit(i) * 10 + digit(i + 1);
    let year = two(0) * 100 + two(2);
    let mut at = 19;
    let mut nanos = 0;
    if head[19] == b'.' {
        let digits = b[20..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = number(&b[20..20 + digits])? * 10u32.pow(9 - digits as u32);
        at = 20 + digits;
    }
    // `and_hms_nano_opt` refuses hour 24, minute 60 and second 60 (a leap second: chrono's).
    let local =
        NaiveDate::from_ymd_opt(year as i32, two(5), two(8))?.and_hms_nano_opt(two(11), two(14), two(17), nanos)?;
    let utc = match &b[at..] {
        b"Z" => local,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (number(&[*h1, *h2])?, number(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = (hours * 3600 + minutes * 60) as i32;
            local.checked_sub_offset(FixedOffset::east_opt(if *sign == b'-' { -seconds } else { seconds })?)?
        }
        _ => return None,
    };
    Some(utc.and_utc())
}

/// The value of a run of ASCII digits, or `None` if any byte is not one.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
}
