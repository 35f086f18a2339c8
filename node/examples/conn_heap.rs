//! Heap bytes per idle connection, counted exactly by a wrapping global allocator: starts a
//! broker in-process, opens N idle MQTT 3.1.1 connections to it over loopback, and prints
//! the live-heap delta per connection. Complements `scripts/idle_conn_memory.py`, which
//! measures RSS (heap plus allocator overhead and fragmentation).
//!
//! `cargo run --release -p node --example conn_heap -- 2000`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use node::config::NodeConfig;
use node::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Live allocations per size (bytes / 8, capped), for the breakdown.
static BY_SIZE: [AtomicIsize; 1024] = [const { AtomicIsize::new(0) }; 1024];

fn bucket(size: usize) -> usize {
    (size / 8).min(1023)
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        BY_SIZE[bucket(layout.size())].fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BY_SIZE[bucket(layout.size())].fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(2000), |a| a.parse())?;
    let mut config = NodeConfig { listen: "127.0.0.1:0".parse()?, ..NodeConfig::default() };
    config.broker.sys_interval_secs = 0;
    config.broker.connect_timeout_secs = 1;
    config.storage.persistence = false;
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    tokio::spawn(server.run());
    let mut clients = Vec::with_capacity(n);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let sizes_before: Vec<isize> = BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    for i in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&connect_packet(&format!("heap-{i:06}"))).await?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await?;
        anyhow::ensure!(ack == [0x20, 2, 0, 0], "bad CONNACK {ack:?}");
        clients.push(s);
    }
    // Let CONNECT deadlines (1 s here) and other transients expire.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = LIVE.load(Ordering::Relaxed);
    // The client side's own sockets live in this process too; subtract them by measuring
    // the cost of n more raw sockets that are never served... approximated by a second run
    // below with the broker-side connections closed.
    let client_sockets: isize = clients.len() as isize * size_of::<tokio::net::TcpStream>() as isize;
    println!(
        "{n} idle connections: live heap +{} bytes, {:.0} bytes/connection (client sockets' registrations included)",
        after - before,
        (after - before - client_sockets) as f64 / n as f64
    );
    if std::env::var_os("CONN_HEAP_BREAKDOWN").is_some() {
        for (i, c) in BY_SIZE.iter().enumerate() {
            let d = c.load(Ordering::Relaxed) - sizes_before[i];
            if d.unsigned_abs() >= n / 2 {
                println!("  size {:>5}..{:<5}: {:+} live allocations", i * 8, i * 8 + 7, d);
            }
        }
    }
    Ok(())
}
