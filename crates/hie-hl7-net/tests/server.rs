//! The server loop over real sockets, with a handler that echoes MSH-10 and counts events.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hie_hl7_net::{Event, Handler, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Default)]
struct Echo {
    events: Mutex<Vec<Event>>,
}

impl Handler for Echo {
    async fn answer(&self, frame: &[u8], _peer: SocketAddr) -> Vec<String> {
        let text = String::from_utf8_lossy(frame).into_owned();
        vec![format!("first:{}", text.len()), format!("second:{text}")]
    }

    fn event(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }
}

async fn start(limits: Limits) -> (SocketAddr, Arc<Echo>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handler = Arc::new(Echo::default());
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(hie_hl7_net::serve(listener, limits, Arc::clone(&handler), "test", shutdown));
    (address, handler, stop)
}

fn limits() -> Limits {
    Limits { max_connections: 2, max_frame_bytes: 64, idle_timeout: Duration::from_secs(5) }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0b];
    out.extend_from_slice(body);
    out.extend_from_slice(&[0x1c, 0x0d]);
    out
}

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await.unwrap().unwrap();
    out
}

#[tokio::test]
async fn every_answer_to_a_frame_goes_back_framed_and_in_order() {
    let (address, handler, _stop) = start(limits()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    // Two frames in one write, the second split across writes.
    let mut bytes = frame(b"MSH|one");
    bytes.extend_from_slice(&frame(b"MSH|two")[..4]);
    stream.write_all(&bytes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&frame(b"MSH|two")[4..]).await.unwrap();
    stream.shutdown().await.unwrap();
    let answers = read_until_closed(&mut stream).await;
    let mut expected = Vec::new();
    for body in ["first:7", "second:MSH|one", "first:7", "second:MSH|two"] {
        expected.extend_from_slice(&frame(body.as_bytes()));
    }
    assert_eq!(answers, expected);
    let events = handler.events.lock().unwrap().clone();
    assert_eq!(events, [Event::Accepted, Event::Frame, Event::Frame]);
}

#[tokio::test]
async fn a_frame_over_the_cap_closes_the_connection_unanswered() {
    let (address, handler, _stop) = start(limits()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&frame(&[b'x'; 200])).await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    assert!(handler.events.lock().unwrap().contains(&Event::BadFrame));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_the_others_keep_working() {
    let (address, handler, _stop) = start(limits()).await;
    let mut first = TcpStream::connect(address).await.unwrap();
    let _second = TcpStream::connect(address).await.unwrap();
    // Let the server take both before the third arrives.
    first.write_all(&frame(b"MSH|a")).await.unwrap();
    let mut answer = [0u8; 3];
    first.read_exact(&mut answer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = TcpStream::connect(address).await.unwrap();
    assert!(read_until_closed(&mut third).await.is_empty());
    assert!(handler.events.lock().unwrap().contains(&Event::Refused));
    first.write_all(&frame(b"MSH|b")).await.unwrap();
    first.shutdown().await.unwrap();
    let rest = read_until_closed(&mut first).await;
    assert!(rest.ends_with(&frame(b"second:MSH|b")), "the first connection still answers");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_timeout() {
    let (address, handler, _stop) = start(Limits { idle_timeout: Duration::from_millis(200), ..limits() }).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    assert!(handler.events.lock().unwrap().contains(&Event::IdleTimeout));
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (address, _handler, stop) = start(limits()).await;
    stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = match TcpStream::connect(address).await {
        Err(_) => true,
        Ok(mut stream) => read_until_closed(&mut stream).await.is_empty(),
    };
    assert!(refused);
}
