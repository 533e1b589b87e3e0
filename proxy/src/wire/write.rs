//! What the proxy writes to HTTP/1.1 peers: status lines, fields, and the short answers it
//! gives itself (errors, `100 Continue`).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;

/// What a client waiting on `Expect: 100-continue` gets before sending its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends `HTTP/1.1 <code> <reason>`. HTTP/1.1 also to HTTP/1.0 clients, as RFC 9112 §2.5
/// has a server do; the client reads it as the 1.0 it knows.
pub fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one `name: value` line.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n).as_bytes());
}

/// `n` in decimal, on the stack.
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// `n` in decimal digits, without allocating.
pub fn decimal(mut n: u64) -> Decimal {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Decimal { digits, start: i }
}

thread_local! {
    /// The current second and its HTTP date: formatted once a second per thread.
    static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
}

/// The current time as an HTTP date (`Thu, 26 Nov 2026 02:00:00 GMT`), for `Date`.
pub fn http_date() -> [u8; 29] {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return text;
        }
        let mut fresh = [0u8; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        fresh[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        cached.set((secs, fresh));
        fresh
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_numbers() {
        let mut out = Vec::new();
        push_status_line(&mut out, StatusCode::GATEWAY_TIMEOUT);
        push_status_line(&mut out, StatusCode::from_u16(599).unwrap());
        assert_eq!(
            out,
            b"HTTP/1.1 504 Gateway Timeout\r\nHTTP/1.1 599 Unknown\r\n"
        );
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn dates_are_http_dates() {
        let date = http_date();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
