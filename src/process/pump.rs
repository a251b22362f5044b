//! The per-process task: reads output and the keeper's exit record, assigns sequence numbers,
//! sends notifications in order, enforces the close grace, and finally reaps the keeper.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::events::{EventSink, OutputEvent};
use super::keeper::{EXIT_RECORD_LEN, ExitRecord};
use super::output::{ExitInfo, sandbox_denied};
use super::spawn::Stream;
use super::table::{Process, ProcessTable};
use crate::fdio::AsyncPipe;
use crate::protocol::process::{ClosedParams, ExitedParams, Usage};

/// Timing knobs of the pump.
#[derive(Debug, Clone, Copy)]
pub struct PumpConfig {
    /// How long to wait for output EOF after the main process exited before killing the tree.
    pub close_grace: Duration,
    /// How long a closed process stays readable.
    pub retain_exited: Duration,
    /// Kill the tree after this long (`timedOut`).
    pub wall_time: Option<Duration>,
    /// Kill the tree after this much output (`outputLimitExceeded`).
    pub max_output_bytes: Option<u64>,
}

/// Why the pump ended the tree itself.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    timed_out: bool,
    output_exceeded: bool,
}

/// How long `process/exited` waits for the keeper to exit after the program did (it exits at
/// once when the program left no descendant) before it reports `denialsComplete: false`.
const KEEPER_EXIT_WAIT: Duration = Duration::from_millis(20);

/// Size of one read from an output fd once a process has filled a smaller read. One buffer per
/// process serves both streams (memory for many concurrent processes stays bounded); pipes are
/// enlarged to match.
const READ_CHUNK: usize = 128 * 1024;

/// The first read buffer: most processes print little, and a 128 KiB buffer per process
/// costs a zeroing (or an mmap) on every spawn.
const FIRST_READ: usize = 16 * 1024;

/// The pump's read buffer: [`FIRST_READ`] bytes until a read fills it, then [`READ_CHUNK`].
struct ReadBuf(Vec<u8>);

impl ReadBuf {
    fn space(&mut self) -> &mut [u8] {
        if self.0.is_empty() {
            self.0 = vec![0; FIRST_READ];
        }
        &mut self.0
    }

    /// Call after the `n` bytes just read were used.
    fn used(&mut self, n: usize) {
        if n == self.0.len() && n < READ_CHUNK {
            self.0 = vec![0; READ_CHUNK];
        }
    }
}

