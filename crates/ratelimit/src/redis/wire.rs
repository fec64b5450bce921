//! RESP2, the Redis protocol, for the few commands the limiter sends: a [`Pipeline`] written
//! straight into one buffer, and replies parsed into [`Value`]s.
//!
//! Why not redis-rs's: it builds a `Cmd` (two vectors) per command and packs it in a second pass,
//! and its parser, built from `combine` combinators, spends about a thousand instructions on each
//! reply; a counters check sends seven commands and reads seven replies, and the gateway's side of
//! that round trip cost more than the rest of the rate limiting (docs/performance.md). Here a
//! command is written once, in place, and a reply is read by one `match` on its first byte.
//! redis-rs still parses the URL; nothing else of it is on the path of a call.
//!
//! The limiter never sends `HELLO`, so the server speaks RESP2 to it: simple strings, errors,
//! integers, bulk strings and arrays, nothing else.

use std::fmt;

/// A reply, as RESP2 has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// A null bulk string or array: `GET` of a missing key, `SET … NX` that set nothing.
    Nil,
    Int(i64),
    /// `+OK`, the most common simple string, without an allocation.
    Okay,
    /// Any other simple string (`+QUEUED` inside `MULTI`).
    Status(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    /// An error reply, e.g. `NOSCRIPT No matching script…` or `WRONGTYPE …`.
    Error(String),
}

impl Value {
    /// An integer, or a bulk string holding one in decimal (what `GET` returns); a missing
    /// key counts zero. `None` for anything else: another program's data, an error.
    pub(super) fn integer(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Nil => Some(0),
            Value::Bulk(b) => decimal(b),
            _ => None,
        }
    }

    /// The error's code (its first word), if this is an error.
    pub(super) fn error_code(&self) -> Option<&str> {
        match self {
            Value::Error(text) => text.split(' ').next(),
            _ => None,
        }
    }
}

/// An optional `-` and decimal digits whose value fits an `i64`; anything else is `None`.
pub(super) fn decimal(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        // Negative values accumulate downwards, so i64::MIN parses too.
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// Something a command takes as an argument: bytes as they are, integers in decimal.
pub(super) trait Arg {
    fn write_to(self, out: &mut Vec<u8>);
}

/// Writes one bulk string: `$<len>\r\n<bytes>\r\n`, its head assembled on the stack.
fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = itoa::Buffer::new();
    let digits = len.format(bytes.len()).as_bytes();
    let mut head = [0u8; 24];
    head[0] = b'$';
    head[1..=digits.len()].copy_from_slice(digits);
    head[digits.len() + 1..digits.len() + 3].copy_from_slice(b"\r\n");
    out.reserve(digits.len() + bytes.len() + 5);
    out.extend_from_slice(&head[..digits.len() + 3]);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Writes an integer as a bulk string in one piece: its decimal form is at most 20 bytes, so
/// its length is written as one or two digits without a second conversion.
fn decimal_bulk(out: &mut Vec<u8>, digits: &[u8]) {
    let mut piece = [0u8; 32];
    let n = digits.len();
    let head = if n < 10 {
        piece[..4].copy_from_slice(&[b'$', b'0' + n as u8, b'\r', b'\n']);
        4
    } else {
        piece[..5].copy_from_slice(&[
            b'$',
            b'0' + (n / 10) as u8,
            b'0' + (n % 10) as u8,
            b'\r',
            b'\n',
        ]);
        5
    };
    piece[head..head + n].copy_from_slice(digits);
    piece[head + n..head + n + 2].copy_from_slice(b"\r\n");
    out.extend_from_slice(&piece[..head + n + 2]);
}

impl Arg for &[u8] {
    fn write_to(self, out: &mut Vec<u8>) {
        bulk(out, self);
    }
}

impl Arg for &str {
    fn write_to(self, out: &mut Vec<u8>) {
        bulk(out, self.as_bytes());
    }
}

macro_rules! integer_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn write_to(self, out: &mut Vec<u8>) {
                decimal_bulk(out, itoa::Buffer::new().format(self).as_bytes());
            }
        }
    )*};
}
integer_arg!(u8, i32, u32, u64, usize, i64);

