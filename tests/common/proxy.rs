//! A TCP proxy on loopback that can be taken down and brought back on the same port: the
//! gateway sees its target go away (connections refused, open ones cut) while the real server
//! behind keeps its data.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    upstream: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
    /// Connections opened before this epoch are frozen.
    epoch: Arc<AtomicU64>,
    /// Milliseconds every answer (server to client) is held before it is passed on.
    delay_ms: Arc<AtomicU64>,
}

/// Forwards bytes until either side closes. A connection of an epoch the proxy has moved past
/// is frozen: what arrives is swallowed, nothing is answered, nothing is closed (a peer that
/// vanished without a word, as behind a dead firewall).
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    born: u64,
    epoch: Arc<AtomicU64>,
    delay_ms: Option<Arc<AtomicU64>>,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if epoch.load(Ordering::SeqCst) > born {
                    continue;
                }
                let delay = delay_ms.as_ref().map_or(0, |d| d.load(Ordering::SeqCst));
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        // Bound at once (a port picked first and bound later could be taken in between by a
        // test running beside).
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = Proxy {
            port,
            upstream,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            acceptor: None,
            epoch: Arc::new(AtomicU64::new(0)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        p.serve(listener);
        p
    }

    /// Listens again (same port) and forwards.
    pub fn resume(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, upstream) = (self.up.clone(), self.conns.clone(), self.upstream);
        let epoch = self.epoch.clone();
        let delay = self.delay_ms.clone();
        self.acceptor = Some(std::thread::spawn(move || {
            // Bounded by the flag: the loop ends when the proxy is paused or dropped.
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let born = epoch.load(Ordering::SeqCst);
                        let (e1, e2) = (epoch.clone(), epoch.clone());
                        let d = delay.clone();
                        std::thread::spawn(move || pipe(client, server, born, e1, None));
                        std::thread::spawn(move || pipe(s2, c2, born, e2, Some(d)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// Holds every answer `ms` milliseconds before passing it on (a slow server or link).
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Freezes the open connections (they stay open but carry nothing); new ones work.
    pub fn freeze(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops listening (new connections are refused) and cuts the open ones.
    pub fn pause(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.pause();
    }
}
