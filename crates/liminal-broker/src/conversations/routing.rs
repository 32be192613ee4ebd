//! Routing of conversations: the registry of remote workers by subject,
//! and the rule that picks between an in-process responder, remote
//! workers and the built-in fallback.
//!
//! The rule: with `prefer = "in_process"` (the default) a subject's
//! in-process responder wins and remote workers serve only subjects
//! without one; with `prefer = "remote"` registered workers win. Either
//! way the built-in echo responder serves a subject that has neither,
//! unless `unknown_subject = "reject"`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use ractor::{ActorRef, ActorStatus};

use crate::config::{ConversationsConfig, ResponderPreference, UnknownSubjectPolicy};
use crate::connections::connection::ConnectionMsg;
use crate::conversations::responder::{EchoResponder, ResponderFactory, ResponderRegistry};
use crate::outbox::Outbox;

/// A connection registered as a worker for a subject.
#[derive(Debug, Clone)]
pub(crate) struct WorkerEntry {
    pub connection_id: u64,
    pub connection: ActorRef<ConnectionMsg>,
    pub outbox: Arc<Outbox>,
}

impl WorkerEntry {
    fn is_alive(&self) -> bool {
        self.connection.get_status() == ActorStatus::Running && !self.outbox.is_closing()
    }
}

#[derive(Debug, Default)]
struct SubjectWorkers {
    workers: Vec<WorkerEntry>,
    /// Index of the worker that gets the next conversation.
    next: usize,
}

/// Remote workers by subject. Connections add and remove their own
/// registrations; conversations pick from it round-robin.
#[derive(Debug, Default)]
pub(crate) struct WorkerRegistry {
    subjects: Mutex<HashMap<String, SubjectWorkers>>,
}

impl WorkerRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubjectWorkers>> {
        // Each mutation is a single push, retain or index update.
        self.subjects.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a worker; registering the same connection twice for a subject
    /// keeps one entry.
    pub fn register(&self, subject: &str, worker: WorkerEntry) {
        let mut subjects = self.lock();
        let entry = subjects.entry(subject.to_owned()).or_default();
        if !entry.workers.iter().any(|known| known.connection_id == worker.connection_id) {
            entry.workers.push(worker);
        }
    }

    /// Removes a connection's registration for one subject.
    pub fn unregister(&self, subject: &str, connection_id: u64) {
        let mut subjects = self.lock();
        if let Some(entry) = subjects.get_mut(subject) {
            entry.workers.retain(|worker| worker.connection_id != connection_id);
            if entry.workers.is_empty() {
                subjects.remove(subject);
            }
        }
    }

    /// Returns the next live worker for `subject`, round-robin. Dead entries
    /// (a connection that stopped before it unregistered) are removed.
    pub fn pick(&self, subject: &str) -> Option<WorkerEntry> {
        let mut subjects = self.lock();
        let entry = subjects.get_mut(subject)?;
        entry.workers.retain(WorkerEntry::is_alive);
        if entry.workers.is_empty() {
            subjects.remove(subject);
            return None;
        }
        let index = entry.next % entry.workers.len();
        entry.next = index + 1;
        Some(entry.workers[index].clone())
    }
}

/// The backend of one participant.
#[derive(Clone)]
pub(crate) enum Route {
    InProcess(Arc<dyn ResponderFactory>),
    Remote(WorkerEntry),
}

impl Route {
    /// Describes the route for logs.
    pub fn describe(&self) -> String {
        match self {
            Route::InProcess(_) => "in_process".to_owned(),
            Route::Remote(worker) => format!("remote worker on connection {}", worker.connection_id),
        }
    }
}

/// Everything needed to choose a route; shared by the conversations
/// supervisor, conversation actors (for restarts) and connections.
pub(crate) struct Routing {
    pub config: ConversationsConfig,
    pub responders: ResponderRegistry,
    pub workers: WorkerRegistry,
    pub stats: ConversationStats,
}

/// Counters of conversation lifecycles since the broker started, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ConversationStats {
    /// Conversations whose participant started and whose id went to the requester's connection.
    pub opened: AtomicU64,
    /// Conversations that ended with `ConversationClosed`.
    pub closed: AtomicU64,
    /// Conversations that ended with `ConversationFailed`.
    pub failed: AtomicU64,
    /// Participant crashes, including those the `restart` policy recovered from.
    pub participant_crashes: AtomicU64,
}

impl Routing {
    /// Picks who serves a new participant for `subject`, or `None` when no
    /// one does and unknown subjects are rejected.
    pub fn select(&self, subject: &str) -> Option<Route> {
        let local = || self.responders.get(subject).map(Route::InProcess);
        let remote = || self.workers.pick(subject).map(Route::Remote);
        let chosen = match self.config.prefer {
            ResponderPreference::InProcess => local().or_else(remote),
            ResponderPreference::Remote => remote().or_else(local),
        };
        chosen.or_else(|| match self.config.unknown_subject {
            UnknownSubjectPolicy::Echo => Some(Route::InProcess(Arc::new(|_: &_| EchoResponder))),
            UnknownSubjectPolicy::Reject => None,
        })
    }
}
