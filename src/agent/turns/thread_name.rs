//! How a turn's thread is named: the one place that decides it, for every protocol.
//!
//! A call names its conversation by a session id (DashScope's `session_id`, OpenAI's
//! `thread_id`) and, on DashScope, by the app it is addressed to. From those ids and
//! `--memory-scope` comes the thread ([`ThreadChoice`]: a remembered thread, or a new one) and
//! the device the turn comes from ([`device_of`]). The handlers check that ids are well formed
//! for their protocol; which thread they name is decided only here.
//!
//! Invariant: a thread named from parts (an app and a device, [`ThreadChoice::for_app`]) is
//! named so that different parts never share a thread.

use super::thread_policy::MemoryScope;
use crate::agent::profile::Profile;

/// Which thread a turn belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadChoice {
    /// A thread the server remembers: its memory is the history.
    Remember(String),
    /// A new thread, started from the messages the client carried (a stateless call).
    Start,
    /// A stateless call that resent the dialogue of this earlier stateless conversation: its
    /// turn is logged there (only the new messages), but the history the model sees is the
    /// client's dialogue, as on [`ThreadChoice::Start`], never memory read back from the log.
    /// Chosen by [`TurnRunner::continue_stateless`](super::TurnRunner::continue_stateless).
    Continue(String),
}

/// Separates the app from the device in an app-scoped thread name. App ids may not contain
/// it, so a name splits back into its parts at its first separator.
pub const APP_DEVICE_SEPARATOR: char = '/';

/// Why parts cannot name a thread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThreadNameError {
    #[error("app id is empty")]
    EmptyAppId,
    #[error(
        "app id {0:?} contains {APP_DEVICE_SEPARATOR:?}, which separates the app from the device in a thread name"
    )]
    SeparatorInAppId(String),
}

impl ThreadChoice {
    /// The thread's id: the remembered thread's name, or a fresh one for a new thread.
    pub fn id(&self) -> String {
        match self {
            ThreadChoice::Remember(id) | ThreadChoice::Continue(id) => id.clone(),
            ThreadChoice::Start => uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The call named no session or thread: the client carries the dialogue itself.
    pub fn is_stateless(&self) -> bool {
        !matches!(self, ThreadChoice::Remember(_))
    }

    /// The thread an app's turns share whatever session they come in on (`--memory-scope app`):
    /// the app id alone without a device (the name such threads always had), and
    /// `{app_id}/{device}` with one. Since app ids never hold the separator, the name tells its
    /// parts apart again: two different (app, device) pairs never share a thread.
    pub fn for_app(app_id: &str, device: Option<&str>) -> Result<ThreadChoice, ThreadNameError> {
        if app_id.is_empty() {
            return Err(ThreadNameError::EmptyAppId);
        }
        if app_id.contains(APP_DEVICE_SEPARATOR) {
            return Err(ThreadNameError::SeparatorInAppId(app_id.to_string()));
        }
        Ok(ThreadChoice::Remember(match device {
            Some(device) => format!("{app_id}{APP_DEVICE_SEPARATOR}{device}"),
            None => app_id.to_string(),
        }))
    }
}

/// The ids a call names its conversation by, whichever protocol carried them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallIds<'a> {
    /// The client's session id (DashScope's `session_id`, OpenAI's `thread_id`); none starts a
    /// new thread.
    pub session: Option<&'a str>,
    /// The app the call is addressed to (DashScope's `app_id`): under [`MemoryScope::App`] the
    /// app, not the session, names the thread.
    pub app: Option<&'a str>,
}

/// Where a turn goes: its thread, the device it comes from, and the session it came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnPlace {
    pub thread: ThreadChoice,
    pub device_id: Option<String>,
    /// The caller's session: several sessions may share a thread (an app's devices under
    /// [`MemoryScope::App`]), and a barge-in interrupts only a turn of its own session.
    pub session: Option<String>,
}

impl CallIds<'_> {
    /// The thread and device of a call under `scope`: no session starts a new thread; a
    /// session is remembered by its own id, or, under [`MemoryScope::App`] on a call addressed
    /// to an app, by the app and the session's device, so that memory survives reconnects.
    pub fn place(self, scope: MemoryScope) -> Result<TurnPlace, ThreadNameError> {
        let device = self.session.and_then(device_of);
        let thread = match (self.session, self.app, scope) {
            (None, _, _) => ThreadChoice::Start,
            (Some(_), Some(app), MemoryScope::App) => ThreadChoice::for_app(app, device)?,
            (Some(session), _, _) => ThreadChoice::Remember(session.to_string()),
        };
        Ok(TurnPlace {
            thread,
            device_id: device.map(str::to_string),
            session: self.session.map(str::to_string),
        })
    }
}

impl CallIds<'_> {
    /// [`CallIds::place`] for a call `profile` answers: its remembered threads are the
    /// profile's own ([`Profile::thread_name`]), never another profile's.
    pub fn place_for(
        self,
        scope: MemoryScope,
        profile: &Profile,
    ) -> Result<TurnPlace, ThreadNameError> {
        let mut place = self.place(scope)?;
        if let ThreadChoice::Remember(name) = &place.thread {
            place.thread = ThreadChoice::Remember(profile.thread_name(name));
        }
        Ok(place)
    }
}

