//! gen_server: call, cast, info, timeout, stop, names and statistics.

use std::time::Duration;

use nodetrace_agent::gen_server::{self, CallError, GenServer, StartError, StopReason};
use nodetrace_agent::{Pid, sys, whereis};
use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct Stack {
    items: Vec<u32>,
    stopped: Option<oneshot::Sender<StopReason>>,
}

#[derive(Debug)]
enum Call {
    Pop,
    Len,
    Sleep(Duration),
    Caller,
}

#[derive(Debug, PartialEq)]
enum Reply {
    Item(Option<u32>),
    Len(usize),
    Slept,
    Caller(Pid),
}

impl GenServer for Stack {
    type Call = Call;
    type Cast = u32;
    type Info = u32;
    type Reply = Reply;

    async fn handle_call(&mut self, request: Call, from: Pid) -> Reply {
        match request {
            Call::Pop => Reply::Item(self.items.pop()),
            Call::Len => Reply::Len(self.items.len()),
            Call::Sleep(d) => {
                tokio::time::sleep(d).await;
                Reply::Slept
            }
            Call::Caller => Reply::Caller(from),
        }
    }

    async fn handle_cast(&mut self, item: u32) {
        self.items.push(item);
    }

    async fn handle_info(&mut self, item: u32) {
        self.items.push(item * 10);
    }

    fn terminate(&mut self, reason: StopReason) {
        if let Some(tx) = self.stopped.take() {
            let _ = tx.send(reason);
        }
    }
}

#[derive(Debug)]
struct Refuses;

impl GenServer for Refuses {
    type Call = ();
    type Cast = ();
    type Info = ();
    type Reply = ();

    async fn init(&mut self) -> Result<(), String> {
        Err("no database".into())
    }

    async fn handle_call(&mut self, _: (), _: Pid) {}
}

#[tokio::test]
async fn calls_and_casts_are_handled_in_order() {
    let server = gen_server::start(Stack::default()).await.unwrap();
    server.cast(1).unwrap();
    server.cast(2).unwrap();
    server.send_info(3).unwrap();
    assert_eq!(server.call(Call::Len).await, Ok(Reply::Len(3)));
    assert_eq!(server.call(Call::Pop).await, Ok(Reply::Item(Some(30))));
    assert_eq!(server.call(Call::Pop).await, Ok(Reply::Item(Some(2))));
    assert_eq!(
        server.call(Call::Caller).await,
        Ok(Reply::Caller(nodetrace_agent::self_pid()))
    );

    let stats = sys::statistics(server.pid()).unwrap();
    assert_eq!(
        (stats.messages_in, stats.handled, stats.mailbox_len),
        (7, 7, 0)
    );
    assert_eq!(stats.messages_out, Some(4), "four replies");
}

#[tokio::test]
async fn a_call_times_out_and_the_server_carries_on() {
    let server = gen_server::start(Stack::default()).await.unwrap();
    let err = server
        .call_timeout(
            Call::Sleep(Duration::from_millis(300)),
            Duration::from_millis(20),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            pid: server.pid(),
            timeout: Duration::from_millis(20)
        }
    );
    assert!(
        err.to_string().contains("did not reply within 20ms"),
        "{err}"
    );
    assert_eq!(server.call(Call::Len).await, Ok(Reply::Len(0)));
}

#[tokio::test]
async fn names_register_and_stop_runs_terminate_and_unregisters() {
    let (tx, stopped) = oneshot::channel();
    let stack = Stack {
        stopped: Some(tx),
        ..Stack::default()
    };
    let server = gen_server::start_named("stack_server", stack)
        .await
        .unwrap();
    assert_eq!(whereis("stack_server"), Some(server.pid()));
    assert!(matches!(
        gen_server::start_named("stack_server", Stack::default()).await,
        Err(StartError::AlreadyStarted(_))
    ));
    assert!(
        sys::get_state("stack_server")
            .await
            .unwrap()
            .starts_with("Stack { items: []")
    );

    server.stop().await.unwrap();
    assert_eq!(stopped.await, Ok(StopReason::Normal));
    assert_eq!(whereis("stack_server"), None);
    assert_eq!(
        server.call(Call::Len).await,
        Err(CallError::NoProc(server.pid()))
    );
    assert!(sys::statistics("stack_server").is_err());
}

#[tokio::test]
async fn a_failing_init_is_returned_and_leaves_nothing_behind() {
    let err = gen_server::start_named("refuses", Refuses)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "init failed: no database");
    assert_eq!(whereis("refuses"), None);
}

#[test]
fn starting_outside_a_runtime_says_what_to_do() {
    let err = futures_lite_block_on(gen_server::start(Stack::default())).unwrap_err();
    assert!(matches!(err, StartError::NoRuntime), "{err}");
}

/// Polls a future to completion without a tokio runtime.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}