/// Commands sent together in one write, their replies read back together: one round trip.
///
/// Written as redis-rs's pipeline is (`pipe.cmd("GET").arg(key)`), but straight into the bytes
/// that go on the wire. A command's argument count, which RESP puts first, is known only when
/// the next command starts (or the pipeline is finished): a command starts with room for one
/// digit (`*?\r\n`), filled in then, and only a command of ten arguments or more moves its
/// bytes to make room for more.
pub(super) struct Pipeline {
    buf: Vec<u8>,
    commands: usize,
    /// Where the open command's arguments start, and how many it has.
    open: Option<(usize, usize)>,
    atomic: bool,
    finished: bool,
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

impl Pipeline {
    /// A pipeline with room for about `bytes` bytes of commands.
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            commands: 0,
            open: None,
            atomic: false,
            finished: false,
        }
    }

    /// Sends the commands in a `MULTI`/`EXEC` block: Redis runs them with nothing else in
    /// between, and [`replies`](Self::replies) unwraps `EXEC`'s array.
    pub(super) fn atomic(&mut self) -> &mut Self {
        if !self.atomic {
            self.atomic = true;
            self.buf.splice(0..0, MULTI.iter().copied());
            if let Some((start, _)) = &mut self.open {
                *start += MULTI.len();
            }
        }
        self
    }

    /// Starts the command `name`.
    pub(super) fn cmd(&mut self, name: &str) -> &mut Self {
        debug_assert!(!self.finished, "a command added to a finished pipeline");
        self.close();
        self.open = Some((self.buf.len(), 0));
        self.buf.extend_from_slice(b"*0\r\n");
        self.commands += 1;
        self.arg(name)
    }

    /// Adds an argument to the command last started.
    pub(super) fn arg<A: Arg>(&mut self, arg: A) -> &mut Self {
        if let Some((_, args)) = &mut self.open {
            *args += 1;
            arg.write_to(&mut self.buf);
        }
        self
    }

    /// Adds `count` arguments already written as RESP bulk strings (`encoded`): the constant
    /// arguments of the hot path's commands, written once at compile time instead of each call.
    pub(super) fn encoded(&mut self, count: usize, encoded: &'static [u8]) -> &mut Self {
        debug_assert!(
            is_bulks(encoded, count),
            "not {count} bulk strings: {encoded:?}"
        );
        if let Some((_, args)) = &mut self.open {
            *args += count;
            self.buf.extend_from_slice(encoded);
        }
        self
    }

    /// Moves `other`'s commands to the end of this pipeline (`other` is left empty). Both must
    /// be plain: `other` was written apart because its arguments came with this one's.
    pub(super) fn append(&mut self, other: &mut Pipeline) -> &mut Self {
        debug_assert!(!other.atomic && !self.finished);
        self.close();
        other.close();
        self.buf.extend_from_slice(&other.buf);
        self.commands += other.commands;
        other.buf.clear();
        other.commands = 0;
        self
    }

    /// Commands in the pipeline (not counting `MULTI` and `EXEC`).
    pub(super) fn len(&self) -> usize {
        self.commands
    }

    pub(super) fn is_empty(&self) -> bool {
        self.commands == 0
    }

    /// Writes the open command's argument count into its head (`*?\r\n`, at `start`).
    fn close(&mut self) {
        let Some((start, args)) = self.open.take() else {
            return;
        };
        let mut count = itoa::Buffer::new();
        let digits = count.format(args).as_bytes();
        match digits {
            [digit] => self.buf[start + 1] = *digit,
            _ => {
                self.buf
                    .splice(start + 1..start + 2, digits.iter().copied());
            }
        }
    }

    /// Ends the pipeline (no command can be added after) and says how many replies the server
    /// answers its [`bytes`](Self::bytes) with. Calling it again changes nothing.
    pub(super) fn finish(&mut self) -> usize {
        if !self.finished {
            self.finished = true;
            self.close();
            if self.atomic {
                self.buf.extend_from_slice(EXEC);
            }
        }
        if self.atomic {
            self.commands + 2
        } else {
            self.commands
        }
    }

    /// The bytes to send, once [`finish`](Self::finish)ed.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The commands' own replies out of what the server answered the pipeline with: as they
    /// are, or `EXEC`'s array (`MULTI`'s `OK` and each `QUEUED` dropped). An aborted block
    /// (`EXECABORT`, a nil `EXEC`) is an error, the reply that says so.
    pub(super) fn replies(&self, mut values: Vec<Value>) -> Result<Vec<Value>, Value> {
        if !self.atomic {
            return Ok(values);
        }
        match values.pop() {
            Some(Value::Array(inner)) if inner.len() == self.commands => Ok(inner),
            Some(other) => Err(other),
            None => Err(Value::Nil),
        }
    }
}