async fn ready(pipe: Option<&Arc<AsyncPipe>>) -> std::io::Result<()> {
    match pipe {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

/// What one readiness event produced.
enum Read {
    Data(usize),
    Spurious,
    Eof,
}

fn read_now(pipe: Option<&Arc<AsyncPipe>>, buf: &mut [u8]) -> Read {
    match pipe.map(|p| p.try_read(buf)) {
        Some(Ok(Some(0))) | Some(Err(_)) | None => Read::Eof,
        Some(Ok(Some(n))) => Read::Data(n),
        Some(Ok(None)) => Read::Spurious,
    }
}

/// Everything the pump needs; built by `process/start`.
pub struct Pump<S: EventSink> {
    /// The process whose state this pump drives.
    pub process: Arc<Process>,
    /// Output fds (one or two).
    pub outputs: Vec<(Stream, Arc<AsyncPipe>)>,
    /// Keeper status pipe (the exit record comes next).
    pub status: pipe::Receiver,
    /// Where events go.
    pub sink: S,
    /// Fired once the `process/start` response has been queued: no notification may precede it.
    pub gate: oneshot::Receiver<()>,
    /// The table to remove the process from after retention.
    pub table: Weak<ProcessTable>,
    /// Timings.
    pub config: PumpConfig,
    /// When the process was spawned (for `usage.wallMs`).
    pub started: Instant,
}

impl<S: EventSink> Pump<S> {
    /// Runs to the end of the process's life.
    pub async fn run(self) {
        let Pump {
            process,
            outputs,
            status,
            sink,
            gate,
            table,
            config,
            started,
        } = self;
        let _ = gate.await;
        // The keeper's exit record, read in this loop (no task of its own): partial reads
        // accumulate here; EOF before a whole record means the keeper died.
        let mut record = [0u8; EXIT_RECORD_LEN];
        let mut record_len = 0;

        let mut open = [!outputs.is_empty(), outputs.len() > 1];
        let (stream0, pipe0) = (outputs.first().map(|o| o.0), outputs.first().map(|o| &o.1));
        let (stream1, pipe1) = (outputs.get(1).map(|o| o.0), outputs.get(1).map(|o| &o.1));
        let mut buf = ReadBuf(Vec::new());
        let mut exited = false;
        let mut grace_fired = 0;
        let far = Duration::from_secs(86400 * 365);
        let grace = tokio::time::sleep(far);
        tokio::pin!(grace);
        let wall = tokio::time::sleep(config.wall_time.unwrap_or(far));
        tokio::pin!(wall);
        let mut outcome = Outcome::default();
        let mut output_total: u64 = 0;
        // How much of an n-byte chunk fits in the output limit.
        let budget = |total: &mut u64, n: usize| -> usize {
            match config.max_output_bytes {
                None => n,
                Some(max) => {
                    let allowed = max.saturating_sub(*total).min(n as u64) as usize;
                    *total += n as u64;
                    allowed
                }
            }
        };

        while !(exited && !open[0] && !open[1]) {
            tokio::select! {
                biased;
                r = ready(pipe0), if open[0] => match r.map(|_| read_now(pipe0, buf.space())) {
                    Ok(Read::Data(n)) => {
                        let keep = budget(&mut output_total, n);
                        if keep > 0 {
                            emit_output(&process, &sink, stream0.unwrap_or(Stream::Stdout), &buf.0[..keep]).await;
                        }
                        buf.used(n);
                        if keep < n && !outcome.output_exceeded {
                            outcome.output_exceeded = true;
                            process.kill_tree();
                        }
                    }
                    Ok(Read::Spurious) => {}
                    _ => open[0] = false,
                },
                r = ready(pipe1), if open[1] => match r.map(|_| read_now(pipe1, buf.space())) {
                    Ok(Read::Data(n)) => {
                        let keep = budget(&mut output_total, n);
                        if keep > 0 {
                            emit_output(&process, &sink, stream1.unwrap_or(Stream::Stderr), &buf.0[..keep]).await;
                        }
                        buf.used(n);
                        if keep < n && !outcome.output_exceeded {
                            outcome.output_exceeded = true;
                            process.kill_tree();
                        }
                    }
                    Ok(Read::Spurious) => {}
                    _ => open[1] = false,
                },
                _ = &mut wall, if !exited && config.wall_time.is_some() => {
                    outcome.timed_out = true;
                    process.kill_tree();
                    wall.as_mut().reset(tokio::time::Instant::now() + far);
                },
                r = status.readable(), if !exited => {
                    let rec = match r.and_then(|_| status.try_read(&mut record[record_len..])) {
                        Ok(0) => None,
                        Ok(n) => {
                            record_len += n;
                            if record_len < EXIT_RECORD_LEN {
                                continue;
                            }
                            Some(ExitRecord::decode(&record))
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => None,
                    };
                    exited = true;
                    // Output the program wrote before exiting goes out before `exited`, even
                    // if its readiness has not reached us yet: drain what is readable now.
                    for (i, (pipe, stream)) in [(pipe0, stream0), (pipe1, stream1)].into_iter().enumerate() {
                        while open[i] {
                            match read_now(pipe, buf.space()) {
                                Read::Data(n) => {
                                    let keep = budget(&mut output_total, n);
                                    if keep > 0 {
                                        emit_output(&process, &sink, stream.unwrap_or(Stream::Stdout), &buf.0[..keep]).await;
                                    }
                                    buf.used(n);
                                    if keep < n {
                                        outcome.output_exceeded = true;
                                        break;
                                    }
                                }
                                Read::Spurious => break,
                                Read::Eof => open[i] = false,
                            }
                        }
                    }
                    // The denial list is final when nothing of the tree is left: the keeper
                    // exits right after the program when it has no other child, so give it a
                    // moment when no descendant holds the output open.
                    let tree_done = !open[0] && !open[1]
                        && tokio::time::timeout(KEEPER_EXIT_WAIT, process.keeper().wait())
                            .await
                            .is_ok();
                    emit_exited(&process, &sink, rec, started, outcome, &config, tree_done).await;
                    grace.as_mut().reset(tokio::time::Instant::now() + config.close_grace);
                },
                _ = &mut grace, if exited => {
                    grace_fired += 1;
                    if grace_fired == 1 {
                        // Descendants still hold the output open: end the whole tree.
                        process.kill_tree();
                        grace.as_mut().reset(tokio::time::Instant::now() + config.close_grace);
                    } else {
                        // Something outside the tree holds the pipe: stop waiting for it.
                        open = [false, false];
                    }
                },
            }
        }
        drop(outputs);
        let seq = {
            let mut st = process.state();
            let seq = st.allocate_seq();
            st.closed = true;
            seq
        };
        process.notify_changed();
        sink.closed(ClosedParams {
            process_id: process.id.clone(),
            seq,
        })
        .await;
        // A process's life bounds its tree: whatever is left (daemons that closed their
        // output) is killed now, then the keeper exits and is reaped.
        process.kill_tree();
        let _ = process.keeper().wait().await;
        super::landlock_audit::settle(&process).await;
        process.state().tree_done = true;
        process.mark_finished();
        tokio::time::sleep(config.retain_exited).await;
        if let Some(table) = table.upgrade() {
            table.remove(&process);
        }
    }
}

async fn emit_output<S: EventSink>(process: &Process, sink: &S, stream: Stream, data: &[u8]) {
    if process.confined && stream != Stream::Stdout {
        process.scan_error_output(data);
    }
    crate::metrics::output(stream.metric(), data.len());
    let seq = process.state().push_output(stream, data.to_vec());
    process.notify_changed();
    sink.output(OutputEvent {
        process_id: &process.id,
        seq,
        stream,
        data,
    })
    .await;
}

async fn emit_exited<S: EventSink>(
    process: &Process,
    sink: &S,
    rec: Option<ExitRecord>,
    started: Instant,
    outcome: Outcome,
    config: &PumpConfig,
    tree_done: bool,
) {
    // No record means the keeper itself was killed (only possible for unconfined processes);
    // report it as a kill.
    let info = match rec {
        Some(r) => ExitInfo::from_wait_status(r.wait_status),
        None => ExitInfo::from_wait_status(libc::SIGKILL),
    };
    let mut usage = Usage {
        wall_ms: started.elapsed().as_millis() as u64,
        user_ms: rec.map(|r| (r.user_us / 1000) as u64).unwrap_or(0),
        sys_ms: rec.map(|r| (r.sys_us / 1000) as u64).unwrap_or(0),
        max_rss_kb: rec.map(|r| r.max_rss_kb as u64).unwrap_or(0),
    };
    // A cgroup measures the whole tree, including descendants still running.
    if let Some(t) = process.tree_usage() {
        usage.user_ms = usage.user_ms.max(t.user_us / 1000);
        usage.sys_ms = usage.sys_ms.max(t.sys_us / 1000);
        if let Some(peak) = t.peak_bytes {
            usage.max_rss_kb = usage.max_rss_kb.max(peak / 1024);
        }
    }
    if tree_done {
        // Landlock audit records of the tree may still be on their way.
        super::landlock_audit::settle(process).await;
    }
    let (seq, denied, denials) = {
        let mut st = process.state();
        let seq = st.allocate_seq();
        st.sandbox_denied = sandbox_denied(
            process.confined,
            st.has_denial_evidence(),
            &info,
            outcome.timed_out || outcome.output_exceeded,
        );
        st.exit = Some(info.clone());
        st.tree_done |= tree_done;
        (seq, st.sandbox_denied, st.denials.report(st.tree_done))
    };
    process.notify_changed();
    sink.exited(ExitedParams {
        process_id: process.id.clone(),
        seq,
        exit_code: info.code,
        signal: info.signal,
        sandbox_denied: denied,
        usage,
        denials,
        timed_out: config.wall_time.map(|_| outcome.timed_out),
        output_limit_exceeded: config.max_output_bytes.map(|_| outcome.output_exceeded),
    })
    .await;
}
