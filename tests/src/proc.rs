//! One process a test starts: stopped by pid when dropped (also when paused), with its
//! output in a log file whose end goes into failure messages.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::poll;

pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The pid of the current (or last) run.
    pub pid: u32,
}

impl Proc {
    /// Starts `program args…`, appending its output to `log`.
    pub fn start(name: &str, program: &Path, args: Vec<OsString>, env: Vec<(String, String)>, log: PathBuf) -> Self {
        let mut proc = Proc { name: name.into(), program: program.into(), args, env, log, child: None, pid: 0 };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("a log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            // An error a command returns prints without a backtrace (a panic still has one):
            // the end of its log, which goes into failure messages, then holds its message.
            // (Loop run 63: a controller's error was 30 lines of backtrace, its cause cut off.)
            .env("RUST_LIB_BACKTRACE", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({}): {e}", self.name, self.program.display()));
        self.pid = child.id();
        self.child = Some(child);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts it again with the same arguments (after it was stopped or killed).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Whether it has exited (reaping it if so); `Some(status)` once it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal(Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        match poll(Duration::from_secs(30), || child.try_wait().ok().flatten()) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within 30 s of SIGTERM\n{}", self.name, self.log_tail(40));
            }
        }
    }

    /// SIGSTOP: frozen, as a process stalled by the machine would be.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// The last `lines` lines of its log, headed by its name.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        format!("--- end of {}'s log ---\n{}", self.name, all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
