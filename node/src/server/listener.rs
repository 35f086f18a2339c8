//! SHELL. The TCP accept loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Shared;

/// Accepts connections until the listener fails for good; each gets its own task holding a
/// clone of `done` so shutdown can wait for all of them.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, done: mpsc::Sender<()>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let task = super::connection::Task::open(shared.clone(), stream, peer);
                tokio::spawn(task.run(done.clone()));
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
