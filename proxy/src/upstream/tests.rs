//! The upstream client against scripted upstreams: raw TCP servers on loopback that answer
//! each request head with bytes chosen by the test, so framing, reuse and failures are exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What a scripted upstream does with the request head it read on a connection.
type Script = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

/// A scripted answer: bytes to write, then keep reading requests or close.
struct Reply {
    bytes: Vec<u8>,
    close: bool,
}

fn reply(text: &str) -> Reply {
    Reply {
        bytes: text.as_bytes().to_vec(),
        close: false,
    }
}

fn reply_and_close(text: &str) -> Reply {
    Reply {
        bytes: text.as_bytes().to_vec(),
        close: true,
    }
}

/// A scripted upstream: the script gets each request's number on its connection and head.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Every request as received (head and whatever body followed in the same reads).
    received: Arc<Mutex<Vec<String>>>,
}

async fn scripted(script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(script);
    let (a, r) = (accepted.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, script.clone(), r.clone()));
        }
    });
    Scripted {
        addr,
        accepted,
        received,
    }
}

async fn serve(mut stream: TcpStream, script: Script, received: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let mut chunk = [0u8; 4096];
        let Ok(read @ 1..) = stream.read(&mut chunk).await else {
            return;
        };
        buf.extend_from_slice(&chunk[..read]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let request = String::from_utf8_lossy(&buf).to_string();
        buf.drain(..end + 4);
        received.lock().unwrap().push(request.clone());
        let Reply { bytes, close } = script(n, &request);
        n += 1;
        if stream.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

fn connections() -> Arc<Connections> {
    Connections::new(Duration::from_secs(1), Duration::from_secs(60))
}

/// A response as the test sees it: status, fields (lower-case names), body, trailers.
type Seen = (
    StatusCode,
    Vec<(String, String)>,
    Vec<u8>,
    Option<HeaderMap>,
);

/// The status and fields of a response head, owned.
fn summary(head: &ResponseHead<'_, '_>, _sent: bool) -> (StatusCode, Vec<(String, String)>) {
    let fields = head
        .fields
        .iter()
        .map(|f| {
            (
                f.name.to_ascii_lowercase(),
                String::from_utf8_lossy(f.value).to_string(),
            )
        })
        .collect();
    (head.status, fields)
}

/// Sends `method /x` and reads the whole response.
async fn get(pool: &Arc<Connections>, addr: SocketAddr, method: &Method) -> Result<Seen, Error> {
    let head = format!("{method} /x HTTP/1.1\r\nhost: upstream\r\n\r\n");
    let request = Outgoing {
        head: head.as_bytes(),
        method,
        chunked: false,
        length: None,
        wait: Duration::from_secs(5),
    };
    let ((status, fields), mut body) = pool
        .send(addr, request, &mut RequestBody::empty(), &mut summary)
        .await?;
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((status, fields, data, trailers))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Sends `GET /` and returns the head's status and the body, unread.
async fn open(pool: &Arc<Connections>, addr: SocketAddr) -> (StatusCode, UpstreamBody) {
    let request = Outgoing {
        head: b"GET / HTTP/1.1\r\nhost: upstream\r\n\r\n",
        method: &Method::GET,
        chunked: false,
        length: None,
        wait: Duration::from_secs(5),
    };
    let (status, body) = pool
        .send(addr, request, &mut RequestBody::empty(), &mut |h, _| {
            h.status
        })
        .await
        .unwrap();
    (status, body)
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = scripted(|_, _| reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let pool = connections();
    for _ in 0..5 {
        let (status, _, body, _) = get(&pool, up.addr, &Method::GET).await.unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
    let sent = up.received.lock().unwrap()[0].clone();
    assert_eq!(sent, "GET /x HTTP/1.1\r\nhost: upstream\r\n\r\n");
}

#[tokio::test]
async fn chunked_bodies_and_trailers_come_through_and_the_connection_is_reused() {
    let up = scripted(|_, _| {
        reply(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nx-checksum: 7\r\n\r\n",
        )
    })
    .await;
    let pool = connections();
    for _ in 0..2 {
        let (_, headers, body, trailers) = get(&pool, up.addr, &Method::GET).await.unwrap();
        assert_eq!(body, b"abcdefg");
        assert_eq!(trailers.unwrap()["x-checksum"], "7");
        assert_eq!(field(&headers, "transfer-encoding"), Some("chunked"));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_until_close_ends_the_connection() {
    let up = scripted(|_, _| reply_and_close("HTTP/1.1 200 OK\r\n\r\nall of it")).await;
    let pool = connections();
    for _ in 0..2 {
        let (_, _, body, _) = get(&pool, up.addr, &Method::GET).await.unwrap();
        assert_eq!(body, b"all of it");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_the_headers_say() {
    let up = scripted(|n, _| match n {
        0 => reply("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"),
        1 => reply("HTTP/1.1 204 No Content\r\n\r\n"),
        _ => reply("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"),
    })
    .await;
    let pool = connections();
    let (status, headers, body, _) = get(&pool, up.addr, &Method::HEAD).await.unwrap();
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(field(&headers, "content-length"), Some("1000"));
    let (status, _, body, _) = get(&pool, up.addr, &Method::GET).await.unwrap();
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    let (status, _, body, _) = get(&pool, up.addr, &Method::GET).await.unwrap();
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all three"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = scripted(|_, _| {
        reply(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
             HTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx",
        )
    })
    .await;
    let (status, headers, body, _) = get(&connections(), up.addr, &Method::GET).await.unwrap();
    assert_eq!((status, body.as_slice()), (StatusCode::CREATED, &b"x"[..]));
    assert_eq!(field(&headers, "link"), None);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    // Answers without `Connection: close`, then closes anyway: the parked connection is dead.
    let up =
        scripted(|_, _| reply_and_close("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let pool = connections();
    for _ in 0..3 {
        let (status, _, _, _) = get(&pool, up.addr, &Method::GET).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_close_answer_drops_the_idle_siblings() {
    // The first two requests on each connection get keep-alive answers; the next says
    // `Connection: close`, as a draining instance does.
    let up = scripted(|n, _| {
        if n == 0 {
            reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        } else {
            reply_and_close("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        }
    })
    .await;
    let pool = connections();
    // Two connections parked at once.
    let (a, b) = tokio::join!(open(&pool, up.addr), open(&pool, up.addr));
    for (_, mut body) in [a, b] {
        while body.frame().await.is_some() {}
    }
    assert_eq!(pool.idle_count(), 2);
    let (status, fields, _, _) = get(&pool, up.addr, &Method::GET).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&fields, "connection"), Some("close"));
    assert_eq!(
        pool.idle_count(),
        0,
        "the idle sibling is closed by the proxy"
    );
}

#[tokio::test]
async fn broken_responses_are_errors() {
    let garbage = scripted(|_, _| reply_and_close("SSH-2.0-OpenSSH_9.2\r\n\r\n")).await;
    assert!(matches!(
        get(&connections(), garbage.addr, &Method::GET).await,
        Err(Error::Malformed(_))
    ));
    let two_lengths =
        scripted(|_, _| reply("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"))
            .await;
    assert!(matches!(
        get(&connections(), two_lengths.addr, &Method::GET).await,
        Err(Error::Malformed(_))
    ));
    let cut_short =
        scripted(|_, _| reply_and_close("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")).await;
    assert!(matches!(
        get(&connections(), cut_short.addr, &Method::GET).await,
        Err(Error::Closed)
    ));
    let silent = scripted(|_, _| reply_and_close("")).await;
    assert!(matches!(
        get(&connections(), silent.addr, &Method::GET).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(
        get(&connections(), addr, &Method::GET).await,
        Err(Error::Connect(_))
    ));
}

#[tokio::test]
async fn a_body_dropped_half_way_closes_its_connection() {
    let up = scripted(|_, _| reply("HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nabc")).await;
    let pool = connections();
    let (_, mut body) = open(&pool, up.addr).await;
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"abc"));
    drop(body);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn a_chunked_request_body_is_sent_chunk_encoded() {
    let up = scripted(|_, _| reply("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let pool = connections();
    // A client body: an HTTP/1 chunked one, read from an in-memory client connection.
    let (mut client, mut server) = tokio::io::duplex(1024);
    client
        .write_all(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    let reader = crate::body::Http1Body::new(
        &mut server,
        &mut buf,
        crate::wire::request::BodyFraming::Chunked,
        Duration::from_secs(5),
    );
    let mut body = RequestBody::http1(reader, 1000);
    let request = Outgoing {
        head: b"POST /p HTTP/1.1\r\nhost: upstream\r\ntransfer-encoding: chunked\r\n\r\n",
        method: &Method::POST,
        chunked: true,
        length: None,
        wait: Duration::from_secs(5),
    };
    let (status, _) = pool
        .send(up.addr, request, &mut body, &mut |h, _| h.status)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let received = up.received.lock().unwrap()[0].clone();
    assert!(
        received.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{received:?}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_the_clients_fault() {
    let up = scripted(|_, _| reply("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let pool = connections();
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"0123456789").await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let reader = crate::body::Http1Body::new(
        &mut server,
        &mut buf,
        crate::wire::request::BodyFraming::Length(10),
        Duration::from_secs(5),
    );
    let mut body = RequestBody::http1(reader, 5);
    let request = Outgoing {
        head: b"POST /p HTTP/1.1\r\nhost: upstream\r\ncontent-length: 10\r\n\r\n",
        method: &Method::POST,
        chunked: false,
        length: None,
        wait: Duration::from_secs(5),
    };
    match pool
        .send(up.addr, request, &mut body, &mut |h, _| h.status)
        .await
    {
        Err(Error::RequestBody(e)) => assert!(crate::body::caused_by::<crate::body::BodyTooLarge>(
            e.as_ref()
        )),
        other => panic!("expected a body error, got {:?}", other.map(|(s, _)| s)),
    }
}

#[tokio::test]
async fn an_upgrade_hands_over_the_connection_and_early_bytes() {
    let up = scripted(|_, _| {
        reply_and_close("HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n\r\nhello")
    })
    .await;
    let pool = connections();
    let (status, body) = open(&pool, up.addr).await;
    assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
    let (_stream, early) = body.into_upgraded().unwrap();
    assert_eq!(early, Bytes::from_static(b"hello"));
    assert_eq!(pool.idle_count(), 0);
}
