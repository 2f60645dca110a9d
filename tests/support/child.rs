//! Child processes of a test binary (the same binary re-executed to run one helper test),
//! killed by their PID and reaped, also when the test fails.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A child process of this test binary, `SIGKILL`ed (by its PID) and reaped on drop.
pub struct ChildProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Held open while the child should live: it exits when this closes. (`Child::wait`
    /// would close it, so it is taken out of `child`.)
    _stdin: Option<ChildStdin>,
}

impl ChildProcess {
    /// Re-executes this test binary to run only the test `helper` (an `#[ignore]`d test that
    /// does nothing unless `env` is set) with the given environment.
    pub fn spawn_helper(helper: &str, env: &[(&str, String)]) -> ChildProcess {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut command = Command::new(exe);
        command
            .args([
                helper,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // The child exits when its stdin closes: it never outlives us for long, even
            // if we are killed ourselves.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn a child test process");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        ChildProcess {
            child,
            lines: BufReader::new(stdout).lines(),
            _stdin: stdin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child still running")
    }

    /// Reads stdout lines until one contains `marker` (at most 1000 lines, within
    /// `deadline`), and returns it from the marker on (the test harness may have printed
    /// `test name ... ` before it on the same line).
    pub async fn wait_for_line(&mut self, marker: &str, deadline: Duration) -> String {
        let read = async {
            for _ in 0..1_000 {
                match self.lines.next_line().await {
                    Ok(Some(line)) if line.contains(marker) => {
                        return line[line.find(marker).unwrap_or(0)..].to_owned();
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("child exited before printing {marker:?}"),
                    Err(e) => panic!("reading the child's output: {e}"),
                }
            }
            panic!("child never printed {marker:?}")
        };
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or_else(|_| panic!("child did not print {marker:?} within {deadline:?}"))
    }

    /// `SIGKILL`s the child (`Child::start_kill` signals its PID) and reaps it (bounded).
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the child");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the killed child is reaped")
            .expect("wait for the child");
        assert!(!status.success(), "the child was killed, not exited");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // kill_on_drop signals it; also try to reap it here (bounded, no runtime needed).
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// In a child helper: exit as soon as the parent closes our stdin (or dies).
pub fn exit_when_parent_goes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}
