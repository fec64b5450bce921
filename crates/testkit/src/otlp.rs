//! A real OTLP/HTTP trace receiver for tests: a plain HTTP/1.1 server on `127.0.0.1:0` that
//! accepts `POST /v1/traces` (`application/x-protobuf`), decodes each `ExportTraceServiceRequest`
//! with the OTLP protobuf definitions and keeps the spans, flattened, for assertions. Point a
//! service's `OTEL_EXPORTER_OTLP_ENDPOINT` at [`OtlpReceiver::endpoint`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One received span, with ids as lowercase hex and attribute values as strings (ints and
/// floats in decimal).
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service_name: Option<String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub attributes: BTreeMap<String, String>,
    /// Each event's name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    pub resource: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Every string this span carries: name, attribute and event values, resource values.
    pub fn all_values(&self) -> Vec<&str> {
        let mut v = vec![self.name.as_str()];
        v.extend(self.attributes.values().map(String::as_str));
        for (name, attrs) in &self.events {
            v.push(name);
            v.extend(attrs.values().map(String::as_str));
        }
        v.extend(self.resource.values().map(String::as_str));
        v
    }
}

/// One HTTP request the receiver answered.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inbox {
    spans: Vec<ReceivedSpan>,
    requests: Vec<ReceivedRequest>,
    errors: Vec<String>,
}

/// The running receiver; stops accepting when dropped.
pub struct OtlpReceiver {
    port: u16,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind the OTLP receiver: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ib, st) = (inbox.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let ib = ib.clone();
                std::thread::spawn(move || serve(conn, &ib));
            }
        });
        OtlpReceiver { port, inbox, stop }
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.inbox.0.lock().unwrap().spans.clone()
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.inbox.0.lock().unwrap().requests.clone()
    }

    /// Waits until `done` holds for the spans received so far, and returns them; panics after
    /// `limit` with what did arrive (and any request that could not be decoded).
    pub fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.inbox;
        let mut inbox = lock.lock().unwrap();
        loop {
            if done(&inbox.spans) {
                return inbox.spans.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "OTLP receiver: condition not met within {limit:?}; spans: {:#?}; errors: {:?}",
                    inbox.spans, inbox.errors
                );
            }
            inbox = cv.wait_timeout(inbox, deadline - now).unwrap().0;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Answers one request and closes the connection (the exporter reconnects for the next batch).
fn serve(conn: TcpStream, inbox: &(Mutex<Inbox>, Condvar)) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        read_chunked(&mut reader)
    } else {
        let len = headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok().map(|_| body)
    };
    let (status, reply) = match &body {
        Some(body) if method == "POST" && path == "/v1/traces" => {
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(req) => {
                    let spans = flatten(req);
                    let (lock, cv) = inbox;
                    let mut ib = lock.lock().unwrap();
                    ib.spans.extend(spans);
                    cv.notify_all();
                    ("200 OK", true)
                }
                Err(e) => {
                    inbox.0.lock().unwrap().errors.push(format!("decode: {e}"));
                    ("400 Bad Request", false)
                }
            }
        }
        Some(_) => ("404 Not Found", false),
        None => ("400 Bad Request", false),
    };
    {
        let (lock, cv) = inbox;
        lock.lock().unwrap().requests.push(ReceivedRequest {
            method,
            path,
            headers,
        });
        cv.notify_all();
    }
    // An empty ExportTraceServiceResponse encodes to zero bytes.
    let content_type = if reply {
        "application/x-protobuf"
    } else {
        "text/plain"
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = conn.flush();
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    service_name: resource.get("service.name").cloned(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    status_code: s.status.map_or(0, |st| st.code),
                    attributes: attrs(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attrs(&e.attributes)))
                        .collect(),
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}
