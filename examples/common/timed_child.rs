//! A peer tool as a child process that times work on request: it prints `ready` once set
//! up, then answers each line written to it with the seconds its work took (one number a
//! line). `scripts/peers/llama-step.cpp` and `scripts/peers/ggml-stream.c` speak it; the
//! examples that drive them take turns with quantbench's own work in one timeline.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct TimedChild {
    name: String,
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl TimedChild {
    /// Start `path` with `args` and wait for its `ready`; exits 2 naming `path` and
    /// `builder` (the script that builds it) when it cannot start, 1 when it says
    /// anything else first.
    pub fn start(path: &str, args: &[String], builder: &str) -> TimedChild {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                eprintln!("{path}: {e} ({builder} builds it)");
                std::process::exit(2);
            });
        let to = child.stdin.take().expect("the child's stdin");
        let mut from = BufReader::new(child.stdout.take().expect("the child's stdout"));
        let mut line = String::new();
        from.read_line(&mut line).expect("the child's first line");
        if line.trim() != "ready" {
            eprintln!("{path}: expected \"ready\", read {line:?}");
            std::process::exit(1);
        }
        TimedChild {
            name: path.to_string(),
            child,
            to,
            from,
        }
    }

    /// Send `request` and return the seconds the child answers with (finite, ≥ 0, or
    /// the process exits 1 naming what it read).
    pub fn seconds(&mut self, request: &str) -> f64 {
        writeln!(self.to, "{request}").expect("write to the child");
        let mut line = String::new();
        self.from.read_line(&mut line).expect("read from the child");
        match line.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => s,
            _ => {
                eprintln!("{} answered {line:?}, not a number of seconds", self.name);
                std::process::exit(1);
            }
        }
    }
}

impl Drop for TimedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