/// Whether `bytes` are exactly `count` whole bulk strings (a check of [`Pipeline::encoded`]).
fn is_bulks(mut bytes: &[u8], count: usize) -> bool {
    for _ in 0..count {
        match parse(bytes) {
            Ok(Some((Value::Bulk(_), used))) => bytes = &bytes[used..],
            _ => return false,
        }
    }
    bytes.is_empty()
}

/// What stops a reply from being read: the server broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProtocolError(&'static str);

impl ProtocolError {
    /// Bytes arrived while no call was waiting for a reply.
    pub(super) const UNASKED: Self = ProtocolError("a reply nobody asked for");
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis protocol error: {}", self.0)
    }
}

/// Most elements an array reply may declare, and most bytes a bulk string may: Redis's own
/// limits (`proto-max-bulk-len` defaults to 512 MiB). A declared size beyond them is garbage,
/// not something to reserve memory for.
const MAX_BULK: usize = 512 << 20;
const MAX_ELEMENTS: usize = 1 << 24;
/// Deepest nesting read; our commands' replies nest at most twice (`EXEC` of `MGET`).
const MAX_DEPTH: usize = 8;

/// Parses one whole reply from the front of `buf`: the value and the bytes it took, `Ok(None)`
/// when `buf` holds only part of it (read more, then parse again from the same place).
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    let mut pos = 0;
    match parse_at(buf, &mut pos, 0)? {
        Some(value) => Ok(Some((value, pos))),
        None => Ok(None),
    }
}

/// The line starting at `*pos` (without its `\r\n`), moving `*pos` past it.
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*pos..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    if end == 0 || rest[end - 1] != b'\r' {
        return Err(ProtocolError("a line not ended by CRLF"));
    }
    *pos += end + 1;
    Ok(Some(&rest[..end - 1]))
}

