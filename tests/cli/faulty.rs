//! A proxy in front of the S3 server that misbehaves the way S3 does under load: of the
//! requests' first attempts, every third is answered `503 SlowDown` and every fifth (that
//! is not a third) is held for a few seconds (a timeout, when the client gives up sooner);
//! and the first request on a bucket right after it was created is answered
//! `404 NoSuchBucket` (S3 is eventually consistent about new buckets). The server closes
//! every connection after one answer, so one connection is one request here.
//!
//! Only first attempts are faulted and counted (the SDK numbers attempts in its
//! `amz-sdk-request` header): every fault is then retried successfully, and how many faults
//! there are depends only on how many requests an apply sends, not on how concurrent
//! requests and their retries happen to interleave.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct FaultyProxy {
    pub endpoint: String,
    pub slow_downs: Arc<AtomicUsize>,
    pub not_yet_there: Arc<AtomicUsize>,
    pub held: Arc<AtomicUsize>,
}

/// How long a held request waits before it goes on to the server.
const HOLD: std::time::Duration = std::time::Duration::from_secs(6);

impl FaultyProxy {
    pub fn start(upstream: &str) -> FaultyProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let slow_downs = Arc::new(AtomicUsize::new(0));
        let not_yet_there = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (slow, missing, hold) = (slow_downs.clone(), not_yet_there.clone(), held.clone());
        let first_attempts = Arc::new(AtomicUsize::new(0));
        let just_created: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (first_attempts, upstream, slow, missing, hold, just_created) = (
                    first_attempts.clone(),
                    upstream.clone(),
                    slow.clone(),
                    missing.clone(),
                    hold.clone(),
                    just_created.clone(),
                );
                std::thread::spawn(move || {
                    let counters = Counters {
                        slow: &slow,
                        missing: &missing,
                        held: &hold,
                    };
                    serve(client, &upstream, &first_attempts, counters, &just_created)
                });
            }
        });
        FaultyProxy {
            endpoint,
            slow_downs,
            not_yet_there,
            held,
        }
    }
}

struct Counters<'a> {
    slow: &'a AtomicUsize,
    missing: &'a AtomicUsize,
    held: &'a AtomicUsize,
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    first_attempts: &AtomicUsize,
    counters: Counters<'_>,
    // Each bucket once, however many times its creation is sent: whether it was answered
    // `NoSuchBucket` yet.
    just_created: &Mutex<Vec<(String, bool)>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let line = text.lines().next().unwrap_or("").to_string();
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let bucket = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    // `PUT /bucket/` with no query: CreateBucket in path-style addressing.
    let creates_bucket =
        method == "PUT" && query.is_empty() && path.trim_end_matches('/').matches('/').count() == 1;

    if !creates_bucket && !bucket.is_empty() {
        let mut created = just_created.lock().unwrap();
        if let Some(entry) = created.iter_mut().find(|(b, done)| *b == bucket && !done) {
            entry.1 = true;
            counters.missing.fetch_add(1, Ordering::Relaxed);
            return answer(&mut client, length, "404 Not Found", "NoSuchBucket");
        }
    }
    let attempt: usize = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            if !name.eq_ignore_ascii_case("amz-sdk-request") {
                return None;
            }
            let value = value.trim().strip_prefix("attempt=")?;
            value.split(';').next()?.trim().parse().ok()
        })
        .unwrap_or(1);
    let n = match attempt {
        1 => first_attempts.fetch_add(1, Ordering::Relaxed) + 1,
        _ => 0, // never faulted
    };
    if n > 0 && n.is_multiple_of(3) {
        counters.slow.fetch_add(1, Ordering::Relaxed);
        return answer(&mut client, length, "503 Slow Down", "SlowDown");
    }
    if n > 0 && n.is_multiple_of(5) {
        counters.held.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(HOLD);
    }
    if creates_bucket {
        let mut created = just_created.lock().unwrap();
        if !created.iter().any(|(b, _)| *b == bucket) {
            created.push((bucket, false));
        }
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    if server.write_all(&head).is_err() {
        return;
    }
    let (mut client_in, mut server_out) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = body.join();
}

/// Answers with an S3 error, after taking in the request's body as a server would.
fn answer(client: &mut TcpStream, length: usize, status: &str, code: &str) {
    let _ = std::io::copy(&mut client.take(length as u64), &mut std::io::sink());
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
