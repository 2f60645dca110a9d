//! Starting one `redis-server --sentinel` process.

use std::{
    fs::{self, File},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use super::super::TestkitError;
use super::super::cluster::{
    LOG_FILE, Proc, START_ATTEMPTS, free_port, kill_and_reap, reset_dir, wait_ready,
};
use super::{DOWN_AFTER, FAILOVER_TIMEOUT, Sentinel};

/// Starts one Sentinel monitoring `master` at `primary_port`, on a fresh port (retried a
/// few times when the port was taken meanwhile).
pub(super) async fn launch_sentinel(
    bin: &Path,
    dir: &Path,
    master: &str,
    primary_port: u16,
) -> Result<Sentinel, TestkitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        reset_dir(dir)?;
        let port = free_port()?;
        let config = dir.join("sentinel.conf");
        let ms = |d: Duration| d.as_millis().to_string();
        fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {master} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {master} {down}\n\
                 sentinel failover-timeout {master} {failover}\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.display(),
                down = ms(DOWN_AFTER),
                failover = ms(FAILOVER_TIMEOUT),
            ),
        )?;
        let log = File::create(dir.join(LOG_FILE))?;
        let mut cmd = Command::new(bin);
        cmd.arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut proc = Proc(cmd.spawn().map_err(TestkitError::Spawn)?);
        match wait_ready(&mut proc, port, Duration::from_secs(10), dir).await {
            Ok(()) => return Ok(Sentinel { port, proc }),
            Err(TestkitError::Exited { .. }) if attempt < START_ATTEMPTS => {
                kill_and_reap(proc).await;
            }
            Err(e) => return Err(e),
        }
    }
}
