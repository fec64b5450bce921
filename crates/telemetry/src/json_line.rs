//! The JSON log line (`LOG_FORMAT=json`): the shape of tracing-subscriber's JSON formatter with
//! `flatten_event(true)` and no target — `{"timestamp":…,"level":…,<fields in order>}` — built in
//! a per-thread line buffer with direct writes and handed to the log writer in one piece.
//!
//! Written by hand because tracing-subscriber's formatter builds every line through serde: a
//! `String` for the timestamp, another for each `%`/`?` field it formats before escaping it, and
//! a serializer per line; on the gateway that was ~2.4 µs of every request's access-log line
//! (docs/performance.md). Here the timestamp's date and time are formatted once a second per
//! thread, and fields are escaped as they are formatted. The output is compared with
//! tracing-subscriber's own, field for field, in the tests below. Log lines are never inside a
//! span (request spans are for OpenTelemetry only), so no `span`/`spans` keys are written.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter; see the module doc.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                let written = write_line(&mut *line, event).and_then(|()| writer.write_str(&line));
                if line.capacity() > LINE_KEPT {
                    *line = String::new();
                }
                written
            }
            // The buffer in use: an event formatted while this thread formats another. tracing
            // does not dispatch an event logged from inside another's formatting, so this is a
            // guard against a panic, not a path taken.
            Err(_) => write_line(&mut writer, event),
        })
    }
}

thread_local! {
    /// The line being formatted on this thread. Built here with direct `String` writes and
    /// handed to the writer whole: each of a line's ~40 pieces written through the `Writer`
    /// was a dynamic call (docs/performance.md).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line buffer grown past this (one huge line) is not kept for the next.
const LINE_KEPT: usize = 16 * 1024;

/// `{"timestamp":…,"level":…,<fields>}` and the newline.
fn write_line(out: &mut impl Write, event: &Event<'_>) -> fmt::Result {
    // Records bridged from the `log` crate have their level in their metadata too; their
    // `log.*` fields (target, module, file) are left out, as tracing-subscriber leaves them.
    let meta = event.metadata();
    out.write_str("{\"timestamp\":\"")?;
    write_timestamp(out, SystemTime::now())?;
    out.write_str("\",\"level\":\"")?;
    out.write_str(meta.level().as_str())?;
    out.write_char('"')?;
    let mut fields = Fields {
        out,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    out.write_str("}\n")
}

/// Writes each field as `,"name":value`.
struct Fields<'a, W: Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: Write> Fields<'_, W> {
    /// The field's key, or `None` for the ones the line leaves out.
    fn key(&mut self, field: &Field) -> Option<()> {
        let name = field.name();
        if name.starts_with("log.") || self.result.is_err() {
            return None;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        // A name is nearly always a plain identifier, written as it is; only others are escaped.
        self.result = (|| {
            self.out.write_str(",\"")?;
            if is_clean(name) {
                self.out.write_str(name)?;
            } else {
                escape(self.out, name)?;
            }
            self.out.write_str("\":")
        })();
        self.result.is_ok().then_some(())
    }

    /// A number's text, as serde_json writes it.
    fn raw(&mut self, field: &Field, value: &str) {
        if self.key(field).is_some() {
            self.result = self.out.write_str(value);
        }
    }
}

/// Whether `s` needs no escape at all in a JSON string.
fn is_clean(s: &str) -> bool {
    !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field).is_some() {
            self.result = (|| {
                self.out.write_char('"')?;
                write!(Escaped(self.out), "{value:?}")?;
                self.out.write_char('"')
            })();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field).is_some() {
            self.result = (|| {
                self.out.write_char('"')?;
                escape(self.out, value)?;
                self.out.write_char('"')
            })();
        }
    }

    // Numbers by the crates serde_json formats them with (itoa, zmij), not through `core::fmt`.
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's own rendering (shortest round-trip digits); JSON has no NaN or infinity.
        if value.is_finite() {
            self.raw(field, zmij::Buffer::new().format_finite(value));
        } else {
            self.raw(field, "null");
        }
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if self.key(field).is_some() {
            self.result = (|| {
                self.out.write_char('[')?;
                for (i, b) in value.iter().enumerate() {
                    if i > 0 {
                        self.out.write_char(',')?;
                    }
                    write!(self.out, "{b}")?;
                }
                self.out.write_char(']')
            })();
        }
    }
}