/// A length: `-1` (nil) as `None`, else at most `max`.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match decimal(text) {
        Some(-1) => Ok(None),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .map(Some)
            .ok_or(ProtocolError("a length out of range")),
        None => Err(ProtocolError("a length that is not a number")),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Value>, ProtocolError> {
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(head) = line(buf, pos)? else {
        return Ok(None);
    };
    let value = match kind {
        b'+' if head == b"OK" => Value::Okay,
        b'+' => Value::Status(text(head)),
        b'-' => Value::Error(text(head)),
        b':' => Value::Int(decimal(head).ok_or(ProtocolError("an integer that is not one"))?),
        b'$' => match length(head, MAX_BULK)? {
            None => Value::Nil,
            Some(len) => {
                let end = *pos + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError("a bulk string not ended by CRLF"));
                }
                let bytes = buf[*pos..end].to_vec();
                *pos = end + 2;
                Value::Bulk(bytes)
            }
        },
        b'*' => match length(head, MAX_ELEMENTS)? {
            None => Value::Nil,
            Some(_) if depth >= MAX_DEPTH => return Err(ProtocolError("arrays nested too deep")),
            Some(len) => {
                // Not sized by the declared length before its elements arrived: a reply
                // that declares millions must not reserve memory for them up front.
                let mut items = Vec::with_capacity(len.min(64));
                for _ in 0..len {
                    match parse_at(buf, pos, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Value::Array(items)
            }
        },
        _ => return Err(ProtocolError("an unknown reply type")),
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_written_as_resp_arrays_of_bulk_strings() {
        let mut pipe = Pipeline::with_capacity(16);
        pipe.cmd("SET")
            .arg(&b"k:1"[..])
            .arg(0u64)
            .arg("PX")
            .arg(120_000u64)
            .arg("NX");
        pipe.cmd("INCRBY").arg("k:1").arg(-3i64);
        pipe.cmd("TIME");
        assert_eq!(pipe.len(), 3);
        assert_eq!(pipe.finish(), 3);
        assert_eq!(pipe.finish(), 3);
        assert_eq!(
            String::from_utf8(pipe.bytes().to_vec()).unwrap(),
            "*6\r\n$3\r\nSET\r\n$3\r\nk:1\r\n$1\r\n0\r\n$2\r\nPX\r\n$6\r\n120000\r\n$2\r\nNX\r\n\
             *3\r\n$6\r\nINCRBY\r\n$3\r\nk:1\r\n$2\r\n-3\r\n\
             *1\r\n$4\r\nTIME\r\n"
        );
    }

    #[test]
    fn integers_and_encoded_arguments_are_bulk_strings() {
        let mut pipe = Pipeline::with_capacity(0);
        pipe.cmd("X")
            .arg(0u8)
            .arg(i64::MIN)
            .arg(u64::MAX)
            .arg(123_456_789u32)
            .encoded(2, b"$2\r\nNX\r\n$2\r\nPX\r\n")
            .arg(-1i32);
        pipe.finish();
        assert_eq!(
            String::from_utf8(pipe.bytes().to_vec()).unwrap(),
            "*8\r\n$1\r\nX\r\n$1\r\n0\r\n$20\r\n-9223372036854775808\r\n\
             $20\r\n18446744073709551615\r\n$9\r\n123456789\r\n$2\r\nNX\r\n$2\r\nPX\r\n\
             $2\r\n-1\r\n"
        );
        assert!(!is_bulks(b"$2\r\nNX\r\n", 2));
        assert!(!is_bulks(b"$2\r\nNX\r\n:1\r\n", 2));
    }

    #[test]
    fn a_command_of_many_arguments_gets_a_two_digit_count() {
        let mut pipe = Pipeline::with_capacity(0);
        pipe.cmd("MGET");
        for i in 0..11u64 {
            pipe.arg(i);
        }
        pipe.finish();
        assert!(
            pipe.bytes()
                .starts_with(b"*12\r\n$4\r\nMGET\r\n$1\r\n0\r\n")
        );
        // Binary-safe: a key holding CR LF is length-prefixed, not split.
        let mut pipe = Pipeline::with_capacity(0);
        pipe.cmd("GET").arg(&b"a\r\nb"[..]);
        pipe.finish();
        assert_eq!(pipe.bytes(), b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn an_atomic_pipeline_is_framed_and_unwrapped() {
        let mut pipe = Pipeline::with_capacity(0);
        pipe.cmd("ZCARD").arg("z");
        // Made atomic after its first command was started, as before.
        pipe.atomic();
        let replies = pipe.finish();
        assert_eq!(
            pipe.bytes(),
            b"*1\r\n$5\r\nMULTI\r\n*2\r\n$5\r\nZCARD\r\n$1\r\nz\r\n*1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(replies, 3);
        let answered = vec![
            Value::Okay,
            Value::Status("QUEUED".into()),
            Value::Array(vec![Value::Int(2)]),
        ];
        assert_eq!(pipe.replies(answered), Ok(vec![Value::Int(2)]));
        let aborted = vec![
            Value::Okay,
            Value::Error("ERR unknown command".into()),
            Value::Error("EXECABORT Transaction discarded".into()),
        ];
        assert!(pipe.replies(aborted).is_err());
    }

    #[test]
    fn every_reply_type_parses() {
        let stream = b"+OK\r\n+QUEUED\r\n-NOSCRIPT No matching script\r\n:-42\r\n$5\r\nhe\r\no\r\n\
                       $-1\r\n*-1\r\n*2\r\n$1\r\n7\r\n*1\r\n:1\r\n$0\r\n\r\n";
        let mut rest = &stream[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            let (value, used) = parse(rest).unwrap().unwrap();
            got.push(value);
            rest = &rest[used..];
        }
        assert_eq!(
            got,
            vec![
                Value::Okay,
                Value::Status("QUEUED".into()),
                Value::Error("NOSCRIPT No matching script".into()),
                Value::Int(-42),
                Value::Bulk(b"he\r\no".to_vec()),
                Value::Nil,
                Value::Nil,
                Value::Array(vec![
                    Value::Bulk(b"7".to_vec()),
                    Value::Array(vec![Value::Int(1)])
                ]),
                Value::Bulk(Vec::new()),
            ]
        );
        assert_eq!(got[2].error_code(), Some("NOSCRIPT"));
        assert_eq!(got[7].integer(), None);
        assert_eq!(Value::Bulk(b"-12".to_vec()).integer(), Some(-12));
        assert_eq!(Value::Nil.integer(), Some(0));
    }

    #[test]
    fn a_reply_cut_anywhere_asks_for_more() {
        let whole = b"*3\r\n:1\r\n$11\r\nhello world\r\n*1\r\n+OK\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        let (_, used) = parse(whole).unwrap().unwrap();
        assert_eq!(used, whole.len());
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"?what\r\n"[..],
            b":12x\r\n",
            b"$abc\r\n",
            b"$3\r\nabcde\r\n",
            b"+OK\n",
            b"$-2\r\n",
            b"*99999999999\r\n",
            b":99999999999999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        assert_eq!(decimal(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(decimal(b"9223372036854775808"), None);
        assert_eq!(decimal(b"-"), None);
    }
}
