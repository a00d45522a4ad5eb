//! What the HTTP load benches share: the release `scimd serve` as a child process, and
//! percentiles of their latencies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server process; killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the release server on `url` and waits until it accepts connections.
pub fn serve(url: &str) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    // `SERVER_BENCH_BINARY` serves with another `scimd` build (a copy kept for an A/B comparison).
    let binary = std::env::var("SERVER_BENCH_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_scimd").into());
    let child = Command::new(binary)
        .args(["--database-url", url, "serve", "--bind", &bind])
        .env("RUST_LOG", "warn")
        // One key or session drives the whole load; the per-key limit would measure itself.
        .env("SCIMD_RATE_LIMIT__REQUESTS_PER_SECOND", "0")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&bind).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://{bind}"))
}

/// The `p` quantile (0..=1) of latencies in µs, sorted, in ms.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}