/// The device a session id names: `<conversation>_<device>` (Xiaozhi's convention).
pub fn device_of(session_id: &str) -> Option<&str> {
    let (conversation, device) = session_id.rsplit_once('_')?;
    (!conversation.is_empty() && !device.is_empty()).then_some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(app: &str, device: Option<&str>) -> String {
        match ThreadChoice::for_app(app, device).unwrap() {
            ThreadChoice::Remember(name) => name,
            other => unreachable!("an app always names a thread, not {other:?}"),
        }
    }

    #[test]
    fn an_app_without_a_device_keeps_its_old_thread_name() {
        assert_eq!(name("kitchen", None), "kitchen");
    }

    #[test]
    fn an_app_and_its_device_never_collide_with_another_app() {
        // The collision the old `{app}_{device}` naming had.
        assert_ne!(
            name("kitchen", Some("speaker")),
            name("kitchen_speaker", None)
        );
        assert_eq!(name("kitchen", Some("speaker")), "kitchen/speaker");
    }

    #[test]
    fn different_parts_always_name_different_threads() {
        let apps = ["a", "a_b", "a_b_c", "b", "b_c", "a-", "_", "a__b"];
        let devices = [
            None,
            Some(""),
            Some("b"),
            Some("c"),
            Some("b_c"),
            Some("b/c"),
            Some("/"),
            Some("c/"),
        ];
        let mut seen = std::collections::HashMap::new();
        for app in apps {
            for device in devices {
                let thread = name(app, device);
                if let Some(earlier) = seen.insert(thread.clone(), (app, device)) {
                    panic!("{earlier:?} and {:?} both name {thread:?}", (app, device));
                }
                // The name splits back into exactly its parts.
                let parts = match thread.split_once(APP_DEVICE_SEPARATOR) {
                    Some((a, d)) => (a, Some(d)),
                    None => (thread.as_str(), None),
                };
                assert_eq!(parts, (app, device));
            }
        }
    }

    #[test]
    fn app_ids_that_could_be_misread_are_refused() {
        assert_eq!(
            ThreadChoice::for_app("kitchen/speaker", None),
            Err(ThreadNameError::SeparatorInAppId("kitchen/speaker".into()))
        );
        assert_eq!(
            ThreadChoice::for_app("", Some("speaker")),
            Err(ThreadNameError::EmptyAppId)
        );
    }
    fn place(session: Option<&str>, app: Option<&str>, scope: MemoryScope) -> TurnPlace {
        CallIds { session, app }.place(scope).unwrap()
    }

    fn remember(name: &str) -> ThreadChoice {
        ThreadChoice::Remember(name.into())
    }

    #[test]
    fn a_call_without_a_session_starts_a_new_thread() {
        for scope in [MemoryScope::Session, MemoryScope::App] {
            let new = place(None, Some("kitchen"), scope);
            assert_eq!((new.thread, new.device_id), (ThreadChoice::Start, None));
            assert_eq!(place(None, None, scope).thread, ThreadChoice::Start);
        }
    }

    #[test]
    fn a_session_names_its_thread_and_its_device() {
        let by_session = place(Some("conv_speaker"), Some("kitchen"), MemoryScope::Session);
        assert_eq!(by_session.thread, remember("conv_speaker"));
        assert_eq!(by_session.device_id.as_deref(), Some("speaker"));
        // OpenAI names no app: its thread id is the thread under either scope.
        let openai = place(Some("t1"), None, MemoryScope::App);
        assert_eq!((openai.thread, openai.device_id), (remember("t1"), None));
    }

    #[test]
    fn under_app_scope_the_app_and_device_name_the_thread() {
        let with_device = place(Some("conv_speaker"), Some("kitchen"), MemoryScope::App);
        assert_eq!(with_device.thread, remember("kitchen/speaker"));
        // The session is kept apart: it is what a barge-in may interrupt on the shared thread.
        assert_eq!(with_device.session.as_deref(), Some("conv_speaker"));
        assert_eq!(with_device.device_id.as_deref(), Some("speaker"));
        assert_eq!(
            place(Some("3f2b-uuid"), Some("kitchen"), MemoryScope::App).thread,
            remember("kitchen")
        );
        assert_eq!(
            CallIds {
                session: Some("conv_speaker"),
                app: Some("kit/chen"),
            }
            .place(MemoryScope::App),
            Err(ThreadNameError::SeparatorInAppId("kit/chen".into()))
        );
    }

    #[test]
    fn session_ids_name_devices_after_the_last_underscore() {
        assert_eq!(device_of("conv_aa:bb:cc"), Some("aa:bb:cc"));
        assert_eq!(device_of("my_conv_dev1"), Some("dev1"));
        assert_eq!(device_of("3f2b-uuid"), None);
        assert_eq!(device_of("_dev"), None);
        assert_eq!(device_of("conv_"), None);
    }
}