/// A `fmt::Write` that escapes what is written to it for a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s)
    }
}

/// `s` as the inside of a JSON string, escaped as serde_json escapes it. Runs of bytes that need
/// no escape are found eight at a time ([`clean_run`]) and written whole.
fn escape(out: &mut impl Write, s: &str) -> fmt::Result {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        i += clean_run(&bytes[i..]);
        let Some(&b) = bytes.get(i) else { break };
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        // Only ASCII bytes end a run, so `start..i` is on character boundaries.
        out.write_str(&s[start..i])?;
        if esc.is_empty() {
            write!(out, "\\u{b:04x}")?;
        } else {
            out.write_str(esc)?;
        }
        i += 1;
        start = i;
    }
    out.write_str(&s[start..])
}

/// How many leading bytes of `bytes` are, eight at a time, sure to need no escape: a word is
/// skipped when none of its bytes is below 0x20, a `"` or a `\`. The tests are the usual
/// SWAR ones ("has a byte less than n", "has a zero byte" after an XOR); they can report a
/// byte that is not there only above one that is, so a word they pass is clean, and the
/// caller checks the bytes after the run one by one.
fn clean_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut n = 0;
    for word in bytes.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let w = u64::from_le_bytes(w);
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            break;
        }
        n += 8;
    }
    n
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it: `2026-12-04T19:17:31.123456Z`.
fn write_timestamp(out: &mut impl Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let (date, time) = civil(secs);
            cached.1.clear();
            write!(cached.1, "{date}T{time}")?;
            cached.0 = secs;
        }
        out.write_str(&cached.1)
    })?;
    // `.uuuuuuZ`, the six digits by hand: this runs for every line.
    let mut frac = *b".000000Z";
    let mut micros = since.subsec_micros();
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DD` and `HH:MM:SS` of a Unix second (UTC), by Howard Hinnant's `civil_from_days`.
fn civil(secs: u64) -> (impl fmt::Display, impl fmt::Display) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3_600, rem / 60 % 60, rem % 60);
    (
        DisplayFn(move |f: &mut fmt::Formatter<'_>| write!(f, "{year:04}-{month:02}-{day:02}")),
        DisplayFn(move |f: &mut fmt::Formatter<'_>| write!(f, "{h:02}:{m:02}:{s:02}")),
    )
}

struct DisplayFn<F>(F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for DisplayFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::{Layer as _, SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    struct Shown;
    impl fmt::Display for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("shown \"quoted\"\n\u{1}")
        }
    }

    fn events() {
        tracing::info!(
            request_id = %"0af7651916cd43dd8448eb211c80319c",
            method = %"POST",
            status = 200u16,
            duration_ms = 1.234_5_f64,
            negative = -7i64,
            ok = true,
            key_id = "-",
            "request"
        );
        tracing::warn!(error = %Shown, detail = ?("tuple", 1), "upstream body failed");
        tracing::error!(
            r#type = "raw",
            big = u128::MAX,
            nan = f64::NAN,
            "a \\ \"message\" with\ttabs é ✓"
        );
        tracing::info!(bytes = ?b"ab", "debug of bytes");
        // Numbers as serde_json writes them, and names that need escaping or span several words.
        tracing::info!(
            tenth = 0.1f64,
            big = 1e21f64,
            small = 1e-7f64,
            tiny = 5e-324f64,
            max = f64::MAX,
            neg_zero = -0.0f64,
            whole = 123_456_789.0f64,
            inf = f64::INFINITY,
            u_max = u64::MAX,
            i_min = i64::MIN,
            no = false,
            "we\"ird key\n" = 1u8,
            a_field_name_of_many_words_longer_than_a_swar_word_or_two = 2u8,
            "numbers"
        );
        tracing::debug!("filtered out at info");
    }

    fn capture(json_line: bool) -> Vec<String> {
        let buf = Buf::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buf.clone())
            .with_ansi(false)
            .with_target(false);
        // The production log filter: a callsite's interest is shared by every subscriber in the
        // process, so a looser filter here would enable request spans in the other tests' ones.
        let filter = || {
            use tracing_subscriber::filter::FilterExt;
            tracing_subscriber::filter::LevelFilter::INFO.and(
                tracing_subscriber::filter::filter_fn(|m| m.target() != crate::SPAN_TARGET),
            )
        };
        if json_line {
            let s = tracing_subscriber::registry()
                .with(layer.event_format(JsonLine).with_filter(filter()));
            tracing::subscriber::with_default(s, events);
        } else {
            let s = tracing_subscriber::registry()
                .with(layer.json().flatten_event(true).with_filter(filter()));
            tracing::subscriber::with_default(s, events);
        }
        buf.lines()
    }

    /// The line without its timestamp (the two formatters run at different instants).
    fn without_timestamp(line: &str) -> (String, String) {
        let start = line.find("\"timestamp\":\"").expect("timestamp") + 13;
        let end = start + line[start..].find('"').expect("end of timestamp");
        (
            format!("{}{}", &line[..start], &line[end..]),
            line[start..end].to_string(),
        )
    }

    #[test]
    fn lines_are_the_ones_tracing_subscriber_writes() {
        let ours = capture(true);
        let theirs = capture(false);
        assert_eq!(ours.len(), 5, "{ours:?}");
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            let (a_rest, a_ts) = without_timestamp(a);
            let (b_rest, b_ts) = without_timestamp(b);
            assert_eq!(a_rest, b_rest, "byte for byte, timestamp aside");
            let parsed: serde_json::Value = serde_json::from_str(a).expect("valid JSON");
            assert!(parsed.is_object());
            assert_eq!(a_ts.len(), b_ts.len(), "{a_ts} vs {b_ts}");
            assert_eq!(a_ts.as_bytes()[10], b'T');
            assert!(a_ts.ends_with('Z'));
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            write_timestamp(
                &mut s,
                UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros),
            )
            .expect("formats");
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_412_551, 123_456), "2026-12-04T19:29:11.123456Z");
        // The per-second cache must not hand out the previous second's text.
        assert_eq!(at(1_796_412_552, 0), "2026-12-04T19:29:12.000000Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn escaping_matches_serde_json() {
        for s in [
            "plain",
            "quote \" backslash \\",
            "\n\r\t\u{8}\u{c}",
            "\u{0}\u{1f}\u{7f}",
            "é ✓ 🦀",
            // Runs longer than a word, with the byte to escape at each place in one.
            "0123456789abcdef\"0123456789abcdef",
            "01234567\\",
            "abcdefghijklmnopqrstuvwxyz\u{1}é✓🦀 \u{7f}\u{80}ÿ",
            "/v1/chat/completions?x=ab\tcd",
        ] {
            let mut ours = String::new();
            escape(&mut ours, s).expect("escapes");
            let theirs = serde_json::to_string(s).expect("serializes");
            assert_eq!(format!("\"{ours}\""), theirs);
        }
        // Every byte that needs an escape, at every offset of a 24-byte string.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{8}'] {
            for at in 0..24 {
                let mut s: String = "x".repeat(24);
                s.replace_range(at..at + 1, &special.to_string());
                let mut ours = String::new();
                escape(&mut ours, &s).expect("escapes");
                let theirs = serde_json::to_string(&s).expect("serializes");
                assert_eq!(format!("\"{ours}\""), theirs, "{special:?} at {at}");
            }
        }
    }
}
