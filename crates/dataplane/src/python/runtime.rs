//! The core's tokio runtime. Several workers: the multi-thread scheduler. One worker: the
//! current-thread scheduler, driven by a thread of its own ("gateway-core"). With one worker the
//! multi-thread scheduler only adds cost: a task woken by another runs next (its LIFO slot), so
//! the upstream connection is flushed once per request, and its queues are made for stealing.
//! The current-thread scheduler runs woken tasks in the order they were woken: the requests that
//! arrived together are all handed to the upstream connection before it writes them, in one
//! system call.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

pub struct CoreRuntime {
    runtime: Arc<Runtime>,
    /// One worker: the thread driving the scheduler, and what ends its drive.
    driver: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
}

impl CoreRuntime {
    /// `threads`: 0 for one per core.
    pub fn start(threads: usize) -> std::io::Result<CoreRuntime> {
        if threads != 1 {
            let mut builder = Builder::new_multi_thread();
            builder.enable_all().thread_name("gateway-core");
            if threads > 0 {
                builder.worker_threads(threads);
            }
            return Ok(CoreRuntime {
                runtime: Arc::new(builder.build()?),
                driver: None,
            });
        }
        let runtime = Arc::new(
            Builder::new_current_thread()
                .enable_all()
                .thread_name("gateway-core-blocking")
                .build()?,
        );
        let (stop, stopped) = oneshot::channel();
        let driving = runtime.clone();
        let thread = std::thread::Builder::new()
            .name("gateway-core".into())
            .spawn(move || {
                let _ = driving.block_on(stopped);
            })?;
        Ok(CoreRuntime {
            runtime,
            driver: Some((thread, stop)),
        })
    }

    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// Run `future` to its end on the calling thread (the runtime's tasks go on meanwhile).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn workers(&self) -> usize {
        self.runtime.metrics().num_workers()
    }

    /// Stop driving and drop the runtime, waiting up to `timeout` for its blocking tasks.
    pub fn shutdown(self, timeout: Duration) {
        if let Some((thread, stop)) = self.driver {
            let _ = stop.send(());
            let _ = thread.join();
        }
        match Arc::try_unwrap(self.runtime) {
            Ok(runtime) => runtime.shutdown_timeout(timeout),
            Err(_) => eprintln!("gateway core: the runtime is still shared at shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With one worker, tasks run while no caller waits in block_on (the driver thread runs them),
    /// and a caller's block_on on another thread still sees timers and I/O.
    #[test]
    fn one_worker_runs_tasks_between_callers() {
        let runtime = CoreRuntime::start(1).expect("a runtime");
        assert_eq!(runtime.workers(), 1);
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime.handle().spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sender.send(7).expect("the receiver waits");
        });
        assert_eq!(receiver.recv_timeout(Duration::from_secs(5)), Ok(7));
        let slept = runtime.block_on(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            3
        });
        assert_eq!(slept, 3);
        let handle = runtime.handle().clone();
        let from_another = std::thread::spawn(move || {
            handle.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                listener.local_addr()
            })
        });
        assert!(from_another.join().expect("no panic").is_ok());
        runtime.shutdown(Duration::from_secs(1));
    }

    #[test]
    fn several_workers_use_the_multi_thread_scheduler() {
        let runtime = CoreRuntime::start(2).expect("a runtime");
        assert_eq!(runtime.workers(), 2);
        assert_eq!(runtime.block_on(async { 5 }), 5);
        runtime.shutdown(Duration::from_secs(1));
    }
}
