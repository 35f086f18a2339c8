//! CORE. The authentication hook: password checks, MQTT 5 enhanced authentication (the AUTH
//! exchange), and per-topic authorization. The broker owns one [`Authenticator`]; operators
//! plug in their own by implementing the trait.

use bytes::Bytes;

use super::config::User;
use crate::mqtt::reason;

/// What a client asked to authenticate with in CONNECT.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// Client identifier (possibly assigned by the broker).
    pub client_id: &'a str,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Password, if any.
    pub password: Option<&'a [u8]>,
}

/// One step of an enhanced authentication exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Send AUTH 0x18 with this data and wait for the client's next AUTH.
    Continue(Bytes),
    /// Authentication succeeded; the optional data goes into CONNACK (or AUTH 0x00).
    Success(Option<Bytes>),
    /// Authentication failed with this reason code (e.g. 0x87 Not authorized).
    Fail(u8),
}

/// A running enhanced authentication exchange for one connection.
pub trait AuthExchange: Send {
    /// Consumes the client's authentication data (from CONNECT or AUTH) and decides.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// What a client wants to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// PUBLISH to a topic name.
    Publish,
    /// SUBSCRIBE to a topic filter.
    Subscribe,
}

/// The pluggable authentication and authorization hook.
pub trait Authenticator: Send {
    /// Plain CONNECT authentication. `Ok(())` lets the client in; `Err(code)` refuses it with
    /// a v5 reason code (mapped to a 3.x return code for older clients).
    fn authenticate(&mut self, creds: &Credentials<'_>) -> Result<(), u8>;

    /// Starts an enhanced authentication exchange for `method` (MQTT 5 section 4.12), or
    /// returns `None` when the method is not supported (CONNACK 0x8C).
    fn start_exchange(&mut self, _method: &str, _creds: &Credentials<'_>) -> Option<Box<dyn AuthExchange>> {
        None
    }

    /// May this client perform `action` on `topic`? Defaults to yes.
    fn authorize(
        &mut self,
        _client_id: &str,
        _username: Option<&str>,
        _action: Action,
        _topic: &str,
    ) -> bool {
        true
    }
}

/// The built-in authenticator: optional anonymous access plus a static user list from the
/// configuration. Clients may not publish to `$SYS/`.
#[derive(Debug, Clone)]
pub struct StaticUsers {
    allow_anonymous: bool,
    users: Vec<User>,
}

impl StaticUsers {
    /// Builds the authenticator from config.
    pub fn new(allow_anonymous: bool, users: Vec<User>) -> Self {
        Self { allow_anonymous, users }
    }
}

/// Compares two byte strings in time independent of where they first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for StaticUsers {
    fn authenticate(&mut self, creds: &Credentials<'_>) -> Result<(), u8> {
        let Some(name) = creds.username else {
            return if self.allow_anonymous { Ok(()) } else { Err(reason::NOT_AUTHORIZED) };
        };
        let Some(user) = self.users.iter().find(|u| u.username == name) else {
            return if self.allow_anonymous && creds.password.is_none() {
                Ok(())
            } else {
                Err(reason::BAD_USERNAME_OR_PASSWORD)
            };
        };
        match creds.password {
            Some(p) if constant_time_eq(p, user.password.as_bytes()) => Ok(()),
            _ => Err(reason::BAD_USERNAME_OR_PASSWORD),
        }
    }

    fn authorize(&mut self, _client_id: &str, _username: Option<&str>, action: Action, topic: &str) -> bool {
        !(action == Action::Publish && topic.starts_with("$SYS"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds<'a>(u: Option<&'a str>, p: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials { client_id: "c", username: u, password: p }
    }

    #[test]
    fn static_users_check_passwords() {
        let mut a = StaticUsers::new(false, vec![User { username: "u".into(), password: "pw".into() }]);
        assert_eq!(a.authenticate(&creds(Some("u"), Some(b"pw"))), Ok(()));
        assert_eq!(a.authenticate(&creds(Some("u"), Some(b"px"))), Err(reason::BAD_USERNAME_OR_PASSWORD));
        assert_eq!(a.authenticate(&creds(None, None)), Err(reason::NOT_AUTHORIZED));
        assert_eq!(a.authenticate(&creds(Some("v"), Some(b"pw"))), Err(reason::BAD_USERNAME_OR_PASSWORD));
    }
}
