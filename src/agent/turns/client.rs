//! The runner's end of the link to a turn's client: bounded, never blocking the turn, and
//! with a stall limit.
//!
//! The client (an HTTP response) takes events at its own pace, and a client that stops
//! reading must cost neither unbounded memory nor the turn's progress. So the channel holds
//! at most [`CAPACITY`] events; text the client has no room for is joined into one pending
//! piece (bounded by the answer, which the model call bounds); and when pending text has
//! waited [`ClientLink::stall`] without the client taking anything, the client is dropped
//! ([`TurnError::ClientStalled`]) and the turn ends as interrupted.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{TurnError, TurnEvent};

/// Events buffered between a turn and its client.
pub const CAPACITY: usize = 64;

/// The runner's end; the client's is a [`super::TurnHandle`].
pub(super) struct ClientLink {
    events: mpsc::Sender<TurnEvent>,
    /// Text the client had no room for yet, joined.
    pending: String,
    /// Since when `pending` has been waiting for room.
    waiting_since: Option<Instant>,
    stall: Duration,
}

impl ClientLink {
    pub(super) fn channel(stall: Duration) -> (ClientLink, mpsc::Receiver<TurnEvent>) {
        let (events, receiver) = mpsc::channel(CAPACITY);
        let link = ClientLink {
            events,
            pending: String::new(),
            waiting_since: None,
            stall,
        };
        (link, receiver)
    }

    /// Passes `piece` on now if the client has room, else keeps it with the pending text.
    pub(super) fn text(&mut self, piece: String) {
        if !self.pending.is_empty() {
            self.pending.push_str(&piece);
            return;
        }
        match self.events.try_send(TurnEvent::Text(piece)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(TurnEvent::Text(piece))) => {
                self.pending = piece;
                self.waiting_since = Some(Instant::now());
            }
            // The client is gone: its handle's drop cancels the turn.
            Err(_) => {}
        }
    }

    /// Hands the pending text over as soon as the client has room; fails if the client takes
    /// nothing for the stall limit. Never resolves while nothing is pending, so it can sit in
    /// a `select!` beside the agent's events. Cancel-safe: nothing is lost if dropped.
    pub(super) async fn deliver(&mut self) -> Result<(), TurnError> {
        let Some(since) = self.waiting_since.filter(|_| !self.pending.is_empty()) else {
            return std::future::pending().await;
        };
        tokio::select! {
            // Room first: a client that has it needs no stall timer set (and cleared).
            biased;
            room = self.events.reserve() => {
                let text = std::mem::take(&mut self.pending);
                self.waiting_since = None;
                // Without room the client is gone, and its handle's drop cancels the turn.
                if let Ok(permit) = room {
                    permit.send(TurnEvent::Text(text));
                }
                Ok(())
            }
            _ = tokio::time::sleep_until(since + self.stall) => {
                Err(TurnError::ClientStalled { after: self.stall })
            }
        }
    }

    /// Hands over all pending text (see [`ClientLink::deliver`]).
    pub(super) async fn deliver_all(&mut self) -> Result<(), TurnError> {
        while !self.pending.is_empty() {
            self.deliver().await?;
        }
        Ok(())
    }

    /// Sends the turn's last event, after everything sent before it. Without room it waits,
    /// at most the stall limit, in a task of its own: the turn is over and its thread must
    /// not wait for a slow client.
    pub(super) fn finish(self, event: TurnEvent) {
        let event = match self.events.try_send(event) {
            Err(mpsc::error::TrySendError::Full(event)) => event,
            // Sent, or the client is gone.
            _ => return,
        };
        let (events, stall) = (self.events, self.stall);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(stall, events.send(event)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(events: &mut mpsc::Receiver<TurnEvent>) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            match event {
                TurnEvent::Text(text) => seen.push(text),
                other => panic!("{other:?}"),
            }
        }
        seen
    }

    #[tokio::test]
    async fn text_without_room_is_joined_and_delivered_when_the_client_takes_some() {
        let (mut link, mut events) = ClientLink::channel(Duration::from_secs(30));
        for i in 0..CAPACITY + 3 {
            link.text(format!("{i} "));
        }
        assert_eq!(link.pending, "64 65 66 ", "three pieces wait, joined");
        assert!(matches!(events.recv().await, Some(TurnEvent::Text(t)) if t == "0 "));
        link.deliver().await.unwrap();
        let seen = texts(&mut events);
        assert_eq!(seen.len(), CAPACITY, "63 queued pieces and the joined one");
        assert_eq!(seen.last().unwrap(), "64 65 66 ");
    }

    #[tokio::test]
    async fn the_last_event_waits_for_room_without_holding_the_turn() {
        let (mut link, mut events) = ClientLink::channel(Duration::from_secs(30));
        for _ in 0..CAPACITY {
            link.text("x".into());
        }
        link.finish(TurnEvent::Failed(TurnError::Interrupted));
        let mut received = 0;
        while let Some(event) = events.recv().await {
            received += 1;
            if let TurnEvent::Failed(_) = event {
                break;
            }
        }
        assert_eq!(
            received,
            CAPACITY + 1,
            "the last event comes after the text"
        );
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_for_the_stall_limit_is_dropped() {
        let stall = Duration::from_millis(200);
        let (mut link, _events) = ClientLink::channel(stall);
        for _ in 0..=CAPACITY {
            link.text("x".into());
        }
        let started = Instant::now();
        let stalled = link.deliver_all().await.unwrap_err();
        assert!(
            matches!(stalled, TurnError::ClientStalled { .. }),
            "{stalled}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= stall && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }
}
